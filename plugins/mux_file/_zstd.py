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
cuts off the torn block (never synced: a resumed source sends its lines
again, or, without ids, they are lost, as with an uncompressed file) and
ends the frame with an empty last block. The repair only cuts bytes that
were never whole and then appends, so a crash in the middle of it leaves a
file the next repair handles the same way. Whole blocks may end inside a
line (zstd cuts a long write into 128 KiB blocks): the next lines then
start on a fresh line, and the cut one reads as one bad line -- as a plain
file's torn last line does. Every frame starts at a line;
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
    #: Of an unfinished last frame: where its header ends and each whole block
    #: ends (empty when its header is cut short).
    blocks: tuple[int, ...] = ()


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
        bounds: list[int] = []
        walked = _frame_blocks(fd, pos, size, bounds)
        starts.append(pos)
        if walked is None:  # a torn frame header: the frame holds nothing yet
            return Frames(tuple(starts), pos, True)
        end, finished = walked
        if not finished:
            return Frames(tuple(starts), end, True, tuple(bounds))
        pos = end
    return Frames(tuple(starts), pos, False)


def _frame_blocks(fd: int, start: int, size: int, bounds: list[int]) -> tuple[int, bool] | None:
    """(where the frame's whole blocks end, whether its last block came), or
    None when its header is cut short; ``bounds`` gets where the header and
    each whole block end. Raises :class:`NotZstd` for a header or block no
    zstd writer makes."""
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
    bounds.append(pos)
    opened_with_checksum = checksum
    while True:
        raw = os.pread(fd, 3, pos)
        if len(raw) < 3:
            return _unfinished(pos, opened_with_checksum, start)
        value = int.from_bytes(raw, "little")
        last, kind, length = value & 1, (value >> 1) & 3, value >> 3
        if kind == 3 or length > _BLOCK_MAX:
            raise NotZstd(f"{_DAMAGED}: a bad zstd block header at byte {pos}")
        payload = 1 if kind == 1 else length
        end = pos + 3 + payload
        if end > size:
            return _unfinished(pos, opened_with_checksum, start)  # a torn block
        pos = end
        bounds.append(pos)
        if last:
            if checksum:
                if pos + 4 > size:
                    return pos - 3 - payload, False
                pos += 4
            return pos, True


def _unfinished(pos: int, checksum: bool, start: int) -> tuple[int, bool]:
    if checksum:  # an empty last block would leave it without its checksum
        raise NotZstd(
            f"its last frame (at byte {start}) is unfinished and carries a checksum: "
            "not written by mux (finish it with zstd, or move it away)"
        )
    return pos, False


def repair(fd: int, path: str) -> bool:
    """Make the file ``fd`` end in whole frames, ready to append to; return
    whether its last line is cut short (the next lines start on a fresh line).

    Bytes after the last whole block are cut off and an unfinished last
    frame is ended with an empty last block -- nothing whole is ever
    rewritten. Raises :class:`NotZstd`.
    """
    size = os.fstat(fd).st_size
    if size == 0:
        return False
    found = frames(fd, size)
    if not found.open:
        if found.end < size:
            _log.info("%s: a frame's torn start (%d bytes) cut off", path, size - found.end)
            os.ftruncate(fd, found.end)
        return _cut_line(fd, found.starts, found.end)
    start = found.starts[-1]
    if not found.blocks:  # its header is cut short: nothing of it was whole
        os.ftruncate(fd, start)
        _log.info("%s: a frame's torn start (%d bytes) cut off", path, size - start)
        return _cut_line(fd, found.starts[:-1], start)
    end, last = _decodable(fd, path, start, found.blocks)
    os.ftruncate(fd, end)
    _write_all(fd, END_FRAME, end)
    _log.info(
        "%s: continued after a crash: %d bytes of a torn block cut off, its frame ended",
        path,
        size - end,
    )
    if last is None:  # the frame holds no line: the one before tells
        return _cut_line(fd, found.starts[:-1], start)
    return last != b"\n"


def _decodable(fd: int, path: str, start: int, bounds: tuple[int, ...]) -> tuple[int, bytes | None]:
    """Where the blocks of the frame at ``start`` that decode end (all of them,
    unless damaged), and the last byte they hold (None: none)."""
    import zstandard

    frame = zstandard.ZstdDecompressor().decompressobj()
    good = bounds[0]
    frame.decompress(os.pread(fd, good - start, start))  # the header
    last: bytes | None = None
    for end in bounds[1:]:
        try:
            out = frame.decompress(os.pread(fd, end - good, good))
        except zstandard.ZstdError as exc:
            _log.warning("%s: a block at byte %d does not decode (%s): cut off", path, good, exc)
            break
        if out:
            last = out[-1:]
        good = end
    return good, last


def _cut_line(fd: int, starts: tuple[int, ...], end: int) -> bool:
    """Whether the whole frames before ``end`` end inside a line (the newest
    frame is decompressed to see its last byte)."""
    if not starts:
        return False
    import zstandard

    start = starts[-1]
    try:
        content = (
            zstandard.ZstdDecompressor()
            .decompressobj()
            .decompress(os.pread(fd, end - start, start))
        )
    except zstandard.ZstdError:
        return True  # start on a fresh line: a spare empty line costs nothing
    return bool(content) and not content.endswith(b"\n")


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
