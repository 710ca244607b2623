"""The file sink's ``compression = "zstd"``: frames that survive a crash.

A ``.jsonl.zst`` recording is a sequence of zstd frames, read back as one
stream (``zstd -d``, :func:`mux_core.records.open_recording`). The writer
keeps one frame open across writes and ends a *block* at every write to
the OS (``ZSTD_e_flush``): everything handed to the OS so far decodes, while
later lines still reference earlier ones (the ratio of one long stream, ~8x
on training metrics, not the ~3x of a frame per second). A frame is closed
after :data:`FRAME_INPUT` bytes of lines, at rotation and at close, so a
frame -- the unit the crash-resume skip decompresses -- stays small.

Frames carry no content checksum and no content size: a frame cut short by
a crash can then be finished by appending an empty last block.

After a crash (``kill -9`` of mux, a power cut after an fsync) the file
ends in an unfinished frame, maybe with half a block or half a line in it.
:func:`repair` finds it by walking the frame and block headers from the
start (3 bytes a block, read with ``pread``; the payloads are never read),
decompresses the unfinished frame's whole blocks, and writes that frame
again as a complete one holding its whole lines only. What was cut off was
never synced, so a resumed source sends it again (or, without ids, it is
lost, as with an uncompressed file). Every frame then starts at a line:
:func:`frames` gives the frames' offsets, newest last, for reading lines
backwards one frame at a time.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import attrs

__all__ = ["FRAME_INPUT", "MAGIC", "Frames", "ZstdWriter", "frames", "repair"]

_log = logging.getLogger("mux.sink.file")

#: The zstd frame magic number, as it is in a file.
MAGIC = b"\x28\xb5\x2f\xfd"
#: Bytes of lines after which the open frame is closed and a new one begun.
FRAME_INPUT = 8 * 1024 * 1024
#: Compression level: zstd's default, ~300 MB/s of lines on one core here.
LEVEL = 3
#: A raw block of size 0 with its Last_Block bit: ends an unfinished frame.
END_FRAME = b"\x01\x00\x00"
_BLOCK_MAX = 128 * 1024
_DAMAGED = "it is damaged (move it away and mux starts a new file)"


@attrs.frozen
class Frames:
    """Where a ``.zst`` file's frames are, from its headers."""

    #: Start offset of each frame, in order (a frame runs to the next one's start).
    starts: tuple[int, ...]
    #: Offset where the readable part ends: after the last whole frame, or
    #: after the last whole block of an unfinished last frame.
    end: int
    #: Whether the last frame is unfinished (no last block yet: a crash, or a
    #: writer still running).
    open: bool


class NotZstd(ValueError):
    """The file does not hold zstd frames where one should start."""


def frames(fd: int, size: int) -> Frames:
    """Walk the frame and block headers of the file ``fd`` (``size`` bytes).

    A torn tail (half a header, half a block) ends the walk: :attr:`Frames.end`
    is where the whole part ends. Raises :class:`NotZstd` when the file does
    not start with a zstd frame, or holds what no zstd writer writes (damage:
    better stop than cut the file there).
    """
    starts: list[int] = []
    pos = 0
    while pos < size:
        head = os.pread(fd, 4, pos)
        if head != MAGIC:
            if len(head) < 4 and MAGIC.startswith(head):
                break  # half a magic number: a frame's torn start
            if not starts:
                raise NotZstd(
                    'it is not a zstd file (plain JSON Lines? set compression = "none" for it)'
                )
            raise NotZstd(f"{_DAMAGED}: no zstd frame starts at byte {pos}")
        blocks = _frame_blocks(fd, pos, size)
        starts.append(pos)
        if blocks is None:  # a torn frame header: the frame holds nothing yet
            return Frames(tuple(starts), pos, True)
        end, finished = blocks
        if not finished:
            return Frames(tuple(starts), end, True)
        pos = end
    return Frames(tuple(starts), pos, False)


def _frame_blocks(fd: int, start: int, size: int) -> tuple[int, bool] | None:
    """(where the frame's whole blocks end, whether its last block came), or
    None when its header is cut short. Raises :class:`NotZstd` for a header or
    block no zstd writer makes."""
    head = os.pread(fd, 14, start + 4)
    if not head:
        return None
    descriptor = head[0]
    if descriptor & 0x08:  # the reserved bit
        raise NotZstd(f"{_DAMAGED}: a bad zstd frame header at byte {start}")
    single = bool(descriptor & 0x20)
    checksum = bool(descriptor & 0x04)
    dictionary = (0, 1, 2, 4)[descriptor & 0x03]
    content = (0 if not single else 1, 2, 4, 8)[descriptor >> 6]
    header = 1 + (0 if single else 1) + dictionary + content
    if len(head) < header:
        return None
    pos = start + 4 + header
    while True:
        raw = os.pread(fd, 3, pos)
        if len(raw) < 3:
            return pos, False
        value = int.from_bytes(raw, "little")
        last, kind, length = value & 1, (value >> 1) & 3, value >> 3
        if kind == 3 or length > _BLOCK_MAX:
            raise NotZstd(f"{_DAMAGED}: a bad zstd block header at byte {pos}")
        payload = 1 if kind == 1 else length
        end = pos + 3 + payload
        if end > size:
            return pos, False  # a torn block
        pos = end
        if last:
            if checksum:
                if pos + 4 > size:
                    return pos - 3 - payload, False
                pos += 4
            return pos, True


def repair(fd: int, path: str) -> Frames:
    """Make the file ``fd`` end in whole frames of whole lines, ready to append to.

    An unfinished last frame (a crash) is written again, complete, with the
    whole lines its whole blocks hold; bytes after the readable part are cut
    off. Returns the frames as they are afterwards. Raises :class:`NotZstd`.
    """
    import zstandard

    size = os.fstat(fd).st_size
    if size == 0:
        return Frames((), 0, False)
    found = frames(fd, size)
    if not found.open:
        if found.end < size:
            _log.info("%s: a frame's torn start (%d bytes) cut off", path, size - found.end)
            os.ftruncate(fd, found.end)
        return found
    start = found.starts[-1]
    data = os.pread(fd, found.end - start, start) if found.end > start else b""
    try:
        content = zstandard.ZstdDecompressor().decompressobj().decompress(data) if data else b""
    except zstandard.ZstdError as exc:
        content = b""
        _log.warning("%s: its last frame does not decode (%s); its lines are left out", path, exc)
    whole = content[: content.rfind(b"\n") + 1]
    torn = size - start
    os.ftruncate(fd, start)
    starts = found.starts[:-1]
    if whole:
        _write_all(fd, zstandard.ZstdCompressor(level=LEVEL).compress(whole), start)
        starts = found.starts
    _log.info(
        "%s: continued after a crash: its last frame (%d bytes) written again with %d whole "
        "lines (%d bytes of a cut line left out)",
        path,
        torn,
        whole.count(b"\n"),
        len(content) - len(whole),
    )
    return Frames(starts, os.fstat(fd).st_size, False)


def _write_all(fd: int, data: bytes, at: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, at)
        view = view[written:]
        at += written


class ZstdWriter:
    """The compressor side: lines in, bytes to append out, one frame at a time.

    The caller appends what :meth:`encode` returns, or -- when that append
    fails and the file is cut back to before it -- calls :meth:`failed`: the
    frame left unfinished on disk is then ended first by the next append.
    """

    def __init__(self) -> None:
        import zstandard

        self._compressor = zstandard.ZstdCompressor(
            level=LEVEL, write_checksum=False, write_content_size=False
        )
        self._flush_block = zstandard.COMPRESSOBJ_FLUSH_BLOCK
        self._frame: Any = None
        self._frame_input = 0
        #: An unfinished frame is on disk with no compressor behind it.
        self._needs_end = False
        self._unfinished_before = False

    def encode(self, lines: bytes) -> bytes:
        """The bytes that make ``lines`` decodable once appended (a frame's
        next blocks; the frame is closed after :data:`FRAME_INPUT` bytes)."""
        out = bytearray()
        self._unfinished_before = self._frame is not None or self._needs_end
        if self._needs_end:
            out += END_FRAME
            self._needs_end = False
        frame = self._frame
        if frame is None:
            frame = self._frame = self._compressor.compressobj()
            self._frame_input = 0
        out += frame.compress(lines)
        self._frame_input += len(lines)
        if self._frame_input >= FRAME_INPUT:
            out += frame.flush()
            self._frame = None
        else:
            out += frame.flush(self._flush_block)
        return bytes(out)

    def failed(self) -> None:
        """The bytes of the last :meth:`encode` did not reach the file."""
        self._frame = None
        self._needs_end = self._unfinished_before

    def finish(self) -> bytes:
        """The bytes that close the open frame (empty when none is open)."""
        frame, self._frame = self._frame, None
        if frame is not None:
            return bytes(frame.flush())
        needs_end, self._needs_end = self._needs_end, False
        return END_FRAME if needs_end else b""
