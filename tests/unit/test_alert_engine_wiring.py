"""The alert engine built from exactly its collaborators (database, alert settings, audit sink, clock,
default account and Region), without a server or an application object: each one it is given is the
one it uses."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert, select

from khoa.alerts import config
from khoa.alerts.config import AlertSettings
from khoa.alerts.engine import STATE_NAME, AlertEngine
from khoa.audit.events import AuditEvent
from khoa.audit.recorder import rows_for
from khoa.storage import schema
from khoa.storage.database import create_database_engine, migrate

ACCOUNT = "999988887777"  # not the account any event names: alerts about the process use it
REGION = "eu-west-2"
START = datetime(2031, 6, 1, tzinfo=UTC)


@dataclass
class Sink:
    """An audit sink writing straight to the trail, with a failure count the test moves."""

    engine: Engine
    failures: int = 0

    def write(self, events: list[AuditEvent]) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(schema.audit_events), rows_for(events))

    def note_failure(self) -> None:
        self.failures += 1


@pytest.fixture
def db(tmp_path: Path) -> Engine:
    engine = create_database_engine(f"sqlite:///{tmp_path / 'khoa.db'}")
    migrate(engine)
    return engine


def build(db: Engine, sink: Sink, now: datetime) -> AlertEngine:
    return AlertEngine(
        engine=db,
        settings=AlertSettings(),
        audit=sink,
        now=lambda: now,
        default_account_id=ACCOUNT,
        default_region=REGION,
    )


def test_starts_watching_at_the_time_its_clock_gives(db: Engine) -> None:
    engine = build(db, Sink(db), START)
    assert engine.started
    with db.connect() as conn:
        raw = conn.execute(
            select(schema.alert_state.c.value).where(schema.alert_state.c.name == STATE_NAME)
        ).scalar_one()
    assert json.loads(raw) == {"seq": 0, "held": [], "startedAt": START.timestamp()}


def test_disabled_engine_reads_nothing(db: Engine) -> None:
    def unread() -> datetime:
        raise AssertionError("a disabled engine must not read the clock")

    engine = AlertEngine(
        engine=db,
        settings=replace(AlertSettings(), enabled=False),
        audit=Sink(db),
        now=unread,
        default_account_id=ACCOUNT,
        default_region=REGION,
    )
    engine.run(START)
    assert not engine.started
    with db.connect() as conn:
        assert conn.execute(select(schema.alert_state)).all() == []


def test_process_alerts_use_the_given_account_region_and_sink(db: Engine) -> None:
    sink = Sink(db)
    engine = build(db, sink, START)
    engine.run(START)
    sink.failures = 2  # the sink's own count is what the audit-sink-errors rule reads
    engine.run(START + timedelta(seconds=10))
    with db.connect() as conn:
        (alert,) = conn.execute(select(schema.alerts)).all()
        (record,) = (
            conn.execute(
                select(schema.audit_events.c.record).where(schema.audit_events.c.event_name == "AlertRaised")
            )
            .scalars()
            .all()
        )
    assert (alert.rule, alert.account_id, alert.region) == (config.AUDIT_SINK_ERRORS, ACCOUNT, REGION)
    assert alert.audited  # the AlertRaised event went through the sink the engine was given
    event = json.loads(record)
    assert (event["recipientAccountId"], event["awsRegion"]) == (ACCOUNT, REGION)
    assert event["additionalEventData"]["alertId"] == alert.alert_id
