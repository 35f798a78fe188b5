"""A client-side bound on every PostgreSQL round trip, for when the network goes silent.

PostgreSQL's own timeouts (statement, lock, idle in transaction) end waits the server knows about.
They cannot help when the server never sees the query, or its answer never comes back: a dropped
route, a frozen proxy, a failed-over address. libpq has no client-side query timeout, and TCP
keepalives and ``tcp_user_timeout`` only fire when the peer's kernel stops acknowledging - a proxy
or load balancer in between keeps acknowledging while forwarding nothing. So a worker thread could
wait on ``recv()`` forever, and with it the request, the audit writer and, on the event loop, the
whole node.

The watchdog closes that gap: every call that waits for the server (execute, executemany, commit,
rollback) registers a deadline; one thread per engine shuts the socket of any call still waiting
past its deadline. The blocked call then fails at once with ``OperationalError`` ("server closed the
connection"), SQLAlchemy invalidates the connection, and the next checkout opens a fresh one. The
deadline is the server-side statement timeout plus a grace, so on a slow but reachable server the
server's clean cancel (the connection stays usable) always comes first.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg


class Watchdog:
    """Shuts the socket of any guarded call that outlives ``bound_seconds``.

    The registry is guarded by one lock, and the socket is shut while holding it: a call leaving
    its guard waits for that lock, so the file descriptor cannot be closed (and reused by another
    socket) between the check and the shutdown.
    """

    def __init__(self, bound_seconds: float) -> None:
        self.bound_seconds = bound_seconds
        # How often the thread looks: a quarter of the bound, so a call ends within 1.25 x its bound.
        self._tick = min(0.25, bound_seconds / 4)
        self._lock = threading.Lock()
        self._deadlines: dict[int, tuple[float, int]] = {}  # token -> (monotonic deadline, fd)
        self._tokens = itertools.count()
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self.fired = 0  # how many calls were cut off (for tests and metrics)

    def enter(self, fd: int) -> int:
        """Start bounding a server call on the socket ``fd``; returns the token for :meth:`leave`.

        Called around every statement, so kept to one lock and one dict insert (no generator)."""
        token = next(self._tokens)
        with self._lock:
            self._deadlines[token] = (time.monotonic() + self.bound_seconds, fd)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="khoa-db-watchdog", daemon=True)
                self._thread.start()
        return token

    def leave(self, token: int) -> None:
        """The call is over (whether it succeeded, failed, or was cut off)."""
        with self._lock:
            self._deadlines.pop(token, None)  # gone already if the watchdog fired

    @contextlib.contextmanager
    def guard(self, fd: int) -> Iterator[None]:
        """Bound the server call made inside this block on the socket ``fd``."""
        token = self.enter(fd)
        try:
            yield
        finally:
            self.leave(token)

    def stop(self) -> None:
        self._stopped.set()

    def _run(self) -> None:
        while not self._stopped.wait(self._tick):
            now = time.monotonic()
            with self._lock:
                for token, (deadline, fd) in list(self._deadlines.items()):
                    if deadline <= now:
                        self._deadlines.pop(token, None)
                        self.fired += 1
                        _shut(fd)


def _shut(fd: int) -> None:
    """Shut the socket behind ``fd`` in both directions (its owner's blocked read returns at once).

    ``shutdown`` acts on the socket, not the descriptor, so it is done through a duplicate that is
    closed again; the owner's descriptor stays valid until its owner closes it."""
    with contextlib.suppress(OSError):
        duplicate = socket.socket(fileno=os.dup(fd))
        try:
            duplicate.shutdown(socket.SHUT_RDWR)
        finally:
            duplicate.close()


class BoundedCursor(psycopg.Cursor[Any]):
    """A psycopg cursor whose calls to the server are guarded by its connection's watchdog."""

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> BoundedCursor:
        token = _enter(self.connection)
        try:
            super().execute(query, params, **kwargs)
        finally:
            _leave(self.connection, token)
        return self

    def executemany(self, query: Any, params_seq: Any, **kwargs: Any) -> None:
        token = _enter(self.connection)
        try:
            super().executemany(query, params_seq, **kwargs)
        finally:
            _leave(self.connection, token)

    @contextlib.contextmanager
    def copy(self, statement: Any, params: Any = None, **kwargs: Any) -> Iterator[psycopg.Copy]:
        """COPY, guarded from its start to the server's answer at the end of the block."""
        token = _enter(self.connection)
        try:
            with super().copy(statement, params, **kwargs) as copy:
                yield copy
        finally:
            _leave(self.connection, token)


class BoundedConnection(psycopg.Connection[Any]):
    """A psycopg connection whose commit and rollback (and cursors) are guarded by ``watchdog``."""

    watchdog: Watchdog | None = None

    def commit(self) -> None:
        token = _enter(self)
        try:
            super().commit()
        finally:
            _leave(self, token)

    def rollback(self) -> None:
        token = _enter(self)
        try:
            super().rollback()
        finally:
            _leave(self, token)


def _enter(connection: psycopg.Connection[Any]) -> int | None:
    """Register a server call on ``connection`` with its watchdog (None: nothing to guard)."""
    watchdog = getattr(connection, "watchdog", None)
    if watchdog is None:
        return None
    try:
        fd = connection.pgconn.socket
    except psycopg.OperationalError:  # the connection is already lost: the call fails on its own
        return None
    return watchdog.enter(fd) if fd >= 0 else None


def _leave(connection: psycopg.Connection[Any], token: int | None) -> None:
    if token is not None:
        watchdog = getattr(connection, "watchdog", None)
        if watchdog is not None:
            watchdog.leave(token)


def connect(watchdog: Watchdog, *args: Any, **kwargs: Any) -> BoundedConnection:
    """A :class:`BoundedConnection` (arguments as ``psycopg.connect``) watched by ``watchdog``."""
    connection = BoundedConnection.connect(*args, cursor_factory=BoundedCursor, **kwargs)
    connection.watchdog = watchdog
    return connection
