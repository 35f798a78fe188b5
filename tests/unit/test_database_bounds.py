"""The database bounds: what the engine asks of PostgreSQL and SQLite, the watchdog that cuts off a
call on a silent socket, and which errors mean "unavailable" (503) rather than a bug (500).

No timing assertions here (the resilience test, tests/integration/test_database_faults.py, measures).
"""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest
import sqlalchemy.exc
from sqlalchemy import text

from khoa.protocol.errors import AWSError
from khoa.storage.database import (
    DatabaseBounds,
    create_database_engine,
    is_unavailable,
    postgres_connect_args,
    unavailable_error,
)
from khoa.storage.watchdog import Watchdog


def test_postgres_bounds_reach_libpq() -> None:
    args = postgres_connect_args(DatabaseBounds(timeout_seconds=1.5, connect_timeout_seconds=0.5))
    assert args["connect_timeout"] == 2  # libpq's least, in whole seconds
    assert args["keepalives"] == 1
    assert args["keepalives_idle"] == 2 and args["keepalives_interval"] == 1 and args["keepalives_count"] == 3
    assert args["tcp_user_timeout"] == 2000  # milliseconds: the bound and the watchdog's grace
    options = args["options"].split()
    assert "statement_timeout=1500" in options
    assert "lock_timeout=1500" in options
    assert "idle_in_transaction_session_timeout=9000" in options


def test_tools_without_bounds_get_no_statement_timeout() -> None:
    """A command-line tool may run a long statement (verifying a large trail); it still never waits
    forever to connect or on a dead socket."""
    args = postgres_connect_args(None)
    assert "options" not in args
    assert args["connect_timeout"] == 3
    assert args["tcp_user_timeout"] > 0 and args["keepalives"] == 1


def test_sqlite_busy_timeout_follows_the_bound(tmp_path: Any) -> None:
    engine = create_database_engine(f"sqlite:///{tmp_path / 'khoa.db'}", DatabaseBounds(timeout_seconds=2.5))
    try:
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 2500
        assert engine.pool.timeout() == 2.5  # type: ignore[attr-defined]
    finally:
        engine.dispose()


def test_which_errors_mean_unavailable() -> None:
    assert is_unavailable(sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("server closed")))
    assert is_unavailable(sqlalchemy.exc.TimeoutError("QueuePool limit reached"))
    assert not is_unavailable(sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("duplicate key")))
    assert not is_unavailable(ValueError("a bug"))
    error = unavailable_error()
    assert (error.code, error.status) == ("ServiceUnavailableException", 503)


class _DriverError(Exception):
    """A driver's exception as psycopg raises it: a message, and PostgreSQL's SQLSTATE when it has one."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def test_statements_the_request_made_too_large_are_not_an_outage() -> None:
    """A statement the database refuses as too large or too complex fails the same way on every retry:
    the caller's to change, never 503 (which SDKs retry and operators read as the database down)."""

    def operational(message: str, sqlstate: str | None = None) -> sqlalchemy.exc.OperationalError:
        return sqlalchemy.exc.OperationalError("SELECT", {}, _DriverError(message, sqlstate))

    too_large = [
        operational("Expression tree is too large (maximum depth 1000)"),
        operational("too many SQL variables"),
        operational("sending query and params failed: number of parameters must be between 0 and 65535"),
        operational("stack depth limit exceeded", "54001"),
        operational("cannot pass more than 100 arguments to a function", "54023"),
    ]
    for error in too_large:
        assert not is_unavailable(error), error
    outages = [
        operational("database is locked"),
        operational("disk I/O error"),
        operational("connection to server at 127.0.0.1, port 5432 failed: Connection refused"),
        operational("server closed the connection unexpectedly"),
        operational("canceling statement due to statement timeout", "57014"),
        operational("out of memory", "53200"),
    ]
    for error in outages:
        assert is_unavailable(error), error


def test_a_statement_too_large_for_sqlite_is_refused_as_the_callers(tmp_path: Any) -> None:
    engine = create_database_engine(f"sqlite:///{tmp_path / 'khoa.db'}", DatabaseBounds())
    try:
        with pytest.raises(AWSError) as refused, engine.connect() as conn:
            conn.execute(text("SELECT 1 WHERE " + " AND ".join(["1 = 1"] * 1200)))
        assert (refused.value.code, refused.value.status) == ("ValidationException", 400)
        with engine.connect() as conn:  # the connection is fine: the next call works
            assert conn.execute(text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_a_statement_too_large_for_postgres_is_refused_as_the_callers(postgres_url: str) -> None:
    engine = create_database_engine(postgres_url, DatabaseBounds())
    try:
        many = ", ".join(["%s"] * 70_000)
        with pytest.raises(AWSError) as refused, engine.connect() as conn:  # libpq: at most 65,535
            conn.exec_driver_sql(f"SELECT 1 WHERE 1 IN ({many})", tuple(range(70_000)))
        assert (refused.value.code, refused.value.status) == ("ValidationException", 400)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()


def test_the_watchdog_shuts_a_socket_whose_call_outlives_the_bound() -> None:
    watchdog = Watchdog(bound_seconds=0.2)
    waiting, peer = socket.socketpair()
    received: list[bytes] = []
    try:

        def blocked_call() -> None:
            with watchdog.guard(waiting.fileno()):
                received.append(waiting.recv(10))  # the peer never answers

        thread = threading.Thread(target=blocked_call)
        thread.start()
        thread.join(timeout=30)
        assert not thread.is_alive(), "the watchdog did not end the call"
        assert received == [b""]  # the socket was shut: the read sees the end of the stream
        assert watchdog.fired == 1
    finally:
        watchdog.stop()
        waiting.close()
        peer.close()


def test_the_watchdog_leaves_calls_that_finish_in_time_alone() -> None:
    watchdog = Watchdog(bound_seconds=60)
    left, right = socket.socketpair()
    try:
        with watchdog.guard(left.fileno()):
            right.sendall(b"answer")
            assert left.recv(10) == b"answer"
        left.sendall(b"still open")
        assert right.recv(20) == b"still open"
        assert watchdog.fired == 0
    finally:
        watchdog.stop()
        left.close()
        right.close()


@pytest.mark.postgres
def test_postgres_statements_are_cut_off_at_the_bound(postgres_url: str) -> None:
    engine = create_database_engine(postgres_url, DatabaseBounds(timeout_seconds=0.5))
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SHOW statement_timeout")).scalar() == "500ms"
            assert conn.execute(text("SHOW lock_timeout")).scalar() == "500ms"
        with pytest.raises(sqlalchemy.exc.OperationalError) as cancelled, engine.connect() as conn:
            conn.execute(text("SELECT pg_sleep(30)"))
        assert is_unavailable(cancelled.value)
        with engine.connect() as conn:  # the pool recovers: the next call works
            assert conn.execute(text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()
