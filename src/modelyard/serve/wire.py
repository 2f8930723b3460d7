"""The HTTP/1.1 connection under uvicorn: one socket write per response.

uvicorn's httptools protocol writes a response in two ``transport.write`` calls, the status line and headers
on ``http.response.start`` and the body on ``http.response.body``; on uvloop each one is a ``send`` system
call and, with ``TCP_NODELAY``, a TCP segment of its own. For a one-row prediction (about 300 bytes in all)
those two writes were ~18% of a worker's CPU under load (py-spy, one worker at c=32). `OneWriteHttp` is the
same protocol over a transport that holds a write back until the next one and sends both at once, so a whole
response leaves in one write. Nothing waits on it: what is held goes out at the latest when the event loop
turns (``call_soon``), before the transport closes, and before anything else touches the connection, so a
streamed response's chunks still leave as they are sent, at most one loop turn later.

``modelyard serve`` runs uvicorn with ``http=OneWriteHttp`` (``HTTP_PROTOCOL``, an import path, because the
workers import it in their own process).
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HTTP_PROTOCOL = "modelyard.serve.wire:OneWriteHttp"

# Above this many bytes in all, the held write and the next one go out as one ``writelines`` (one gathered
# write, no copy); below it, joining the two bytes objects costs less than the gather.
_JOIN_BELOW = 16 * 1024


class OneWriteTransport:
    """A stream transport that holds each write back until the next write or the end of the loop's turn.

    It stands in for uvicorn's transport: every method of `asyncio.Transport` is passed on, and anything
    that could let the held bytes be overtaken (closing, EOF, a new protocol, the buffer's size) sends them
    first.
    """

    __slots__ = ("_held", "_inner", "_loop")

    def __init__(self, inner: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._inner = inner
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is None:
            if not data:
                return
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
            return
        self._held = None
        if len(held) + len(data) < _JOIN_BELOW:
            self._inner.write(held + data)
        else:
            self._inner.writelines((held, data))

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def flush(self) -> None:
        """Send what is held, if anything; drop it if the peer has gone meanwhile (uvloop raises on a write
        to a closed transport, and there is no one left to read it)."""
        held = self._held
        if held is not None:
            self._held = None
            if not self._inner.is_closing():
                self._inner.write(held)

    def close(self) -> None:
        self.flush()
        self._inner.close()

    def abort(self) -> None:
        self._held = None
        self._inner.abort()

    def write_eof(self) -> None:
        self.flush()
        self._inner.write_eof()

    def can_write_eof(self) -> bool:
        return self._inner.can_write_eof()

    def is_closing(self) -> bool:
        return self._inner.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._inner.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.flush()
        self._inner.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._inner.get_protocol()

    def pause_reading(self) -> None:
        self._inner.pause_reading()

    def resume_reading(self) -> None:
        self._inner.resume_reading()

    def is_reading(self) -> bool:
        return self._inner.is_reading()

    def get_write_buffer_size(self) -> int:
        return self._inner.get_write_buffer_size() + len(self._held or b"")

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._inner.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._inner.set_write_buffer_limits(high, low)


class OneWriteHttp(HttpToolsProtocol):
    """uvicorn's httptools HTTP/1.1 protocol, writing each response in one write (`OneWriteTransport`)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        inner = cast(asyncio.Transport, transport)
        super().connection_made(cast(asyncio.Transport, OneWriteTransport(inner, self.loop)))
