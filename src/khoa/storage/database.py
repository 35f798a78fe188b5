"""Engine creation and schema migration for SQLite (WAL) and PostgreSQL, with every wait bounded.

A server's engine is given :class:`DatabaseBounds` (from KHOA_DATABASE_TIMEOUT_SECONDS and
KHOA_DATABASE_CONNECT_TIMEOUT_SECONDS), so no request, probe or background pass waits on the database
longer than that: on PostgreSQL a connect timeout, server-side statement, lock and idle-in-transaction
timeouts, TCP keepalives and ``tcp_user_timeout``, a bounded wait for a pooled connection, and a
client-side watchdog (:mod:`khoa.storage.watchdog`) for a network that stops answering without
closing; on SQLite the busy timeout. Command-line tools pass no bounds: their statements may
legitimately run long (verifying a large trail), but they still never wait forever to connect.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy.exc
from sqlalchemy import Connection, Engine, create_engine, event, make_url, select

from khoa.blocking import DatabaseStuck, StatementClock, refuse_on_the_loop
from khoa.protocol.errors import AWSError
from khoa.storage import schema
from khoa.storage.turn import WriterTurn, connection_class

_MIGRATIONS = Path(__file__).parent / "migrations"

# Defaults of the settings (khoa.settings), also used by tools that pass no bounds.
# 5 s: a healthy statement takes milliseconds, so 5 s is three orders of magnitude of headroom for a
# loaded database, yet short enough that a caller (whose SDK retries) hears 503 well before its own
# read timeout (60 s in the AWS SDKs) and a node's requests do not pile up behind a silent database.
DEFAULT_TIMEOUT_SECONDS = 5.0
# 3 s: a TCP and TLS handshake plus authentication on a LAN takes milliseconds; 3 s survives one lost
# SYN retransmit (1 s) and a slow SCRAM exchange. libpq counts whole seconds, at least 2.
DEFAULT_CONNECT_TIMEOUT_SECONDS = 3.0
# Values in one IN (...) list (see in_chunks): a statement's parameters are bounded (PostgreSQL's
# protocol: 65,535; SQLite: 32,766), and a request may name more (UntagResource's TagKeys have no
# maximum in the model: 70,000 of them fit in a request).
MAX_IN = 500
# What a database answers to a statement that the request made too large or too complex: the same
# request fails the same way every time, so it is the caller's to change (400), never an outage to
# retry (503). SQLite's messages (an OperationalError, or a DataError for "string or blob too big"),
# and libpq's refusal to send more than 65,535 parameters (psycopg raises it as an OperationalError
# with no SQLSTATE).
_TOO_LARGE_MESSAGES = (
    "expression tree is too large",
    "too many sql variables",
    "too many terms in compound select",
    "too many arguments on function",
    "too many from clause terms",
    "parser stack overflow",
    "like or glob pattern too complex",
    "string or blob too big",
    "number of parameters must be between",
)
# PostgreSQL's class 54, program limit exceeded: statement too complex (stack depth), too many
# arguments or columns. (Class 53, insufficient resources - out of memory, disk full, too many
# connections - is the server's state: it stays 503.)
_TOO_LARGE_SQLSTATE_CLASS = "54"

_T = TypeVar("_T")

# The watchdog cuts a call off this long after the server-side statement timeout would have ended it,
# so on a reachable server the server's clean cancel (which keeps the connection) always comes first.
WATCHDOG_GRACE_SECONDS = 0.5
# A transaction left idle this many bounds is ended by the server (its locks released): long enough
# for the Python work some transactions do between statements (RSA key generation), short enough that
# a wedged node does not hold locks or a connection slot for long.
IDLE_IN_TRANSACTION_BOUNDS = 6


@dataclass(frozen=True)
class DatabaseBounds:
    """How long anything may wait on the database.

    ``timeout_seconds`` bounds a statement, a lock wait, the wait for a pooled connection and unacknowledged
    data on the socket; ``connect_timeout_seconds`` bounds opening a connection."""

    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    connect_timeout_seconds: float = DEFAULT_CONNECT_TIMEOUT_SECONDS

    @property
    def stuck_after_seconds(self) -> float:
        """How long a thread may stay in one statement before its caller stops waiting: past the
        statement bound, only a storage that stopped answering holds it (khoa.blocking.DatabaseStuck)."""
        return self.timeout_seconds + WATCHDOG_GRACE_SECONDS


def _sqlite_pragmas(busy_timeout_ms: int) -> Any:
    def apply(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk before the caller hears about it. With NORMAL, WAL commits survive a
        # crashed process but not a power cut - and a lost key takes its callers' ciphertexts with it.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return apply


def postgres_connect_args(bounds: DatabaseBounds | None) -> dict[str, Any]:
    """libpq parameters bounding connects, statements, locks and silent sockets (no bounds: connect and
    socket only)."""
    timeout = bounds.timeout_seconds if bounds else DEFAULT_TIMEOUT_SECONDS
    connect = bounds.connect_timeout_seconds if bounds else DEFAULT_CONNECT_TIMEOUT_SECONDS
    args: dict[str, Any] = {
        "connect_timeout": max(2, math.ceil(connect)),  # libpq: whole seconds, at least 2
        # An idle pooled connection whose peer vanished is found within about twice the bound.
        "keepalives": 1,
        "keepalives_idle": max(1, math.ceil(timeout)),
        "keepalives_interval": max(1, math.ceil(timeout / 3)),
        "keepalives_count": 3,
        # Data sent and not acknowledged this long (a blackholed route) drops the connection.
        "tcp_user_timeout": math.ceil((timeout + WATCHDOG_GRACE_SECONDS) * 1000),
    }
    if bounds is not None:
        ms = math.ceil(timeout * 1000)
        idle_ms = ms * IDLE_IN_TRANSACTION_BOUNDS
        args["options"] = (
            f"-c statement_timeout={ms} -c lock_timeout={ms} -c idle_in_transaction_session_timeout={idle_ms}"
        )
    return args


def mysql_connect_args(bounds: DatabaseBounds | None) -> dict[str, Any]:
    """PyMySQL's socket timeouts (MySQL and MariaDB, which the jobs lease also runs on): the client
    gives up on a read or write that takes longer (no bounds: connect only)."""
    connect = bounds.connect_timeout_seconds if bounds else DEFAULT_CONNECT_TIMEOUT_SECONDS
    args: dict[str, Any] = {"connect_timeout": max(1, math.ceil(connect))}
    if bounds is not None:
        socket_seconds = math.ceil(bounds.timeout_seconds + WATCHDOG_GRACE_SECONDS)
        args.update(read_timeout=socket_seconds, write_timeout=socket_seconds)
    return args


def _refuse_on_the_loop(engine: Engine) -> None:
    """A server's database is never waited on by a call tried on the event loop (khoa.blocking): the
    request for a connection raises WouldBlock before anything is taken from the pool."""
    checkout = engine.raw_connection

    def raw_connection() -> Any:
        refuse_on_the_loop("the database")
        return checkout()

    engine.raw_connection = raw_connection  # type: ignore[method-assign]


def too_large(exc: BaseException) -> bool:
    """Whether ``exc`` (SQLAlchemy's or the driver's) is the database refusing a statement as too large
    or too complex: the request's fault, not the database's."""
    original = exc.orig if isinstance(exc, sqlalchemy.exc.DBAPIError) else exc
    if original is None:
        return False
    sqlstate = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    if isinstance(sqlstate, str) and sqlstate.startswith(_TOO_LARGE_SQLSTATE_CLASS):
        return True
    message = str(original).lower()
    return any(text in message for text in _TOO_LARGE_MESSAGES)


def request_too_large() -> AWSError:
    """The AWS-shaped 400 for a request whose statement the database refused as too large."""
    return AWSError(
        "ValidationException",
        "The request is too large or too complex to be served: send fewer items or filter values in "
        "one request.",
    )


def _refuse_statements_too_large(engine: Engine) -> None:
    """A statement the database refuses as too large raises :func:`request_too_large` (an AWSError,
    answered 400 like any other refusal) instead of the driver's error, which would read as an outage
    (is_unavailable). SQLAlchemy rolls back and cleans up before the new exception is raised."""

    @event.listens_for(engine, "handle_error")
    def _too_large(context: Any) -> None:
        if too_large(context.original_exception):
            raise request_too_large() from context.original_exception


def in_chunks(values: Iterable[_T], size: int = MAX_IN) -> list[list[_T]]:
    """``values`` once each, in their first order, in lists of at most ``size``: one ``IN (...)`` list
    per statement, whatever the request names."""
    distinct = list(dict.fromkeys(values))
    return [distinct[start : start + size] for start in range(0, len(distinct), size)]


def create_database_engine(
    url: str,
    bounds: DatabaseBounds | None = None,
    turn: WriterTurn | None = None,
    clock: StatementClock | None = None,
) -> Engine:
    """An engine for ``url``; with ``bounds`` (a server's engine) every wait on the database is bounded.
    On SQLite, ``turn`` (the node's writers' turn, khoa.storage.turn) is taken by every writing
    transaction of the engine's connections, and ``clock`` times their statements.

    A server's engine (``bounds``) is never used on the event loop, SQLite's included: a file system
    that stops answering (frozen, a hung network mount) holds the thread in the kernel, where no
    timeout reaches, so the loop, the probes with it, would freeze. Threads that wait on it are given
    up on by the clock (khoa.blocking.run_unless_stuck)."""
    timeout = bounds.timeout_seconds if bounds else DEFAULT_TIMEOUT_SECONDS
    if url.startswith("sqlite"):
        sqlite_args: dict[str, Any] = {"check_same_thread": False, "timeout": timeout}
        if turn is not None:
            sqlite_args["factory"] = connection_class(turn, timeout, clock)
        # As many as PostgreSQL's: a worker's 8 request threads and its write thread may each hold one
        # while the audit writer, the jobs and the probes hold theirs.
        engine = create_engine(
            url,
            connect_args=sqlite_args,
            pool_size=8,
            max_overflow=8,
            pool_timeout=timeout,
        )
        event.listen(engine, "connect", _sqlite_pragmas(math.ceil(timeout * 1000)))
        if bounds is not None:
            _refuse_on_the_loop(engine)
        _refuse_statements_too_large(engine)
        return engine
    backend = make_url(url).get_backend_name()
    if backend == "postgresql":
        connect_args = postgres_connect_args(bounds)
    elif backend in ("mysql", "mariadb"):
        connect_args = mysql_connect_args(bounds)
    else:
        connect_args = {}
    engine = create_engine(
        url,
        pool_size=8,
        max_overflow=8,
        pool_pre_ping=True,
        pool_timeout=timeout,
        connect_args=connect_args,
    )
    _refuse_on_the_loop(engine)
    _refuse_statements_too_large(engine)
    if bounds is not None and engine.dialect.driver == "psycopg":
        from khoa.storage import watchdog  # here: it imports psycopg, which SQLite installations never use

        guard = watchdog.Watchdog(timeout + WATCHDOG_GRACE_SECONDS)

        @event.listens_for(engine, "do_connect")
        def _bounded_connect(_dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
            return watchdog.connect(guard, *cargs, **cparams)

    return engine


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database could not serve the call (down, silent, timed out, locked,
    out of connections): the caller should hear 503 and retry, not 500. A statement the request made
    too large (:func:`too_large`) is not: retrying it fails the same way."""
    if too_large(exc):
        return False
    if isinstance(exc, sqlalchemy.exc.OperationalError | sqlalchemy.exc.TimeoutError | DatabaseStuck):
        return True
    return isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated


def unavailable_error() -> AWSError:
    """The AWS-shaped 503 for a call the database could not serve (the same code as the audit
    trail's: SDKs retry it)."""
    return AWSError(
        "ServiceUnavailableException",
        "The database is unavailable or did not answer in time. Try again later.",
        503,
    )


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent; safe to run at every start)."""
    # Alembic is imported here, not with the module: CLI commands that only read (every `khoa` start
    # reads the settings, which import this module) need not pay for it.
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def first_account(conn: Connection) -> str | None:
    """The installation's first account (made at first start: the operator's), the oldest of them."""
    found = conn.execute(
        select(schema.accounts.c.account_id).order_by(schema.accounts.c.created_at).limit(1)
    ).scalar()
    return None if found is None else str(found)
