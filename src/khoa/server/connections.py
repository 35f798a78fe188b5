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

Sizes are bounded too, however the head arrives (in one read or trickled): a request-target longer
than :data:`MAX_TARGET_BYTES` is answered ``414`` and a head larger than :data:`MAX_HEAD_BYTES`
``431``, and the connection is closed, before uvicorn parses the target or starts the application.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# How often a worker looks for heads past their deadline (a deadline is kept to within this).
SWEEP_SECONDS = 1.0
# A head larger than this is refused (64 KiB, what an Application Load Balancer allows; a SigV4 head,
# session token included, is a few KiB). httptools sets no limit, and gathers a header's value by
# concatenation: a client sending one endless header grew a worker by ~10 MiB a second and slowed its
# loop. A head still incomplete once this much of it has arrived is refused at once; one that arrives
# within a single read is measured by what the parser found in it (target, header names and values).
MAX_HEAD_BYTES = 64 * 1024
# A request-target (path and query) longer than this is refused (16 KiB, an Application Load
# Balancer's bound on the request line; CloudFront allows 8 KiB; a presigned URL with a session token
# is ~4 KiB). httptools.parse_url keeps each part's offset and length in 16 bits: a path or query of
# 64 KiB or more was silently cut, and its query read from inside the path, then routed and signature-
# checked as such (a proxy allowing such URLs and Khoa would have seen different requests).
MAX_TARGET_BYTES = 16 * 1024
_TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
_TOO_LARGE = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
_URI_TOO_LONG = b"HTTP/1.1 414 URI Too Long\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
# What each header adds to a head besides its name and value, at least (": " is optional white space
# but the colon, and the line's CRLF).
_HEADER_LINE_BYTES = 3


class _HeadRefused(Exception):
    """Raised from a parser callback once the head has been answered (414/431): stops httptools at
    once, so nothing further of the head is parsed, nor the application started."""


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
        self.head_bytes = 0  # received while the head was incomplete (an upper bound of its size)
        # the request-target, header names and values the parser has given (a lower bound)
        self.head_parsed = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # Every write of the connection (responses, refusals of heads, uvicorn's own 400) through
        # one _PassWrites, so they leave in the order they were made.
        super().connection_made(cast(asyncio.Transport, _PassWrites(transport, self.loop)))
        self.head_since = self.loop.time()
        _Sweeper.watch(self)

    def data_received(self, data: bytes) -> None:
        if self.head_since is None:
            super().data_received(data)
            return
        self.head_bytes += len(data)
        super().data_received(data)
        if self.head_since is not None and self.head_bytes > MAX_HEAD_BYTES:
            self.refuse_head(_TOO_LARGE)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.head_since = self.loop.time()
        self.head_started = True
        self.head_parsed = 0

    def on_url(self, url: bytes) -> None:
        # Called for each piece of the target as it arrives, before anything parses it.
        super().on_url(url)
        self.head_parsed += len(url)
        if len(self.url) > MAX_TARGET_BYTES:
            self.refuse_head(_URI_TOO_LONG)
            raise _HeadRefused

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.head_started:  # not a chunked body's trailer
            parsed = self.head_parsed + len(name) + len(value) + _HEADER_LINE_BYTES
            self.head_parsed = parsed
            if parsed > MAX_HEAD_BYTES:
                self.refuse_head(_TOO_LARGE)
                raise _HeadRefused
        # What uvicorn's on_header does (uvicorn is pinned; tests/unit/test_connections.py checks
        # both), without a second call: this runs for every header of every request, and calling
        # through cost as much again as the header's own handling.
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.head_since = None
        self.head_started = False
        self.head_bytes = 0
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        # uvicorn's answer when the parser stops on an error (it has logged "Invalid HTTP request
        # received." first): a head refused above (_HeadRefused, which httptools reports as a callback
        # error) has had its answer, and its connection is closing.
        if self.transport.is_closing():
            return
        super().send_400_response(msg)

    def on_response_complete(self) -> None:
        # A head that waited behind this response (a pipelined request: uvicorn reads no more until
        # the request before is answered) has its time from now.
        if self.head_since is not None:
            self.head_since = self.loop.time()
        super().on_response_complete()

    def head_overdue(self, now: float) -> bool:
        if self.head_since is None or now - self.head_since <= self.head_seconds:
            return False
        serving = self.cycle is not None and not self.cycle.response_complete
        return not serving  # the client is not the one keeping the head waiting

    def close_overdue(self) -> None:
        """Close a connection whose head did not arrive in time (408 if it had begun)."""
        self.refuse_head(_TIMED_OUT if self.head_started else b"")

    def refuse_head(self, answer: bytes) -> None:
        """Answer a head that will not be read (or not at all) and close the connection."""
        self.head_since = None
        if self.transport.is_closing():
            return
        if answer:
            self.transport.write(answer)
        self.transport.close()


class _PassWrites:
    """The connection's transport, as uvicorn and this protocol use it: a response head leaves with
    the body written after it, in one write.

    uvicorn writes a response's head on ``http.response.start`` and its body on
    ``http.response.body``, each straight to the socket: two system calls and two TCP segments per
    answer, and for the client two reads. A head is held until the next write, which sends both at
    once: Khoa sends an answer's two messages one after the other (khoa.server.asgi.send_response),
    so an answer leaves whole, with no delay. A head with no write after it in the same pass of the
    event loop (a streamed body that has nothing yet, a HEAD request) is sent at the end of that pass,
    and a close sends what is held first; anything else is written at once. Everything leaves in the
    order it was written; the rest of the transport is the socket's own."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + data)
        elif data[:9] == b"HTTP/1.1 " and data[-4:] == b"\r\n\r\n":  # a head: its body comes next
            self._held = bytes(data)
            self._loop.call_soon(self._send)
        else:
            self._transport.write(data)

    def _send(self) -> None:
        held, self._held = self._held, None
        if held and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self._send()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def __getattr__(self, name: str) -> Any:  # anything else (abort, set_protocol): the socket's
        return getattr(self._transport, name)


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
