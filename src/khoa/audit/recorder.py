"""Durable, group-committed recording of audit events.

Every request awaits its event's commit before a response leaves the server: events from concurrent
requests are batched into one transaction on a dedicated writer thread (so the event loop keeps
serving while the database syncs), and if the batch cannot be committed every request in it is
refused. Nothing is ever acknowledged without its event on disk.

The writer is kept cheap because it shares the GIL with the event loop: a batch is usually one
multi-row INSERT, run in autocommit mode straight through the DB-API cursor (so it commits itself:
one statement, one trip through the GIL); a batch waits until the requests already running have
joined it; and on SQLite the writers of several server processes queue for the database in the
kernel (flock) rather than in SQLite's sleeping busy handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from itertools import chain
from typing import Any

import orjson
from sqlalchemy import Engine
from sqlalchemy.pool import PoolProxiedConnection

from khoa.audit.events import AuditEvent
from khoa.audit.health import TrailHealth
from khoa.audit.outcomes import Writer, mark_lost_outcomes
from khoa.blocking import DatabaseStuck, StatementClock, run_unless_stuck
from khoa.logs import LogLimiter
from khoa.protocol.errors import AWSError
from khoa.storage import schema
from khoa.storage.turn import TurnUnavailable, WriterTurn

log = logging.getLogger("khoa.audit")
_MAX_BATCH = 512
# How long a batch waits for its turn on the lock file that orders several processes' SQLite writers
# (the default database bound, KHOA_DATABASE_TIMEOUT_SECONDS).
TURN_SECONDS = 5.0
# Loop iterations a batch waits for requests already running to join it (it stops at the first
# iteration that adds nothing: one, when the server is quiet).
_MAX_GATHER_ROUNDS = 16
_json_encode = json.JSONEncoder(separators=(",", ":"), default=str).encode


def encode_record(record: dict[str, object]) -> str:
    """A record as compact JSON text.

    orjson writes it about five times faster than the standard library (it runs on the audit writer's
    thread, which shares the GIL with the event loop); values it refuses (an integer beyond 64 bits)
    fall back to ``json``, with the same ``str()`` for what neither knows.
    """
    try:
        return orjson.dumps(record, default=str).decode()
    except orjson.JSONEncodeError:
        return _json_encode(record)


# The audit_events columns the writer fills, in the order of the tuples _row() builds.
_COLUMNS = (
    "event_id",
    "account_id",
    "region",
    "event_time",
    "event_source",
    "event_name",
    "username",
    "access_key_id",
    "resource_names",
    "resource_types",
    "read_only",
    "error_code",
    "record",
    "event_type",
    "principal_arn",
    "source_ip",
)
_PLACEHOLDERS = {"qmark": "?", "format": "%s", "pyformat": "%s"}
# The columns the UPDATE of a completed event sets, in the order of _completed()'s values.
_UPDATED_COLUMNS = ("record", "error_code", "resource_names", "resource_types")
_UPDATED_INDEXES = tuple(_COLUMNS.index(column) for column in _UPDATED_COLUMNS)
# Bound parameters one statement may carry when the driver cannot say: SQLite before 3.32.
_OLDEST_PARAMETER_LIMIT = 999


class _StaleConnection(Exception):
    """The writer's kept connection was found dead before anything of the batch was committed."""


def _parameter_limit(dbapi_connection: Any) -> int:
    """How many bound parameters one statement may carry on this connection."""
    getlimit = getattr(dbapi_connection, "getlimit", None)  # sqlite3, Python 3.11+
    if getlimit is not None:
        return int(getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))
    if _is_psycopg(dbapi_connection):
        return 65535  # PostgreSQL's wire protocol counts parameters in 16 bits
    return _OLDEST_PARAMETER_LIMIT


def _is_psycopg(dbapi_connection: Any) -> bool:
    """A psycopg connection (or one of its subclasses: khoa.storage.watchdog's)?"""
    return any(cls.__module__.startswith("psycopg") for cls in type(dbapi_connection).__mro__)


class AuditUnavailable(Exception):
    """The audit sink could not record an event; the request must be refused."""


def unavailable_error() -> AWSError:
    return AWSError(
        "ServiceUnavailableException",
        "The audit trail is unavailable, so the request was not processed. Try again later.",
        503,
    )


def _resource_columns(resources: list[dict[str, str]]) -> tuple[str | None, str | None]:
    """The resource_names and resource_types values: the ARNs in order, and the distinct types
    sorted, each joined by newlines (None for none)."""
    if not resources:
        return None, None
    if len(resources) == 1:  # most calls name one resource: no join, no set to sort
        arn = resources[0]["ARN"]
        kind = resources[0]["type"]
        if type(arn) is str and type(kind) is str:
            return arn or None, kind or None
    return (
        "\n".join([r["ARN"] for r in resources]) or None,
        "\n".join(sorted({r["type"] for r in resources})) or None,
    )


def _row(e: AuditEvent) -> tuple[object, ...]:
    """One event's audit_events values, in _COLUMNS order."""
    resource_names, resource_types = _resource_columns(e.resources)
    return (
        e.record["eventID"],
        e.account_id,
        e.region,
        e.event_time,
        e.event_source,
        e.event_name,
        e.username,
        e.access_key_id,
        resource_names,
        resource_types,
        e.read_only,
        e.error_code,
        encode_record(e.record),
        e.event_type,
        e.principal_arn,
        e.source_ip,
    )


class _Statements:
    """The writer's SQL in the driver's positional parameter style: one INSERT per batch (as many
    rows as the driver's parameter limit allows) and the UPDATE that completes an event recorded
    before its call ran. Only constants go into the text (the table's and columns' names); values
    are bound parameters."""

    def __init__(self, paramstyle: str, parameter_limit: int, *, copies: bool = False) -> None:
        """``copies``: the driver streams rows with COPY (psycopg), which inserts a batch for a
        sixth of the CPU a multi-row INSERT costs (whose long text psycopg parses on every call)."""
        placeholder = _PLACEHOLDERS.get(paramstyle)
        if placeholder is None:
            raise ValueError(f"the audit writer does not support the {paramstyle!r} parameter style")
        table = schema.audit_events.name
        self.copy = f"COPY {table} ({', '.join(_COLUMNS)}) FROM STDIN" if copies else None
        self._head = f"INSERT INTO {table} ({', '.join(_COLUMNS)}) VALUES "  # noqa: S608
        self._values = f"({', '.join([placeholder] * len(_COLUMNS))})"
        self._inserts: dict[int, str] = {}
        self.max_rows = max(1, min(_MAX_BATCH, parameter_limit // len(_COLUMNS)))
        self.update = (
            f"UPDATE {table} SET "  # noqa: S608
            + ", ".join(f"{column} = {placeholder}" for column in _UPDATED_COLUMNS)
            + f" WHERE event_id = {placeholder}"
        )

    def _insert(self, rows: int) -> str:
        sql = self._inserts.get(rows)
        if sql is None:
            sql = self._inserts[rows] = self._head + ", ".join([self._values] * rows)
        return sql

    def batch(
        self, events: list[AuditEvent], updates: list[AuditEvent]
    ) -> tuple[list[tuple[object, ...]], list[tuple[str, tuple[object, ...]]]]:
        """What writes a batch: the rows to COPY (when the driver copies), then the statements -
        usually, without COPY, a single multi-row INSERT.

        The writer shares the GIL with the event loop, and the driver releases it around every
        statement it steps: each release hands the GIL to the event loop's thread and each return
        waits to get it back. One statement that inserts the whole batch - and, being the only one,
        commits it too (see AuditRecorder._write_once) - is one round trip through the GIL.
        """
        statements: list[tuple[str, tuple[object, ...]]] = []
        rows = [_row(e) for e in events]
        if self.copy is not None:
            statements.extend((self.update, _completed(event)) for event in updates)
            return rows, statements
        for start in range(0, len(rows), self.max_rows):
            chunk = rows[start : start + self.max_rows]
            statements.append((self._insert(len(chunk)), tuple(chain.from_iterable(chunk))))
        statements.extend((self.update, _completed(event)) for event in updates)
        return [], statements


def _completed(e: AuditEvent) -> tuple[object, ...]:
    """The UPDATE's parameters for an event recorded before its call ran: _UPDATED_COLUMNS, then
    the event ID."""
    row = _row(e)
    return (*[row[index] for index in _UPDATED_INDEXES], e.event_id)


def rows_for(events: list[AuditEvent]) -> list[dict[str, object]]:
    """Events as audit_events rows by column name (for inserts through SQLAlchemy)."""
    return [dict(zip(_COLUMNS, _row(e), strict=True)) for e in events]


class AuditRecorder:
    def __init__(
        self,
        engine: Engine,
        *,
        turn: WriterTurn | None = None,
        trail: TrailHealth | None = None,
        turn_seconds: float = TURN_SECONDS,
        statements: StatementClock | None = None,
        stuck_after_seconds: float = TURN_SECONDS,
    ) -> None:
        """``turn``: the queue of the database's writers (:mod:`khoa.storage.turn`; the node's, which
        its other writers take too; None: one of the recorder's own). ``trail``: whether the trail's
        log files can be delivered (readiness asks the recorder about the whole trail).
        ``turn_seconds``: how long a batch waits for its turn before its requests are refused (the
        database bound: a sibling process stopped while holding it must not hold every request of
        this one). ``statements`` (the engine's statement clock): a batch whose commit the kernel
        holds (a frozen file system) is refused once it has been in one statement for
        ``stuck_after_seconds``, and later batches at once until it returns (khoa.blocking)."""
        self.engine = engine
        self._turn_seconds = turn_seconds
        self._statements_clock = statements if statements is not None else StatementClock()
        self._stuck_after_seconds = stuck_after_seconds
        self.trail = trail
        self.writer = Writer.this_process()
        self._logs = LogLimiter(log)
        self.enabled = True
        self.failures = 0
        # time.monotonic() of the latest failed and successful commits (readiness reads them)
        self.last_failure_at = 0.0
        self.last_success_at = 0.0
        self._pending: list[tuple[str, AuditEvent, asyncio.Future[None]]] = []
        self._flushing = False
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="khoa-audit")
        self._statements: _Statements | None = None  # known once a connection tells its limits
        # The writer's own driver connection, in autocommit mode and kept between commits
        # (SQLAlchemy's transaction and pool bookkeeping cost more per commit than a batch's
        # INSERT); opened on first use and again after a failure. Used only in the writers' turn:
        # jobs write from their own threads.
        self._connection: PoolProxiedConnection | None = None
        self._owns_turn = turn is None
        self.turn = turn if turn is not None else WriterTurn()

    def write(self, events: list[AuditEvent], updates: list[AuditEvent] | None = None) -> None:
        """Commit new events, and final versions of events recorded before their call ran, in one
        transaction (background jobs and tests call this directly). The turn is awaited for at most
        ``turn_seconds`` (AuditUnavailable after): a sibling process stopped while holding the lock
        file must not hold a background job's thread, and whatever it holds, for good."""
        try:
            self.turn.take_within(self._turn_seconds)
        except TurnUnavailable as exc:
            raise AuditUnavailable(str(exc)) from exc
        try:
            self._write_in_turn(events, updates or [])
        finally:
            self.turn.end()

    def _write_in_turn(self, events: list[AuditEvent], updates: list[AuditEvent]) -> None:
        try:
            self._write_once(events, updates)
        except _StaleConnection:
            # The kept connection had died while idle (a database restart): nothing was sent,
            # so the batch goes once more on a new connection.
            self._write_once(events, updates)

    def _write_once(self, events: list[AuditEvent], updates: list[AuditEvent]) -> None:
        fresh = self._connection is None
        connection = self._connection if self._connection is not None else self._connect()
        assert self._statements is not None
        committing = False
        try:
            copied, statements = self._statements.batch(events, updates)
            steps = len(statements) + (1 if copied else 0)
            cursor = connection.cursor()
            try:
                if steps > 1:
                    cursor.execute("BEGIN")
                # each alone is a transaction of its own (autocommit mode)
                if copied:
                    with cursor.copy(self._statements.copy) as copy:
                        for row in copied:
                            copy.write_row(row)
                for sql, parameters in statements:
                    cursor.execute(sql, parameters)
                if steps > 1:
                    committing = True
                    cursor.execute("COMMIT")
            finally:
                cursor.close()
        except Exception as exc:
            stale = (
                not fresh
                and not committing
                and isinstance(exc, self.engine.dialect.loaded_dbapi.Error)
                and self.engine.dialect.is_disconnect(exc, connection.dbapi_connection, None)
            )
            self._discard(connection)
            if stale:
                raise _StaleConnection from exc
            raise
        except BaseException:
            self._discard(connection)
            raise

    def _connect(self) -> PoolProxiedConnection:
        """Open the writer's connection, in autocommit mode, so that a batch written by one statement
        is committed by it (the mode is reset before the connection goes back to the pool)."""
        connection = self.engine.raw_connection()
        dbapi_connection = connection.dbapi_connection
        assert dbapi_connection is not None  # a connection just opened has its driver connection
        self.engine.dialect.set_isolation_level(dbapi_connection, "AUTOCOMMIT")
        # The writer takes the writers' turn itself, around each batch (khoa.storage.turn).
        if hasattr(dbapi_connection, "manages_turn"):
            dbapi_connection.manages_turn = True
        if self._statements is None:
            self._statements = _Statements(
                self.engine.dialect.paramstyle,
                _parameter_limit(dbapi_connection),
                copies=_is_psycopg(dbapi_connection),
            )
        self._connection = connection
        return connection

    def _discard(self, connection: PoolProxiedConnection) -> None:
        """Drop the kept connection after a failure: a connection that failed a commit is not reused."""
        self._connection = None
        with contextlib.suppress(Exception):
            connection.rollback()
        with contextlib.suppress(Exception):
            connection.invalidate()

    def record(self, event: AuditEvent) -> asyncio.Future[None]:
        """Queue ``event`` for the next commit; await the answer, done once the event is durable
        (AuditUnavailable if it cannot be). A plain function handing back the batch's future, not a
        coroutine: every request awaits one, and each coroutine layer between it and the future costs
        a frame on every step of the event loop that resumes it."""
        return self._submit("insert", event)

    def finalize(self, event: AuditEvent) -> asyncio.Future[None]:
        """Queue the replacement of an event recorded before its call ran with the call's outcome
        (awaited as :meth:`record`)."""
        return self._submit("update", event)

    def _submit(self, kind: str, event: AuditEvent) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        if not self.enabled:
            future.set_result(None)
            return future
        self._pending.append((kind, event, future))
        if not self._flushing:
            self._flushing = True
            self._task = loop.create_task(self._flush_loop())
        return future

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                # Let requests already running add their events to this batch: yield to the loop
                # until a pass adds nothing. Fewer, larger commits, and the writer commits while the
                # loop has little to do instead of fighting it for the GIL.
                for _ in range(_MAX_GATHER_ROUNDS):
                    size = len(self._pending)
                    await asyncio.sleep(0)
                    if len(self._pending) == size or len(self._pending) >= _MAX_BATCH:
                        break
                if self._statements_clock.stuck_serving(self._executor, self._stuck_after_seconds):
                    # the writer thread is held in a commit: nothing queued behind it can commit
                    self._refuse(self._next_batch(), DatabaseStuck("the audit writer is stuck"))
                    continue
                # With several processes, the writer first waits for its turn at the database and
                # only then takes the batch: the events that came while the other process committed
                # go in this commit, not the next (taken before the wait, each process's batches
                # were a few events, and the commits' fixed cost per event several times as high).
                queued = self.turn.shared
                if queued:
                    try:
                        await self._wait_for_turn(loop)
                    except Exception as exc:  # noqa: BLE001 - no turn, no commit: refuse, never hang
                        self._refuse(self._next_batch(), exc)
                        continue
                try:
                    await self._commit_batch(loop, self.write if not queued else self._write_in_turn)
                finally:
                    if queued:
                        self.turn.end()
        finally:
            self._flushing = False

    async def _wait_for_turn(self, loop: asyncio.AbstractEventLoop) -> None:
        """Take the writer's turn on the writer thread, for at most ``turn_seconds`` (TimeoutError:
        the batch is refused). A turn that comes after its waiter gave up (or was cancelled) is given
        back at once."""
        taken = loop.run_in_executor(self._executor, self.turn.take)
        try:
            await asyncio.wait_for(asyncio.shield(taken), self._turn_seconds)
        except BaseException:
            taken.add_done_callback(
                lambda done: None if done.cancelled() or done.exception() else self.turn.end()
            )
            raise

    async def _commit_batch(
        self,
        loop: asyncio.AbstractEventLoop,
        write: Callable[[list[AuditEvent], list[AuditEvent]], None],
    ) -> None:
        """Commit the next batch of pending events with ``write`` and answer their requests."""
        batch = self._next_batch()
        try:
            inserts = [event for kind, event, _ in batch if kind == "insert"]
            updates = [event for kind, event, _ in batch if kind == "update"]
            await run_unless_stuck(
                self._executor, self._statements_clock, self._stuck_after_seconds, write, inserts, updates
            )
        except Exception as exc:  # noqa: BLE001 - any sink failure refuses the whole batch
            self._refuse(batch, exc)
            return
        if self.last_failure_at > self.last_success_at:
            self._logs.recovered("sink", "audit sink: commits work again")
        self.last_success_at = time.monotonic()
        for _, _, future in batch:
            if not future.done():
                future.set_result(None)

    def _next_batch(self) -> list[tuple[str, AuditEvent, asyncio.Future[None]]]:
        batch, self._pending = self._pending[:_MAX_BATCH], self._pending[_MAX_BATCH:]
        return batch

    def _refuse(self, batch: list[tuple[str, AuditEvent, asyncio.Future[None]]], exc: Exception) -> None:
        """The batch could not be committed: its requests are refused (AuditUnavailable)."""
        self.note_failure()
        self._logs.error(
            "sink", "audit sink failed (%s); refusing %d requests", type(exc).__name__, len(batch)
        )
        for _, _, future in batch:
            if not future.done():
                future.set_exception(AuditUnavailable())

    def note_failure(self) -> None:
        self.failures += 1
        self.last_failure_at = time.monotonic()

    def failed_within(self, seconds: float) -> bool:
        """Whether a commit failed in the last ``seconds`` with no successful commit since."""
        return (
            self.failures > 0
            and self.last_failure_at > self.last_success_at
            and time.monotonic() - self.last_failure_at < seconds
        )

    def trail_problem(self) -> str | None:
        """Why the trail's log files cannot be delivered now (None when they can, or nobody said),
        from a write probe made now: readiness asks, and with several workers the one it reaches may
        have served nothing since the disk froze or filled (its last probe said all was well)."""
        return self.trail.problem(fresh=True) if self.trail is not None else None

    def mark_pending(self, event: AuditEvent) -> None:
        """Mark a write's first record, made before its call runs, as waiting for the outcome (so a
        later start can tell it from a success if this process dies first)."""
        self.writer.mark_pending(event)

    def mark_lost_outcomes(self) -> int:
        """At start: record "outcome unknown" on first records whose process died before the outcome
        (see :mod:`khoa.audit.outcomes`); returns how many."""
        return mark_lost_outcomes(self.engine, self.writer)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        try:  # not while a background job's write() holds the connection
            self.turn.take_within(self._turn_seconds)
        except TurnUnavailable:
            log.warning("audit writer: closing its connection without the writers' turn")
            taken = False
        else:
            taken = True
        try:
            if self._connection is not None:
                with contextlib.suppress(Exception):
                    dbapi_connection = self._connection.dbapi_connection
                    if dbapi_connection is not None:
                        self.engine.dialect.reset_isolation_level(dbapi_connection)
                        if hasattr(dbapi_connection, "manages_turn"):
                            dbapi_connection.manages_turn = False  # pooled again: its writers queue
                    self._connection.close()
                self._connection = None
        finally:
            if taken:
                self.turn.end()
            if self._owns_turn:
                self.turn.close()
