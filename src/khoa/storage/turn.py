"""The writers' turn on an SQLite database: every writing transaction of a node queues for it.

SQLite lets one transaction write at a time. A writer that finds the lock taken is put to sleep by
SQLite's busy handler for 1, 2, 5, 10, 15, 20, 25... ms before it looks again, so a writer that
loses a race sleeps through several commits of the others, and with the audit writer, every request
of its batch waits with it: a leader's alert engine committing every thousand events held the
request path's audit commits in those sleeps (measured with two workers, GetSecretValue p99: 22-34
ms while the leader's jobs ran, 15-19 ms once they queued in the turn).

So a node's writers queue for the database outside SQLite, in a queue that hands the turn over the
moment its holder is done: this process's threads on a lock, then, with several server processes on
one file, the processes on an exclusive flock() of a file beside the database (flock() belongs to
the open file, so it cannot order one process's threads). It only orders writers; SQLite's own
locking still protects the data, and a writer from elsewhere (a CLI command) still meets the busy
handler.

Who takes the turn: the audit recorder around each batch it commits (:mod:`khoa.audit.recorder`),
and every other writing transaction through the engine's connections (:func:`connection_class`),
from its first write statement to its commit or rollback. Reads never wait for it. A wait is bounded
(the database bound): a sibling stopped while holding the turn gets a prompt "database is locked"
(503), never a hang.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from khoa.blocking import StatementClock

# Statements that make SQLite take its write lock (the first of them in a transaction).
_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")
_WRITING_BEGINS = ("BEGIN IMMEDIATE", "BEGIN EXCLUSIVE")
# A busy lock file is first tried again this many times, this far apart (a commit takes about a
# millisecond), before a thread is started to wait for it in the kernel's queue.
_RETRIES = 4
_RETRY_SECONDS = 0.0005


class TurnUnavailable(sqlite3.OperationalError):
    """The turn was not had within the bound; a database error, so callers answer 503."""


class WriterTurn:
    """The queue for one database's writers. Taken by a thread and ended by any thread (the audit
    recorder takes it on its writer thread and ends it from the event loop); taken again by the
    thread that holds it, it only counts (a job that writes while it holds the turn for its own
    transaction, say)."""

    def __init__(self, lock_path: str | None = None) -> None:
        """``lock_path``: the file whose flock() orders several processes (None: this process is the
        only writer, and its threads need no more than the lock)."""
        self._lock = threading.Lock()
        self._owner: int | None = None
        self._depth = 0
        self._fd: int | None = None
        if lock_path is not None:
            with contextlib.suppress(OSError):  # no lock file: SQLite's busy handler still serialises
                self._fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    @classmethod
    def for_database(cls, database: str | None, processes: int) -> WriterTurn:
        """The turn of an SQLite file written by ``processes`` server processes."""
        shared = processes > 1 and database and database != ":memory:" and not database.startswith("file:")
        return cls(f"{database}-auditlock" if shared else None)

    @property
    def shared(self) -> bool:
        """Whether other processes queue for this turn too (the lock file is open)."""
        return self._fd is not None

    def take(self) -> None:
        """Wait for the turn, however long (the audit recorder's writer thread, whose waiters are
        bounded on the event loop)."""
        if self._again():
            return
        self._lock.acquire()
        try:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._lock.release()
            raise
        self._hold()

    def take_within(self, seconds: float) -> None:
        """Wait for the turn at most ``seconds`` (TurnUnavailable after). flock() has no timeout, so
        a busy lock file is waited for on a helper thread, in the kernel's queue as every other
        writer waits (a poller would be starved by their commits); a turn it gets after its waiter
        gave up is given back at once."""
        if self._again():
            return
        deadline = time.monotonic() + seconds
        if not self._lock.acquire(timeout=max(0.0, seconds)):
            raise TurnUnavailable("database is locked (another writer of this process held it)")
        fd = self._fd
        if fd is None:
            self._hold()
            return
        try:
            for retry in range(_RETRIES + 1):
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    if retry < _RETRIES:
                        time.sleep(_RETRY_SECONDS)
                    continue
                self._hold()
                return
        except BaseException:
            self._lock.release()
            raise
        taken = threading.Event()
        guard = threading.Lock()
        abandoned = False

        def wait_in_the_kernel() -> None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_EX)
                with guard:
                    if abandoned:
                        fcntl.flock(fd, fcntl.LOCK_UN)
                        return
                    taken.set()

        threading.Thread(target=wait_in_the_kernel, name="khoa-writer-turn", daemon=True).start()
        taken.wait(max(0.0, deadline - time.monotonic()))
        with guard:
            if not taken.is_set():
                abandoned = True
                self._lock.release()
                raise TurnUnavailable("database is locked (another process held the writers' turn)")
        self._hold()

    def end(self) -> None:
        """End one taking of the turn (on any thread); the last hands it to the next writer."""
        self._depth -= 1
        if self._depth > 0:
            return
        self._owner = None
        try:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._lock.release()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _again(self) -> bool:
        """Taken once more by the thread that holds it: count it."""
        if self._depth and self._owner == threading.get_ident():
            self._depth += 1
            return True
        return False

    def _hold(self) -> None:
        self._owner = threading.get_ident()
        self._depth = 1


def connection_class(
    turn: WriterTurn, seconds: float, clock: StatementClock | None = None
) -> type[sqlite3.Connection]:
    """An sqlite3 connection class (``sqlite3.connect(factory=...)``) whose writing transactions
    take ``turn`` (waiting at most ``seconds``) at their first write statement and end it at their
    commit or rollback. A connection whose owner takes the turn itself sets ``manages_turn``.
    ``clock`` hears when each statement, commit and rollback begins and ends: a thread the kernel
    holds in one (a frozen file system) is told from a busy one (khoa.blocking.run_unless_stuck)."""
    timed = clock if clock is not None else StatementClock()

    class TurnCursor(sqlite3.Cursor):
        def execute(self, sql: str, parameters: Any = (), /) -> TurnCursor:
            return self._in_turn(super().execute, sql, parameters)

        def executemany(self, sql: str, parameters: Any, /) -> TurnCursor:
            return self._in_turn(super().executemany, sql, parameters)

        def _in_turn(self, run: Callable[[str, Any], object], sql: str, parameters: Any) -> TurnCursor:
            connection = self.connection
            assert isinstance(connection, TurnConnection)
            connection.before(sql)
            timed.begin()
            try:
                run(sql, parameters)
            finally:
                timed.end()
                connection.after()
            return self

    class TurnConnection(sqlite3.Connection):
        manages_turn = False
        holds_turn = False

        def cursor(self, factory: Any = TurnCursor) -> Any:
            return super().cursor(factory)

        def before(self, sql: str) -> None:
            """Take the turn before a transaction's first write."""
            if self.holds_turn or self.manages_turn or not _writes(sql):
                return
            turn.take_within(seconds)
            self.holds_turn = True

        def after(self) -> None:
            """A statement that left no transaction open (a write in autocommit mode, a COMMIT or
            ROLLBACK as text, a failure SQLite rolled back) is done with the turn at once."""
            if self.holds_turn and not self.in_transaction:
                self.let_go()

        def let_go(self) -> None:
            if self.holds_turn:
                self.holds_turn = False
                turn.end()

        def commit(self) -> None:
            timed.begin()
            try:
                super().commit()
            finally:
                timed.end()
                self.let_go()

        def rollback(self) -> None:
            timed.begin()
            try:
                super().rollback()
            finally:
                timed.end()
                self.let_go()

        def close(self) -> None:
            try:
                super().close()
            finally:
                self.let_go()

    return TurnConnection


def _writes(sql: str) -> bool:
    """Whether ``sql`` takes SQLite's write lock: a write statement, or a transaction begun for one."""
    head = sql.lstrip()[:16].upper()
    return head.startswith(_WRITES) or head.startswith(_WRITING_BEGINS)
