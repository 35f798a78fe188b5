"""uvicorn's HTTP protocol with a deadline for each request's head (its request line and headers).

uvicorn closes a keep-alive connection that stays idle after a response, but nothing else: a
connection that sends nothing, or the first bytes of a request and then nothing more (slowloris),
stays open for as long as its client likes, holding a file descriptor and the worker's memory. A
few thousand of them and the worker cannot accept another connection, its probes' included.

So a connection must send a whole request head within ``head_seconds`` (``KHOA_BODY_TIMEOUT_SECONDS``,
the bound its body then has too) of opening, and of the first byte of each later request; trickling
a byte at a time does not move the deadline. Past it, a connection that has started a request is
answered ``408`` and closed; one that has sent nothing is closed. As for bodies
(:class:`khoa.server.asgi.BodyDeadlines`), there is no timer per request: each connection notes
when its head began (one attribute), and one sweep a second per worker closes those past their
deadline.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# How often a worker looks for heads past their deadline (a deadline is kept to within this).
SWEEP_SECONDS = 1.0
_TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"


class HeadDeadlineProtocol(HttpToolsProtocol):
    """One connection (uvicorn makes one per connection); ``head_seconds`` is given with
    ``functools.partial`` (``khoa server`` does), so the class itself holds no setting."""

    def __init__(self, *args: Any, head_seconds: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_seconds = head_seconds
        # When the head being waited for began (loop time), None once it is complete; whether any of
        # it has arrived.
        self.head_since: float | None = None
        self.head_started = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.head_since = self.loop.time()
        _Sweeper.watch(self)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.head_since = self.loop.time()
        self.head_started = True

    def on_headers_complete(self) -> None:
        self.head_since = None
        self.head_started = False
        super().on_headers_complete()

    def head_overdue(self, now: float) -> bool:
        return self.head_since is not None and now - self.head_since > self.head_seconds

    def close_overdue(self) -> None:
        """Close a connection whose head did not arrive in time (408 if it had begun)."""
        self.head_since = None
        if self.transport.is_closing():
            return
        if self.head_started:
            self.transport.write(_TIMED_OUT)
        self.transport.close()


class _Sweeper:
    """The per-worker sweep over the open connections (uvicorn's set of them, shared by every
    connection of the server): runs while there are connections, and starts again with the next."""

    def __init__(self, loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
        self.loop = loop
        self.connections = connections
        self.handle: asyncio.TimerHandle | None = None

    @classmethod
    def watch(cls, protocol: HeadDeadlineProtocol) -> None:
        state = protocol.server_state
        sweeper = getattr(state, "khoa_head_sweeper", None)
        if sweeper is None:
            sweeper = cls(protocol.loop, state.connections)
            state.khoa_head_sweeper = sweeper  # type: ignore[attr-defined]  # one per server
        if sweeper.handle is None:
            sweeper.handle = sweeper.loop.call_later(SWEEP_SECONDS, sweeper.sweep)

    def sweep(self) -> None:
        self.handle = None
        now = self.loop.time()
        for connection in list(self.connections):
            if isinstance(connection, HeadDeadlineProtocol) and connection.head_overdue(now):
                connection.close_overdue()
        if self.connections:
            self.handle = self.loop.call_later(SWEEP_SECONDS, self.sweep)
