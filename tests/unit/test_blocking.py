"""khoa.blocking: a call tried on the event loop is stopped before it waits on a peer, and nothing
else is."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from sqlalchemy.exc import OperationalError

from khoa import outbound
from khoa.blocking import SingleFlight, WouldBlock, on_the_loop, refuse_on_the_loop
from khoa.storage.database import create_database_engine


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


def test_sqlite_is_read_on_the_loop(tmp_path: object) -> None:
    engine = create_database_engine(f"sqlite:///{tmp_path}/k.db")
    try:
        with on_the_loop(), engine.connect():
            pass
    finally:
        engine.dispose()


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
