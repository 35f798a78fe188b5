"""The writers' turn on an SQLite file (khoa.storage.turn): every writing transaction of the engine
queues for it, reads never do, and no wait outlives the database bound."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from khoa.audit.events import AuditEvent, background
from khoa.audit.recorder import AuditRecorder
from khoa.storage import schema
from khoa.storage.database import DatabaseBounds, create_database_engine
from khoa.storage.turn import TurnUnavailable, WriterTurn


def _engine(path: Path, turn: WriterTurn, seconds: float = 0.3) -> Engine:
    engine = create_database_engine(f"sqlite:///{path}", DatabaseBounds(seconds, seconds), turn)
    schema.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
    return engine


def test_a_writing_transaction_holds_the_turn_from_its_first_write_to_its_end(tmp_path: Path) -> None:
    turn = WriterTurn.for_database(str(tmp_path / "k.db"), processes=2)
    engine = _engine(tmp_path / "k.db", turn)
    other = WriterTurn.for_database(str(tmp_path / "k.db"), processes=2)  # another process's
    try:
        with engine.begin() as conn:
            conn.execute(text("SELECT count(*) FROM t"))
            other.take_within(1.0)  # a read takes nothing
            other.end()
            conn.execute(text("INSERT INTO t VALUES (1)"))
            with pytest.raises(TurnUnavailable):
                other.take_within(0.1)  # held by the transaction's write
        other.take_within(1.0)  # committed: handed over
        other.end()
        with pytest.raises(ValueError), engine.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (2)"))
            raise ValueError
        other.take_within(1.0)  # rolled back: handed over
        other.end()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 1
    finally:
        engine.dispose()
        turn.close()
        other.close()


def test_a_write_waits_for_the_turn_at_most_the_bound_then_writes_once_it_is_free(tmp_path: Path) -> None:
    turn = WriterTurn.for_database(str(tmp_path / "k.db"), processes=2)
    engine = _engine(tmp_path / "k.db", turn, seconds=0.3)
    other = WriterTurn.for_database(str(tmp_path / "k.db"), processes=2)
    try:
        other.take()  # a sibling process stopped while writing
        started = time.monotonic()
        with pytest.raises(Exception, match="database is locked"), engine.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (1)"))
        assert time.monotonic() - started < 2.0
        threading.Timer(0.05, other.end).start()  # freed within the bound: the write goes in
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (2)"))
        other.take_within(1.0)  # and the turn was handed back after it
        other.end()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT x FROM t")).scalars().all() == [2]
    finally:
        engine.dispose()
        turn.close()
        other.close()


def test_the_audit_writer_and_a_job_share_the_turn(tmp_path: Path) -> None:
    """The audit writer's commit waits for a writing transaction of another thread in the turn (not
    in SQLite's busy handler), then commits; a job records its work outside its transactions."""
    turn = WriterTurn.for_database(str(tmp_path / "k.db"), processes=1)
    engine = _engine(tmp_path / "k.db", turn, seconds=2.0)
    recorder = AuditRecorder(engine, turn=turn, turn_seconds=2.0)
    written = threading.Event()

    def event() -> AuditEvent:
        return background(
            service="kms",
            event_name="DeleteKey",
            account_id="111122223333",
            region="us-east-1",
            now=datetime.now(UTC),
            details={},
        )

    def record() -> None:
        recorder.write([event()])
        written.set()

    try:
        recorder.write([event()])
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (1)"))
            writer = threading.Thread(target=record)
            writer.start()
            assert not written.wait(0.2)  # queued behind this transaction
        assert written.wait(2.0)
        writer.join()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM audit_events")).scalar() == 2
    finally:
        recorder.close()
        engine.dispose()
        turn.close()


def test_a_transaction_begun_for_writing_and_ended_as_text_takes_and_ends_the_turn(tmp_path: Path) -> None:
    turn = WriterTurn.for_database(str(tmp_path / "k.db"), processes=2)
    engine = _engine(tmp_path / "k.db", turn)
    other = WriterTurn.for_database(str(tmp_path / "k.db"), processes=2)
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("BEGIN IMMEDIATE")  # SQLite's write lock, before any write statement
        with pytest.raises(TurnUnavailable):
            other.take_within(0.1)
        cursor.execute("INSERT INTO t VALUES (1)")
        cursor.execute("COMMIT")
        other.take_within(1.0)  # ended with the transaction
        other.end()
    finally:
        raw.close()
        engine.dispose()
        turn.close()
        other.close()
