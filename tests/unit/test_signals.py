"""Outage signals: rate-limited logging, the trail's write probe, and calls whose outcome was lost."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, insert, select

from khoa.alerts.config import AUDIT_DELIVERY_FAILING, AlertSettings
from khoa.alerts.context import PassContext
from khoa.alerts.rules import AuditDeliveryFailing
from khoa.audit.events import AuditEvent, build
from khoa.audit.health import TrailHealth
from khoa.audit.outcomes import PENDING_KEY, UNKNOWN_CODE, Writer, mark_lost_outcomes, unknown_outcome
from khoa.audit.recorder import AuditRecorder, rows_for
from khoa.cli.audit import format_event
from khoa.logs import LogLimiter
from khoa.observe.health import readiness
from khoa.observe.metrics import Metrics
from khoa.storage import schema

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


# -- outcomes lost to a crash ----------------------------------------------------------------------


def _write(operation: str = "PutSecretValue") -> AuditEvent:
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
        now=NOW,
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
