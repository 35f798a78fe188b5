"""khoa.blocking: a call tried on the event loop is stopped before it waits on a peer, and nothing
else is."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy.exc import OperationalError

from khoa import outbound
from khoa.blocking import (
    DatabaseStuck,
    SingleFlight,
    StatementClock,
    WouldBlock,
    on_the_loop,
    refuse_on_the_loop,
    run_unless_stuck,
)
from khoa.storage.database import DatabaseBounds, create_database_engine, is_unavailable
from khoa.storage.turn import WriterTurn


def test_only_a_call_tried_on_the_loop_is_refused() -> None:
    refuse_on_the_loop("nothing")  # outside: no effect
    with pytest.raises(WouldBlock) as raised, on_the_loop():
        refuse_on_the_loop("the database")
    assert raised.value.what == "the database"
    assert not isinstance(raised.value, Exception)  # no `except Exception` may take it for a failure
    refuse_on_the_loop("nothing")  # the flag went with the block


def test_threads_the_loop_hands_work_to_are_never_refused() -> None:
    async def main() -> None:
        with on_the_loop():
            await asyncio.get_running_loop().run_in_executor(None, refuse_on_the_loop, "on a thread")

    asyncio.run(main())


def test_a_network_database_is_not_asked_for_a_connection_on_the_loop() -> None:
    engine = create_database_engine("postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    try:
        started = time.monotonic()
        with pytest.raises(WouldBlock), on_the_loop(), engine.connect():
            pass
        assert time.monotonic() - started < 0.5  # refused before any connection attempt
        assert engine.pool.checkedout() == 0
        with pytest.raises(OperationalError), engine.connect():  # elsewhere: tried, and refused by the OS
            pass
    finally:
        engine.dispose()


def test_a_tools_sqlite_engine_is_read_on_the_loop(tmp_path: object) -> None:
    engine = create_database_engine(f"sqlite:///{tmp_path}/k.db")
    try:
        with on_the_loop(), engine.connect():
            pass
    finally:
        engine.dispose()


def test_a_servers_sqlite_engine_is_never_used_on_the_loop(tmp_path: object) -> None:
    """A frozen file system holds an SQLite call in the kernel: on the loop, it would freeze the worker."""
    engine = create_database_engine(f"sqlite:///{tmp_path}/k.db", DatabaseBounds(), WriterTurn())
    try:
        with pytest.raises(WouldBlock), on_the_loop(), engine.connect():
            pass
        assert engine.pool.checkedout() == 0
        with engine.connect():  # on a thread (here: outside the loop's block) it is used as ever
            pass
    finally:
        engine.dispose()


def test_the_statement_clock_times_sqlite_statements(tmp_path: object) -> None:
    clock = StatementClock()
    engine = create_database_engine(f"sqlite:///{tmp_path}/k.db", DatabaseBounds(), WriterTurn(), clock)
    seen: list[bool] = []

    def peek() -> int:
        seen.append(clock.stuck(threading.get_ident(), -1.0))
        return 1

    try:
        with engine.connect() as conn:
            # a function the statement calls looks at the clock while the statement runs
            conn.connection.dbapi_connection.create_function("peek", 0, peek)  # type: ignore[union-attr]
            conn.exec_driver_sql("SELECT peek()").all()
            assert not clock.stuck(threading.get_ident(), -1.0)  # the statement is over
    finally:
        engine.dispose()
    assert seen == [True]


def _stuck_statement(clock: StatementClock, seconds: float, result: str = "late") -> str:
    """A statement the kernel holds for ``seconds`` (as a frozen file system holds SQLite's)."""
    clock.begin()
    try:
        time.sleep(seconds)
    finally:
        clock.end()
    return result


def test_a_call_held_in_one_statement_is_given_up_and_later_ones_are_refused_at_once() -> None:
    clock = StatementClock()
    bound = 0.3

    async def main() -> None:
        with ThreadPoolExecutor(2) as threads:
            started = time.monotonic()
            with pytest.raises(DatabaseStuck) as given_up:
                await run_unless_stuck(threads, clock, bound, _stuck_statement, clock, 1.5)
            assert bound < time.monotonic() - started < bound + 0.6
            assert is_unavailable(given_up.value)  # answered 503, as any database outage
            started = time.monotonic()
            with pytest.raises(DatabaseStuck):  # while it is held, a new call is not even queued
                await run_unless_stuck(threads, clock, bound, lambda: "never")
            assert time.monotonic() - started < 0.1
            await asyncio.sleep(1.5)  # the storage answers again: so do calls
            assert await run_unless_stuck(threads, clock, bound, lambda: "now") == "now"

    asyncio.run(main())


def test_work_queued_behind_a_stuck_thread_is_given_up_and_never_runs() -> None:
    clock = StatementClock()
    ran: list[str] = []

    async def main() -> None:
        with ThreadPoolExecutor(1) as threads:
            first = asyncio.ensure_future(run_unless_stuck(threads, clock, 0.3, _stuck_statement, clock, 1.0))
            await asyncio.sleep(0.05)
            with pytest.raises(DatabaseStuck):  # it waits in the queue until the thread is judged stuck
                await run_unless_stuck(threads, clock, 0.3, ran.append, "queued")
            with pytest.raises(DatabaseStuck):
                await first
        assert ran == []  # given up before it started: it never ran once the thread came back

    asyncio.run(main())


def test_a_long_call_of_short_statements_is_waited_for() -> None:
    clock = StatementClock()

    def many_statements() -> str:
        for _ in range(10):
            _stuck_statement(clock, 0.08)
        return "done"

    async def main() -> str:
        with ThreadPoolExecutor(1) as threads:
            return await run_unless_stuck(threads, clock, 0.3, many_statements)

    assert asyncio.run(main()) == "done"  # 0.8 s in all, no statement near the bound


def test_a_background_threads_long_statement_holds_no_caller() -> None:
    clock = StatementClock()
    background = threading.Thread(target=_stuck_statement, args=(clock, 0.8))
    background.start()
    try:
        time.sleep(0.4)  # past the bound, but not on a thread anybody waits on

        async def main() -> str:
            return await run_unless_stuck(None, clock, 0.3, lambda: "served")

        assert asyncio.run(main()) == "served"
    finally:
        background.join()


def test_outbound_calls_are_refused_on_the_loop() -> None:
    with pytest.raises(WouldBlock), on_the_loop():
        outbound.exchange("http://127.0.0.1:1/", b"{}", headers={}, timeout=1)
    with pytest.raises(WouldBlock), on_the_loop():
        outbound.post("http://127.0.0.1:1/", {}, timeout=1)


def test_single_flight_shares_the_run_in_flight_and_leaves_it_to_finish() -> None:
    release = threading.Event()
    runs: list[int] = []

    def slow() -> int:
        runs.append(1)
        release.wait(30)
        return len(runs)

    flight = SingleFlight(slow, "test-flight")
    try:
        with pytest.raises(TimeoutError):
            flight.result_within(0.05)
        with pytest.raises(TimeoutError):
            asyncio.run(flight.answer_within(0.05))
        assert runs == [1]  # the second caller waited on the first run, it did not start another
        release.set()
        assert flight.result_within(5) == 1  # the run left behind finished; its result is shared
        assert asyncio.run(flight.answer_within(5)) == 2  # a run that is done is not reused
    finally:
        release.set()
        flight.close()


def test_single_flight_raises_the_runs_error_to_its_callers() -> None:
    def failing() -> None:
        raise OperationalError("SELECT 1", {}, Exception("down"))

    flight = SingleFlight(failing, "test-flight")
    try:
        with pytest.raises(OperationalError):
            flight.result_within(5)
    finally:
        flight.close()


def test_a_stuck_thread_turns_away_only_its_own_executors_work() -> None:
    """One request thread held by the storage (or by a long statement) leaves its siblings' and other
    executors' work alone: only work that would queue behind it is refused at once."""
    clock = StatementClock()

    async def main() -> None:
        with ThreadPoolExecutor(1) as writes, ThreadPoolExecutor(2) as reads:
            held = asyncio.ensure_future(run_unless_stuck(writes, clock, 0.2, _stuck_statement, clock, 1.0))
            await asyncio.sleep(0.4)  # past the bound: the write thread is stuck
            assert await run_unless_stuck(reads, clock, 0.2, lambda: "read") == "read"
            with pytest.raises(DatabaseStuck):
                await run_unless_stuck(writes, clock, 0.2, lambda: "never")
            with pytest.raises(DatabaseStuck):
                await held

    asyncio.run(main())
