"""uvicorn's httptools protocol, with each response sent in one socket write.

uvicorn writes the status line and headers when the app sends ``http.response.start``
and the body when it sends ``http.response.body``: two ``send()`` system calls and, on
a loopback or LAN link, two TCP segments for every small JSON reply.  Measured with
bench/server_bench.py, those writes were the largest single cost of a request.

`CoalescingHttpProtocol` hands uvicorn a transport whose writes are collected and sent
together: at the end of the response (uvicorn's ``on_response_complete`` hook), before
a close, or at the latest on the next turn of the event loop (so a ``100 Continue`` or
any other write outside a response is delayed by one loop turn, never held).  Nothing
else changes: same parser, same flow control, same keep-alive and shutdown handling.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["CoalescingHttpProtocol"]


class _CoalescingTransport:
    """A transport proxy whose ``write`` calls go out together on `flush`."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)

    def flush(self) -> None:
        pending = self._pending
        if pending:
            self._pending = []
            if not self._transport.is_closing():
                self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` sending each response with one write (pass as ``http=``)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Wrap the connection's transport before uvicorn sees it."""
        wrapped: Any = _CoalescingTransport(transport, self.loop)
        super().connection_made(wrapped)

    def on_response_complete(self) -> None:
        """Send the whole response now, then let uvicorn carry on (keep-alive...)."""
        transport: Any = self.transport
        transport.flush()
        super().on_response_complete()
