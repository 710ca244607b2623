"""mux_ndjson_tcp: newline-delimited JSON over TCP, resumed with a {"resume_after": id} line."""

import attrs
import orjson

from mux_core import Disconnected, RawEvent, Register, ServerUnavailable, Session, hookimpl
from mux_core import describe_connection_error as describe


@attrs.frozen(kw_only=True)
class NdjsonTcpOptions:
    #: The server's host name or address.
    host: str = "127.0.0.1"
    #: The server's TCP port.
    port: int
    #: Seconds without a byte from the server before the connection is dropped and retried.
    read_timeout: float = 30.0


@attrs.define
class NdjsonTcpTransport:
    """Lines are JSON objects with an integer ``id``, which a new connection sends back."""

    Options = NdjsonTcpOptions
    options: NdjsonTcpOptions

    async def run_session(self, session: Session) -> None:
        import trio

        hello = orjson.dumps({"resume_after": (last := session.resume.last_id) and int(last)})
        try:
            async with await trio.open_tcp_stream(self.options.host, self.options.port) as stream:
                await stream.send_all(hello + b"\n")
                await session.connected()
                pending = b""
                while True:
                    with trio.fail_after(self.options.read_timeout):
                        data = await stream.receive_some(65536)
                    if not data:  # a half line left in `pending` comes again after the resume
                        raise Disconnected("the server closed the connection")
                    *lines, pending = (pending + data).split(b"\n")
                    items: list[RawEvent] = []
                    for line in lines:
                        try:
                            items.append(("message", str(orjson.loads(line)["id"]), line))
                        except (orjson.JSONDecodeError, TypeError, KeyError):
                            await session.notice(f"skipped a malformed line: {line[:40]!r}")
                    await session.emit(items)
        except OSError as exc:  # before connected(): refused, reset, no route, DNS
            raise ServerUnavailable(describe(exc) or "cannot connect") from exc
        except trio.BrokenResourceError as exc:
            raise Disconnected(describe(exc) or "connection lost") from exc
        except trio.TooSlowError:
            raise Disconnected(f"no data for {self.options.read_timeout:g} s") from None


@hookimpl
def mux_register_transports(register: Register) -> None:
    register("ndjson-tcp", NdjsonTcpTransport)
