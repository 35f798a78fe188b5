"""ASGI plumbing: the message types, reading a request body safely, and building responses."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from khoa.protocol.errors import AWSError

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

JSON = b"application/json"


class Response:
    """One HTTP answer; ``outcome`` is the metrics label (``ok`` or the error code)."""

    __slots__ = ("body", "content_type", "headers", "outcome", "status")

    def __init__(
        self,
        status: int,
        body: bytes,
        content_type: bytes = JSON,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers or []
        self.outcome = "ok"


def json_response(status: int, payload: dict[str, Any]) -> Response:
    return Response(status, json.dumps(payload).encode())


async def send_response(send: Send, response: Response) -> None:
    headers = [
        (b"content-type", response.content_type),
        (b"content-length", str(len(response.body)).encode()),
        *response.headers,
    ]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})


def header_map(scope: Scope) -> dict[str, list[str]]:
    """The request's headers by lower-case name (a name may repeat)."""
    headers: dict[str, list[str]] = {}
    known = _KNOWN_NAMES.get
    for raw_name, raw_value in scope["headers"]:
        name = known(raw_name) or _header_name(raw_name)
        value = raw_value.decode("latin-1")
        values = headers.get(name)
        if values is None:
            headers[name] = [value]
        else:
            values.append(value)
    return headers


@functools.lru_cache(maxsize=256)
def _header_name(raw: bytes) -> str:
    """A header name as header_map spells it (the same few dozen names arrive on every request;
    bounded, so names a client makes up cannot grow it)."""
    return raw.decode("latin-1").lower()


# The names every SDK request carries, looked up without a call (as uvicorn gives them: lower case).
_KNOWN_NAMES: dict[bytes, str] = {
    name.encode(): name
    for name in (
        "host",
        "content-type",
        "content-length",
        "user-agent",
        "accept-encoding",
        "authorization",
        "x-amz-date",
        "x-amz-target",
        "x-amz-security-token",
        "x-amz-content-sha256",
        "amz-sdk-invocation-id",
        "amz-sdk-request",
        "connection",
        "accept",
    )
}


class ClientGone(Exception):
    """The client disconnected before its request body was complete."""


class BodyRefused(Exception):
    """The request body was not accepted (too large, or not received in time)."""

    def __init__(self, error: AWSError) -> None:
        super().__init__(error.code)
        self.error = error


def request_timeout() -> AWSError:
    """The answer to a request whose body did not arrive in time (S3's wording for the same fault)."""
    return AWSError(
        "RequestTimeout",
        "Your socket connection to the server was not read from or written to within the timeout "
        "period. Idle connections will be closed.",
        408,
    )


class BodyDeadlines:
    """Whole-body deadlines (KHOA_BODY_TIMEOUT_SECONDS) for every request of a process, on one timer.

    A client that announces a body and sends it slowly, or never, must not hold a connection (and the
    worker's memory) open indefinitely: past the deadline the request is answered 408 and the
    connection closed. The deadline covers the whole body, so trickling a byte at a time does not
    reset it. A timer per request (``asyncio.timeout``) cost ~19 µs of every call under uvloop
    (measured), about 3% of a GetSecretValue; here a read costs a dict entry, and one sweep every
    quarter second (only while bodies are being read) cancels the reads past their deadline.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._tick = min(0.25, timeout / 4)
        self._reading: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._sweeping: asyncio.AbstractEventLoop | None = None  # the loop the sweeper runs on

    async def read(self, receive: Receive, limit: int, scope: Scope | None = None) -> bytes:
        """The whole request body; raises BodyRefused (413, 408) or ClientGone. A body the request's
        ``scope`` announces (its Content-Length) larger than ``limit`` and not sent by the deadline is
        answered 413, not 408. It is not refused before it is read: a client still sending its body
        (http.client, the SDKs) would see a broken pipe instead of the answer."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        if task is None:  # ASGI servers run every request in a task; a deadline needs one
            raise RuntimeError("request bodies are read inside a task")
        self._reading[task] = loop.time() + self.timeout
        if self._sweeper is None or self._sweeping is not loop:  # none yet, or on a loop now gone
            self._sweeping = loop
            self._sweeper = loop.call_later(self._tick, self._sweep, loop)
        try:
            # (what _read_all does, without a coroutine of its own: every request comes here)
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            body: bytes = message.get("body", b"")
            if len(body) > limit:
                raise BodyRefused(_too_large())
            if message.get("more_body", False):
                body += await _read_all(receive, limit - len(body))
            return body
        except asyncio.CancelledError:
            if task not in self._expired:
                raise  # cancelled by someone else
            task.uncancel()
            announced = announced_length(scope) if scope is not None else None
            too_large = announced is not None and announced > limit
            raise BodyRefused(_too_large() if too_large else request_timeout()) from None
        finally:
            self._reading.pop(task, None)
            self._expired.discard(task)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for task, deadline in list(self._reading.items()):
            if deadline <= now and task not in self._expired:
                self._expired.add(task)
                task.cancel()
        self._sweeper = loop.call_later(self._tick, self._sweep, loop) if self._reading else None


async def _read_all(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyRefused(_too_large())
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


def _too_large() -> AWSError:
    return AWSError(
        "RequestEntityTooLargeException", "The request body exceeds the maximum allowed size.", 413
    )


def announced_length(scope: Scope) -> int | None:
    """The body size a request's Content-Length announces (None: none, or not a plain number; the
    HTTP server has already refused a malformed one)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None
