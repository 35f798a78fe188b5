"""Signed outbound HTTP POSTs: the one way Khoa calls out to operator-registered URLs (alert webhooks
and Slack, change-event webhooks, HTTP rotation functions).

A call POSTs one body (``application/json``), optionally signed with
``X-Khoa-Signature: sha256=<hex HMAC-SHA256 of the raw body>`` (the wire format receivers verify, see
docs/rotation.md), and tries up to ``Retry.attempts`` times with exponential backoff. Each attempt has
a hard deadline (``timeout`` seconds from its start, however slowly the receiver trickles bytes), so a
call takes at most :meth:`Retry.worst_case_seconds`. Blocking is intended: callers run in job threads.

What it does not do, on purpose:

- follow redirects: urllib would turn the POST into a body-less GET carrying the signature header to
  wherever the receiver points (and count that GET's 2xx as delivered), so a 3xx is a failed attempt;
- put the URL in logs or results: webhook URLs carry credentials in their path (Slack), query or
  userinfo, so only ``scheme://host[:port]`` (:func:`where`) is ever logged;
- retry a refusal: a 4xx other than 408/429 will not change by asking again.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import hmac
import http.client
import json
import logging
import random
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial

from khoa.blocking import refuse_on_the_loop

log = logging.getLogger("khoa.outbound")

SIGNATURE_HEADER = "X-Khoa-Signature"
"""The header every Khoa sender signs with (alerts, change-event webhooks, HTTP rotation functions)."""

RETRYABLE_CLIENT_ERRORS = frozenset({408, 429})
"""4xx answers that mean "not now" rather than "never"."""


def signature(key: bytes, body: bytes) -> str:
    """The ``X-Khoa-Signature`` value receivers verify over the exact bytes they received."""
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def where(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: all of it that is safe to log (no userinfo, path or query)."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or "?"
        port = parts.port
    except ValueError:
        return "<malformed URL>"
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")


class Outcome(enum.Enum):
    DELIVERED = "delivered"
    """A 2xx answer."""
    REJECTED = "rejected"
    """Refused for good (a 4xx other than 408/429, or a URL that cannot be POSTed to): do not retry."""
    UNDELIVERED = "undelivered"
    """Every attempt failed in a way that may pass (5xx, 3xx, 408/429, timeout, connection failure)."""


@dataclass(frozen=True)
class Result:
    """What became of a POST; nothing in it can carry a secret (no URL, no response body)."""

    outcome: Outcome
    attempts: int
    status: int | None = None
    """The last HTTP status received, if any."""
    error: str | None = None
    """The last transport failure, as an exception type (and OS message), if the last attempt had one."""

    @property
    def delivered(self) -> bool:
        return self.outcome is Outcome.DELIVERED

    def describe(self) -> str:
        """A short reason for logs and error messages: ``HTTP 503`` or ``TimeoutError``."""
        if self.error is not None:
            return self.error
        if self.status is not None:
            return f"HTTP {self.status}"
        return self.outcome.value


@dataclass(frozen=True)
class Retry:
    """How often to try and how long to wait between tries.

    The wait before try ``n`` (n >= 2) is ``min(first_delay * 2**(n-2), max_delay)``, shortened by up to
    ``jitter`` of itself at random (0: the exact schedule; 1: anywhere from zero to the full wait), so
    senders that failed together do not retry together. Jitter only shortens, so the bound holds.
    """

    attempts: int = 1
    first_delay: float = 0.25
    max_delay: float = 2.0
    jitter: float = 0.5

    @property
    def tries(self) -> int:
        """At least one try, whatever was configured."""
        return max(1, self.attempts)

    def delay(self, retry: int, draw: Callable[[], float] = random.random) -> float:
        """The wait before retry number ``retry`` (1 for the second attempt)."""
        base = min(self.first_delay * 2 ** (retry - 1), self.max_delay)
        share = min(max(self.jitter, 0.0), 1.0)
        return base * (1.0 - share * draw()) if share else base

    def worst_case_seconds(self, timeout: float) -> float:
        """The longest a :func:`post` with this policy and per-attempt ``timeout`` can take. Two
        things fall outside it: name resolution (bounded by the resolver's own timeouts) and a host
        name with several addresses, where each address tried gets what is left of the attempt."""
        return self.tries * timeout + sum(self.delay(n, lambda: 0.0) for n in range(1, self.tries))


NO_RETRY = Retry(attempts=1)


def post(
    url: str,
    body: bytes | dict[str, object],
    *,
    timeout: float,
    retry: Retry = NO_RETRY,
    signing_key: bytes | None = None,
    signature_header: str = SIGNATURE_HEADER,
    headers: Mapping[str, str] | None = None,
    user_agent: str | None = None,
    logger: logging.Logger | None = None,
    what: str = "receiver",
    sleep: Callable[[float], None] = time.sleep,
    draw: Callable[[], float] = random.random,
) -> Result:
    """POST ``body`` to ``url`` and say what became of it; never raises for an HTTP or network failure.

    ``body`` is sent as is when bytes, else as ``json.dumps(body)``. With ``signing_key`` the body is
    signed in ``signature_header``. ``timeout`` bounds each attempt from start to the response headers.
    ``user_agent`` None keeps urllib's. Failed attempts are logged (host only) on ``logger`` when
    given, as ``what``: a caller that reports failures itself passes none.
    """
    refuse_on_the_loop("outbound HTTP")
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    sent_headers = {"Content-Type": "application/json", **(headers or {})}
    if user_agent is not None:
        sent_headers["User-Agent"] = user_agent
    if signing_key:
        sent_headers[signature_header] = signature(signing_key, data)
    if not _http_url(url):
        if logger is not None:
            logger.error("%s URL is not http(s); not sent", what)
        return Result(Outcome.REJECTED, 0, error="not an http(s) URL")

    result = Result(Outcome.UNDELIVERED, 0)
    for attempt in range(1, retry.tries + 1):
        if attempt > 1:
            sleep(retry.delay(attempt - 1, draw))
        result = _attempt(url, data, sent_headers, timeout, attempt)
        if result.outcome is not Outcome.UNDELIVERED:
            break
        if logger is not None:
            logger.warning("%s %s %s", what, where(url), _failure(result))
    if result.outcome is Outcome.REJECTED and logger is not None:
        logger.error("%s %s refused it (%s)", what, where(url), result.describe())
    return result


def _http_url(url: str) -> bool:
    try:
        return urllib.parse.urlsplit(url).scheme in ("http", "https")
    except ValueError:
        return False


def _failure(result: Result) -> str:
    if result.status is not None:
        return f"answered HTTP {result.status}"
    return f"unreachable: {result.describe()}"


def _attempt(url: str, data: bytes, headers: Mapping[str, str], timeout: float, attempt: int) -> Result:
    # the scheme is http(s): post() checked it
    request = urllib.request.Request(url, data=data, method="POST", headers=dict(headers))  # noqa: S310
    with _Deadline(timeout) as deadline:
        try:
            with _opener(deadline).open(request, timeout=timeout) as response:
                status = int(response.status)
        except urllib.error.HTTPError as error:
            error.close()
            code = int(error.code)
            permanent = 400 <= code < 500 and code not in RETRYABLE_CLIENT_ERRORS
            return Result(Outcome.REJECTED if permanent else Outcome.UNDELIVERED, attempt, status=code)
        except (http.client.InvalidURL, ValueError) as error:
            if deadline.expired:  # a read on the socket shut down under it
                return Result(Outcome.UNDELIVERED, attempt, error="TimeoutError")
            # a URL urllib cannot use (no host, bad port, control characters): asking again won't help
            return Result(Outcome.REJECTED, attempt, error=type(error).__name__)
        except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
            return Result(
                Outcome.UNDELIVERED, attempt, error="TimeoutError" if deadline.expired else _safe(error)
            )
    if 200 <= status < 300:
        return Result(Outcome.DELIVERED, attempt, status=status)
    return Result(Outcome.UNDELIVERED, attempt, status=status)


def _safe(error: BaseException) -> str:
    """An exception as its type and OS message only: ``str()`` of urllib's errors may quote the URL."""
    if isinstance(error, urllib.error.URLError) and isinstance(error.reason, BaseException):
        error = error.reason
    if isinstance(error, OSError) and error.strerror:
        return f"{type(error).__name__}: {error.strerror}"
    return type(error).__name__


class _Deadline:
    """Ends one attempt when its time is up. Socket timeouts bound each read, not their sum, so a
    receiver trickling a byte at a time could hold a job thread for ever; at the deadline this shuts
    the attempt's socket down, which wakes the blocked read."""

    def __init__(self, seconds: float) -> None:
        self._ends = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._connections: list[http.client.HTTPConnection] = []
        self.expired = False
        self._timer = threading.Timer(max(seconds, 0.0), self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def remaining(self) -> float:
        return max(self._ends - time.monotonic(), 0.001)

    def watch(self, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            self._connections.append(connection)
            if self.expired:
                _shut(connection)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for connection in self._connections:
                _shut(connection)


def _shut(connection: http.client.HTTPConnection) -> None:
    sock = connection.sock
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed: nothing left to wake
            sock.shutdown(socket.SHUT_RDWR)


def _arm(connection: http.client.HTTPConnection, deadline: _Deadline) -> None:
    """Before connecting: connect within what is left of the attempt, and let the deadline shut the
    socket down (mid-TLS-handshake too: the TCP socket is the connection's until it is wrapped)."""
    connection.timeout = min(connection.timeout or deadline.remaining(), deadline.remaining())
    deadline.watch(connection)


def _pin(connection: http.client.HTTPConnection, address: str | None) -> None:
    """Make ``connection`` open its socket to ``address`` (an IP literal) rather than resolve its host
    again; TLS still verifies the certificate for the host name (HTTPSConnection wraps the socket with
    ``server_hostname=self.host``). ``_create_connection`` is http.client's own seam for this."""
    if address is not None:
        connection._create_connection = partial(_connect_to, address)  # type: ignore[attr-defined]


def _connect_to(address: str, where: tuple[str, int], *args: object) -> socket.socket:
    return socket.create_connection((address, where[1]), *args)  # type: ignore[arg-type]


class _WatchedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, *, timeout: float, deadline: _Deadline, address: str | None) -> None:
        super().__init__(host, timeout=timeout)
        self.deadline = deadline
        _pin(self, address)

    def connect(self) -> None:
        _arm(self, self.deadline)
        super().connect()


class _WatchedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, *, timeout: float, deadline: _Deadline, address: str | None) -> None:
        super().__init__(host, timeout=timeout)
        self.deadline = deadline
        _pin(self, address)

    def connect(self) -> None:
        _arm(self, self.deadline)
        super().connect()


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline, address: str | None) -> None:
        super().__init__()
        self.deadline = deadline
        self.address = address

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(
            partial(_WatchedHTTPConnection, deadline=self.deadline, address=self.address), req
        )


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline, address: str | None) -> None:
        super().__init__()
        self.deadline = deadline
        self.address = address

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        # No context: HTTPSConnection builds the default one (certificate and hostname verified).
        return self.do_open(
            partial(_WatchedHTTPSConnection, deadline=self.deadline, address=self.address), req
        )


def _opener(deadline: _Deadline, address: str | None = None) -> urllib.request.OpenerDirector:
    """urllib's default opener (proxies from the environment, errors as HTTPError) without redirects
    or non-HTTP schemes, its connections under ``deadline``; with ``address``, connected to that
    address and never through a proxy (the address is the one that was checked)."""
    opener = urllib.request.OpenerDirector()
    handlers: list[urllib.request.BaseHandler] = (
        [] if address is not None else [urllib.request.ProxyHandler()]
    )
    handlers += [
        _HTTPHandler(deadline, address),
        _HTTPSHandler(deadline, address),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
        urllib.request.UnknownHandler(),
    ]
    for handler in handlers:
        opener.add_handler(handler)
    return opener


@dataclass(frozen=True)
class Reply:
    """The answer to an :func:`exchange`: any HTTP status, with its body (up to the size read)."""

    status: int
    body: bytes


class Unreachable(Exception):
    """An :func:`exchange` got no answer. ``reason`` is safe to log (no URL): ``TimeoutError``, an OS
    error's type and message, or the TLS failure's type; ``tls`` says the TLS handshake failed."""

    def __init__(self, reason: str, *, tls: bool = False, timed_out: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.tls = tls
        self.timed_out = timed_out


def exchange(
    url: str,
    data: bytes,
    *,
    headers: Mapping[str, str],
    timeout: float,
    max_body: int = 1 << 20,
    address: str | None = None,
) -> Reply:
    """One POST whose answer is read in full within ``timeout`` seconds (request/response protocols,
    such as an XKS proxy's, need the body; :func:`post` only says what became of a delivery).

    Same conventions as :func:`post`: a hard deadline per call, no redirects (a 3xx is returned as
    is), http(s) only, nothing of the URL in the exception. With ``address`` (an IP literal the caller
    has checked), the connection goes there rather than to what the host name resolves to now.
    Raises :class:`Unreachable` when there is no answer.
    """
    refuse_on_the_loop("outbound HTTP")
    if not _http_url(url):
        raise Unreachable("not an http(s) URL")
    request = urllib.request.Request(url, data=data, method="POST", headers=dict(headers))  # noqa: S310
    with _Deadline(timeout) as deadline:
        try:
            with _opener(deadline, address).open(request, timeout=timeout) as response:
                return Reply(int(response.status), response.read(max_body))
        except urllib.error.HTTPError as error:
            with contextlib.closing(error):
                try:
                    body = error.read(max_body)
                except (OSError, http.client.HTTPException):
                    body = b""
            return Reply(int(error.code), body)
        except (http.client.InvalidURL, ValueError) as error:
            if deadline.expired:
                raise Unreachable("TimeoutError", timed_out=True) from None
            raise Unreachable(type(error).__name__) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
            if deadline.expired:
                raise Unreachable("TimeoutError", timed_out=True) from None
            reason = error.reason if isinstance(error, urllib.error.URLError) else error
            tls = isinstance(reason, ssl.SSLError)
            timed_out = isinstance(reason, TimeoutError | socket.timeout)
            raise Unreachable(_safe(error), tls=tls, timed_out=timed_out) from None
