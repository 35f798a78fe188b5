"""Outage signals: rate-limited logging, the trail's write probe, and calls whose outcome was lost."""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, func, insert, select, update

from khoa.alerts.config import AUDIT_DELIVERY_FAILING, STORAGE_LOW, AlertSettings
from khoa.alerts.context import PassContext
from khoa.alerts.rules import AuditDeliveryFailing, StorageLow
from khoa.audit import delivery as delivery_module
from khoa.audit.delivery import GAP_SECONDS, Delivery
from khoa.audit.events import AuditEvent, build
from khoa.audit.files import AuditFiles
from khoa.audit.health import TrailHealth
from khoa.audit.outcomes import (
    OUTCOME_WAIT_SECONDS,
    PENDING_KEY,
    UNKNOWN_CODE,
    LostOutcomeSweep,
    Writer,
    mark_lost_outcomes,
    unknown_outcome,
)
from khoa.audit.recorder import AuditRecorder, encode_record, rows_for
from khoa.audit.trail import AuditTrail
from khoa.cli.audit import format_event
from khoa.crypto.barrier import ROOT_KEY_BYTES, Barrier
from khoa.logs import LogLimiter
from khoa.observe.health import readiness
from khoa.observe.metrics import Metrics
from khoa.settings import Settings
from khoa.storage import schema
from khoa.storage.database import create_database_engine, migrate

NOW = datetime(2031, 6, 1, tzinfo=UTC)


# -- LogLimiter -----------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_limiter_logs_once_per_interval_with_a_count(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    limiter = LogLimiter(logging.getLogger("khoa.test"), interval=60.0, clock=clock)
    with caplog.at_level(logging.INFO, logger="khoa.test"):
        assert limiter.error("db", "request %s failed", "r1")
        for n in range(500):
            clock.now = n * 0.1
            assert not limiter.error("db", "request %s failed", f"r{n}")
        assert limiter.error("other", "something else")  # keys are counted apart
        clock.now = 61.0
        assert limiter.error("db", "request %s failed", "r-late")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "request r1 failed",
        "something else",
        "request r-late failed (and 500 more like it in the last 60 s)",
    ]


def test_limiter_attaches_the_traceback_only_to_logged_lines(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    limiter = LogLimiter(logging.getLogger("khoa.test"), interval=10.0, clock=clock)
    with caplog.at_level(logging.ERROR, logger="khoa.test"):
        for _ in range(100):
            try:
                raise OSError(28, "No space left on device")
            except OSError:
                limiter.exception("disk", "write failed")
    assert len(caplog.records) == 1
    assert caplog.records[0].exc_info is not None


def test_limiter_recovery_is_logged_and_resets(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    limiter = LogLimiter(logging.getLogger("khoa.test"), interval=60.0, clock=clock)
    with caplog.at_level(logging.INFO, logger="khoa.test"):
        limiter.recovered("db", "works again")  # never failed: nothing to say
        limiter.error("db", "down")
        limiter.error("db", "down")
        limiter.recovered("db", "works again")
        limiter.error("db", "down")  # a new outage is reported at once
    assert [r.getMessage() for r in caplog.records] == [
        "down",
        "works again (after 1 more failures not logged)",
        "down",
    ]


# -- the trail's health ----------------------------------------------------------------------------


@pytest.fixture
def engine() -> Iterator[Engine]:
    engine = create_engine("sqlite://")
    schema.metadata.create_all(engine)
    yield engine
    engine.dispose()


def test_probe_finds_an_unwritable_audit_directory(tmp_path: Path) -> None:
    audit_dir = tmp_path / "audit"
    audit_dir.write_text("a file where the directory should be")  # fails even for root
    health = TrailHealth(audit_dir, probe_seconds=0.0)
    problem = health.problem()
    assert problem is not None and str(audit_dir) in problem
    assert health.failures == 1
    assert health.known_problem() == problem
    audit_dir.unlink()
    assert health.problem() is None
    assert health.known_problem() is None
    assert not (audit_dir / ".staging").exists() or not any((audit_dir / ".staging").iterdir())


def test_readiness_probes_the_disk_afresh(tmp_path: Path) -> None:
    """The trail's probe answers from its latest finding for a while (alerts, metrics), but readiness
    asks the disk now: a probe from before a disk froze or filled must not answer for it."""
    audit_dir = tmp_path / "audit"
    health = TrailHealth(audit_dir, probe_seconds=3600.0)
    recorder = AuditRecorder(create_engine("sqlite://"), trail=health)
    try:
        assert health.problem() is None
        shutil.rmtree(audit_dir)
        audit_dir.write_text("a file where the directory should be")  # fails even for root
        assert health.problem() is None  # the latest probe's finding, within its hour
        problem = recorder.trail_problem()
        assert problem is not None and str(audit_dir) in problem
    finally:
        recorder.close()


def test_probe_covers_the_sqlite_directory(tmp_path: Path) -> None:
    database_dir = tmp_path / "db"
    database_dir.write_text("")
    health = TrailHealth(tmp_path / "audit", database_dir, probe_seconds=0.0)
    problem = health.problem()
    assert problem is not None and problem.startswith("the database directory")


def test_delivery_failures_make_readiness_and_metrics_say_so(engine: Engine, tmp_path: Path) -> None:
    health = TrailHealth(tmp_path / "audit")
    recorder = AuditRecorder(engine, trail=health)
    metrics = Metrics(trail=health)
    try:
        assert readiness(engine, recorder)[0] == 200
        assert b"khoa_audit_delivery_failing 0.0" in metrics.render()
        health.delivery_failed("audit trail delivery failed: No space left on device")
        status, body = readiness(engine, recorder)
        assert status == 503
        assert body["audit"] == "delivery-failing"
        assert "No space left on device" in body["reason"]
        text = metrics.render()
        assert b"khoa_audit_delivery_failing 1.0" in text
        assert b"khoa_audit_delivery_errors_total 1.0" in text
        health.delivery_succeeded()
        assert readiness(engine, recorder)[0] == 200
    finally:
        recorder.close()


def test_delivery_failing_rule_raises_once_per_cooldown(engine: Engine) -> None:
    settings = AlertSettings(audit_delivery_cooldown_seconds=300.0)
    rule = AuditDeliveryFailing(settings)

    def tick(at: float, problem: str | None) -> list[str]:
        ctx = PassContext(engine, at, settings, "111122223333", "us-east-1", audit_delivery_problem=problem)
        rule.tick(ctx)
        return [alert.rule for alert in ctx.alerts]

    assert tick(0.0, None) == []
    assert tick(10.0, "the audit directory /x is not writable: No space left on device") == [
        AUDIT_DELIVERY_FAILING
    ]
    assert tick(20.0, "still") == []
    assert tick(400.0, "still") == [AUDIT_DELIVERY_FAILING]
    assert tick(410.0, None) == []
    assert tick(420.0, "again") == [AUDIT_DELIVERY_FAILING]  # a new failure alerts at once


def _disk(free: int, size: int) -> os.statvfs_result:
    """What os.statvfs answers for a file system of ``size`` bytes with ``free`` available."""
    return os.statvfs_result((4096, 4096, size // 4096, free // 4096, free // 4096, 0, 0, 0, 0, 255))


def test_free_space_is_measured_and_low_space_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    health = TrailHealth(tmp_path / "audit", tmp_path, probe_seconds=0.0)
    gib = 1024**3
    disks = {"small": _disk(5 * 1024**2, 100 * 1024**2), "large": _disk(3 * gib, 10_000 * gib)}
    shown = {"now": _disk(50 * 1024**2, 100 * 1024**2)}
    monkeypatch.setattr(os, "statvfs", lambda _path: shown["now"])
    assert health.low_space() is None  # half free
    assert health.space() == {
        "audit": (50 * 1024**2, 100 * 1024**2),
        "database": (50 * 1024**2, 100 * 1024**2),
    }
    metrics = Metrics(trail=health)
    assert b'khoa_storage_free_bytes{directory="database"} 5.24288e+07' in metrics.render()
    shown["now"] = disks["small"]  # 5 % of a small disk: under a tenth
    low = health.low_space()
    assert low is not None and "5.0 MiB free of 100.0 MiB" in low and "database" in low
    shown["now"] = disks["large"]  # 3 GiB of 10 TB: under a tenth, but more than 2 GiB
    assert health.low_space() is None
    shown["now"] = _disk(gib, 10_000 * gib)
    assert health.low_space() is not None
    shown["now"] = _disk(512 * 1024, 100 * 1024**2)  # under 1 MiB available: full, not ready
    assert "file system is full" in (health.problem() or "")
    shown["now"] = _disk(0, 0)  # a file system that reports no size (some FUSE ones): no finding
    assert health.problem() is None and health.low_space() is None


def test_storage_low_rule_raises_once_an_hour_while_it_lasts(engine: Engine) -> None:
    settings = AlertSettings()
    rule = StorageLow(settings)

    def tick(at: float, low: str | None) -> list[tuple[str, str]]:
        ctx = PassContext(engine, at, settings, "111122223333", "us-east-1", storage_low=low)
        rule.tick(ctx)
        return [(alert.rule, alert.severity) for alert in ctx.alerts]

    assert tick(0.0, None) == []
    assert tick(10.0, "the database directory's file system has 5.0 MiB free") == [(STORAGE_LOW, "high")]
    assert tick(20.0, "still") == []
    assert tick(3700.0, "still") == [(STORAGE_LOW, "high")]
    assert tick(3710.0, None) == []
    assert tick(3720.0, "again") == [(STORAGE_LOW, "high")]  # a new shortage alerts at once


# -- outcomes lost to a crash ----------------------------------------------------------------------


def _write(operation: str = "PutSecretValue", now: datetime = NOW) -> AuditEvent:
    return build(
        model=None,
        service="secretsmanager",
        operation=operation,
        region="us-east-1",
        request_id="req",
        principal=None,
        access_key_id="AKIAEXAMPLE",
        source_ip="10.0.0.1",
        user_agent="test",
        params=None,
        result=None,
        error_code=None,
        error_message=None,
        now=now,
        recipient_account="111122223333",
    )


def _dead_pid() -> int:
    """The id of a process that has exited."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True
    )
    return int(done.stdout)


def _record(engine: Engine, event_id: str) -> tuple[dict[str, object], str | None]:
    with engine.connect() as conn:
        row = conn.execute(
            select(schema.audit_events.c.record, schema.audit_events.c.error_code).where(
                schema.audit_events.c.event_id == event_id
            )
        ).one()
    return json.loads(row.record), row.error_code


def test_outcome_lost_to_a_crash_is_marked_unknown(engine: Engine) -> None:
    me = Writer.this_process()
    dead = Writer(me.host, _dead_pid(), "deadbeef")
    earlier_me = Writer(me.host, os.getpid(), "0ldt0ken")  # an earlier process that had this id
    alive = Writer(me.host, os.getppid(), "cafe0000")
    elsewhere = Writer("otherhost000", _dead_pid(), "beefcafe")
    lost, reused, running, remote, completed = (_write() for _ in range(5))
    dead.mark_pending(lost)
    earlier_me.mark_pending(reused)
    alive.mark_pending(running)
    elsewhere.mark_pending(remote)
    events = [lost, reused, running, remote, completed]
    with engine.begin() as conn:
        conn.execute(insert(schema.audit_events), rows_for(events))

    assert mark_lost_outcomes(engine, me) == 2
    assert mark_lost_outcomes(engine, me) == 0  # done once
    for event in (lost, reused):
        record, code = _record(engine, event.event_id)
        assert code == UNKNOWN_CODE
        assert record["errorCode"] == UNKNOWN_CODE
        assert record["additionalEventData"] == {"outcome": "unknown"}
        assert UNKNOWN_CODE in format_event(record).plain  # what `khoa audit tail` prints
    for event in (running, remote):
        record, code = _record(engine, event.event_id)
        data = record["additionalEventData"]
        assert code is None and isinstance(data, dict) and PENDING_KEY in data
    assert _record(engine, completed.event_id)[1] is None


def test_delivered_events_are_left_alone(engine: Engine) -> None:
    """A delivered record is hashed into its file: its row must keep matching it."""
    me = Writer.this_process()
    lost = _write()
    Writer(me.host, _dead_pid(), "deadbeef").mark_pending(lost)
    with engine.begin() as conn:
        conn.execute(insert(schema.audit_events), rows_for([lost]))
        conn.execute(
            insert(schema.audit_delivery).values(name="trail", delivered_seq=1, held="[]", updated_at=0.0)
        )
    assert mark_lost_outcomes(engine, me) == 0


def test_unknown_outcome_keeps_other_details() -> None:
    record: dict[str, object] = {"eventName": "X", "additionalEventData": {"keep": 1, PENDING_KEY: "h:1:t"}}
    marked = unknown_outcome(record)
    assert marked["additionalEventData"] == {"keep": 1, "outcome": "unknown"}
    assert marked["errorCode"] == UNKNOWN_CODE
    assert record["additionalEventData"] == {"keep": 1, PENDING_KEY: "h:1:t"}  # not changed in place


# -- delivery never signs a record that still waits for its outcome --------------------------------

T = NOW.timestamp()


def _completed(event: AuditEvent) -> AuditEvent:
    """``event``'s outcome, as the call's second record replaces its first (same event ID)."""
    done = build(
        model=None,
        service="secretsmanager",
        operation=event.event_name,
        region="us-east-1",
        request_id="req",
        principal=None,
        access_key_id="AKIAEXAMPLE",
        source_ip="10.0.0.1",
        user_agent="test",
        params=None,
        result={"VersionId": "v2"},
        error_code=None,
        error_message=None,
        now=datetime.fromtimestamp(event.event_time, UTC),
        recipient_account="111122223333",
        event_id=event.event_id,
    )
    assert PENDING_KEY not in json.dumps(done.record)
    return done


def _complete(engine: Engine, event: AuditEvent) -> AuditEvent:
    """The call's outcome arrives (what the recorder's UPDATE of a completed event writes)."""
    done = _completed(event)
    with engine.begin() as conn:
        conn.execute(
            update(schema.audit_events)
            .where(schema.audit_events.c.event_id == event.event_id)
            .values(record=encode_record(done.record), error_code=None)
        )
    return done


def _insert(engine: Engine, events: list[AuditEvent], seqs: list[int] | None = None) -> None:
    rows = rows_for(events)
    if seqs is not None:
        for row, seq in zip(rows, seqs, strict=True):
            row["seq"] = seq
    with engine.begin() as conn:
        conn.execute(insert(schema.audit_events), rows)


def _delivery(engine: Engine, tmp_path: Path, writer: Writer | None = None) -> Delivery:
    return Delivery(engine, AuditFiles(engine, tmp_path / "audit"), renew=lambda: None, writer=writer)


def _newest(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.max(schema.audit_events.c.seq))).scalar_one())


def _in_files(tmp_path: Path) -> dict[str, dict[str, Any]]:
    """Every delivered record by event ID (each delivered once)."""
    records: dict[str, dict[str, Any]] = {}
    for path in (tmp_path / "audit").glob("AWSLogs/*/CloudTrail/**/*.json.gz"):  # not digests
        for record in json.loads(gzip.decompress(path.read_bytes()))["Records"]:
            assert record["eventID"] not in records, "delivered twice"
            records[record["eventID"]] = record
    return records


def _rows_match_files(engine: Engine, tmp_path: Path) -> dict[str, dict[str, Any]]:
    """The delivered records, each checked to be its row's record (the database agrees with the
    signed trail), none of them waiting for an outcome."""
    delivered = _in_files(tmp_path)
    for event_id, record in delivered.items():
        row, code = _record(engine, event_id)
        assert row == record
        assert code == record.get("errorCode")
        assert PENDING_KEY not in json.dumps(record)
    return delivered


def test_delivery_delivers_a_lost_outcome_as_unknown_and_changes_its_row_alike(
    engine: Engine, tmp_path: Path
) -> None:
    me = Writer.this_process()
    before, lost, after = _write(), _write(), _write()
    Writer(me.host, _dead_pid(), "deadbeef").mark_pending(lost)  # this host's, gone
    _insert(engine, [before, lost, after])
    delivery = _delivery(engine, tmp_path, me)
    delivery.deliver(T + 5, _newest(engine))

    delivered = _rows_match_files(engine, tmp_path)
    assert set(delivered) == {before.event_id, lost.event_id, after.event_id}
    assert delivered[lost.event_id]["errorCode"] == UNKNOWN_CODE
    assert delivered[lost.event_id]["additionalEventData"] == {"outcome": "unknown"}
    assert "errorCode" not in delivered[before.event_id]
    assert delivery.waiting is None
    assert delivery.state().delivered_seq == _newest(engine) and delivery.state().held == {}


def test_delivery_waits_for_an_outcome_that_may_still_come(engine: Engine, tmp_path: Path) -> None:
    """A record whose writer may still be running holds delivery back: the events before it are
    delivered, it and those after it wait, and are delivered once the outcome has arrived. A
    writer that cannot be checked (another host's) is waited for until OUTCOME_WAIT_SECONDS."""
    me = Writer.this_process()
    first, running, then, remote, last = (_write() for _ in range(5))
    Writer.this_process().mark_pending(running)  # this very process: alive (one writer per process)
    Writer("otherhost000", _dead_pid(), "beefcafe").mark_pending(remote)
    _insert(engine, [first, running, then, remote, last])
    delivery = _delivery(engine, tmp_path)  # this process's writer, as the server's
    assert delivery.writer is me

    delivery.deliver(T + 30, _newest(engine))
    assert set(_rows_match_files(engine, tmp_path)) == {first.event_id}
    assert delivery.waiting == delivery.state().delivered_seq + 1  # the cursor stops just before it
    delivery.deliver(T + 60, _newest(engine))  # still running: still waiting
    assert set(_in_files(tmp_path)) == {first.event_id}

    done = _complete(engine, running)
    delivery.deliver(T + 61, _newest(engine))
    delivered = _rows_match_files(engine, tmp_path)
    assert set(delivered) == {first.event_id, running.event_id, then.event_id}  # remote's is young
    assert delivered[running.event_id] == done.record and "errorCode" not in delivered[running.event_id]

    delivery.deliver(T + OUTCOME_WAIT_SECONDS - 1, _newest(engine))
    assert remote.event_id not in _in_files(tmp_path)
    delivery.deliver(T + OUTCOME_WAIT_SECONDS, _newest(engine))
    delivered = _rows_match_files(engine, tmp_path)
    assert set(delivered) == {e.event_id for e in (first, running, then, remote, last)}
    assert delivered[remote.event_id]["errorCode"] == UNKNOWN_CODE
    assert delivery.waiting is None and delivery.state().delivered_seq == _newest(engine)


def test_a_late_record_still_waiting_for_its_outcome_stays_held(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A number the cursor passed before its transaction committed (PostgreSQL) that turns out to
    be a record waiting for its outcome is held past the gap's wait, until the outcome comes."""
    monkeypatch.setattr(delivery_module, "MAX_RECORDS_PER_FILE", 10)
    one, late, three = _write(), _write(), _write()
    Writer.this_process().mark_pending(late)
    _insert(engine, [one, three], seqs=[1, 3])
    delivery = _delivery(engine, tmp_path)
    delivery.deliver(T + 1, 3)
    assert set(delivery.state().held) == {2}
    _insert(engine, [late], seqs=[2])  # committed late, its call still running

    for at in (T + 2, T + GAP_SECONDS + 10, T + 3 * GAP_SECONDS):
        delivery.deliver(at, 3)
        assert set(delivery.state().held) == {2} and delivery.state().delivered_seq == 3
        assert late.event_id not in _in_files(tmp_path)
    done = _complete(engine, late)
    delivery.deliver(T + 3 * GAP_SECONDS + 1, 3)
    delivered = _rows_match_files(engine, tmp_path)
    assert delivered[late.event_id] == done.record
    assert delivery.state().held == {}


def test_an_outcome_that_arrives_while_delivery_is_at_work_wins(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    late_answer = _write()
    Writer("otherhost000", 4242, "beefcafe").mark_pending(late_answer)  # waited past the bound
    _insert(engine, [late_answer])
    delivery = _delivery(engine, tmp_path)
    judge = delivery._outcomes
    arrived: list[AuditEvent] = []

    def outcome_arrives_meanwhile(*args: Any, **kwargs: Any) -> Any:
        judged = judge(*args, **kwargs)
        if not arrived:
            arrived.append(_complete(engine, late_answer))
        return judged

    monkeypatch.setattr(delivery, "_outcomes", outcome_arrives_meanwhile)
    delivery.deliver(T + OUTCOME_WAIT_SECONDS + 1, _newest(engine))
    delivered = _rows_match_files(engine, tmp_path)
    assert delivered[late_answer.event_id] == arrived[0].record  # not "unknown": the outcome won
    assert delivery.state().delivered_seq == _newest(engine)


def test_the_leaders_sweep_marks_lost_outcomes_every_pass(engine: Engine) -> None:
    me = Writer.this_process()
    dead, running, remote, remote_old = _write(), _write(), _write(), _write(now=NOW - timedelta(hours=1))
    Writer(me.host, _dead_pid(), "deadbeef").mark_pending(dead)
    me.mark_pending(running)
    Writer("otherhost000", 4242, "beefcafe").mark_pending(remote)
    Writer("otherhost000", 4242, "beefcafe").mark_pending(remote_old)
    _insert(engine, [dead, running, remote, remote_old])
    sweep = LostOutcomeSweep(engine, me)

    assert sweep.run(NOW + timedelta(seconds=5)) == 2  # gone, and waited past the bound
    assert _record(engine, dead.event_id)[1] == UNKNOWN_CODE
    assert _record(engine, remote_old.event_id)[1] == UNKNOWN_CODE
    assert _record(engine, running.event_id)[1] is None and _record(engine, remote.event_id)[1] is None

    later = _write()
    Writer(me.host, _dead_pid(), "0dead0ff").mark_pending(later)
    _insert(engine, [later])  # recorded after that pass: the next one finds it
    assert sweep.run(NOW + timedelta(seconds=15)) == 1
    assert _record(engine, later.event_id)[1] == UNKNOWN_CODE
    _complete(engine, running)  # its outcome came
    # The ones it found waiting are looked at again: the remote one has waited past the bound.
    assert sweep.run(NOW + timedelta(seconds=OUTCOME_WAIT_SECONDS + 1)) == 1
    assert _record(engine, remote.event_id)[1] == UNKNOWN_CODE
    assert _record(engine, running.event_id)[1] is None
    assert sweep.run(NOW + timedelta(seconds=OUTCOME_WAIT_SECONDS + 20)) == 0


def test_the_leaders_pass_stops_before_a_call_still_running_and_tries_again_next_pass(
    tmp_path: Path,
) -> None:
    """The leader's delivery stops just before a write whose outcome is not in yet; its next pass
    (not only the next delivery interval) delivers it, with its outcome, and what came after it.
    ``khoa audit digest`` stops there too, and says where."""
    engine = create_database_engine(f"sqlite:///{tmp_path / 'khoa.db'}")
    migrate(engine)
    try:
        settings = Settings(data_dir=tmp_path, audit_delivery_seconds=300.0)
        barrier = Barrier(os.urandom(ROOT_KEY_BYTES))
        trail = AuditTrail(engine, barrier, settings)
        trail.job_settle_seconds = 0.0
        first, running, then = _write(), _write(), _write()
        Writer.this_process().mark_pending(running)  # this process: alive
        _insert(engine, [first, running, then])

        trail.run_job(NOW + timedelta(seconds=10))  # notes the newest event
        trail.run_job(NOW + timedelta(seconds=20))
        assert set(_in_files(tmp_path)) == {first.event_id}  # stopped just before the running call
        digest = AuditTrail(engine, barrier, settings)  # `khoa audit digest`
        digest.settle_seconds = 0
        closed = digest.close_period(T + 25)
        assert closed.waiting is not None and set(_in_files(tmp_path)) == {first.event_id}

        done = _complete(engine, running)
        trail.run_job(NOW + timedelta(seconds=30))  # well within the 300 s delivery interval
        delivered = _rows_match_files(engine, tmp_path)
        assert set(delivered) == {first.event_id, running.event_id, then.event_id}
        assert delivered[running.event_id] == done.record
        assert digest.close_period(T + 40).waiting is None
    finally:
        engine.dispose()
