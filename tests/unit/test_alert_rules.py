"""The alert rules and engine on a migrated SQLite database with a fake runtime: events are written
to the trail directly, so each rule's edges (and the engine's cursor) can be pinned down exactly."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, delete, insert, select

from khoa.alerts import config
from khoa.alerts import rules as alert_rules
from khoa.alerts.config import AlertSettings
from khoa.alerts.engine import SETTLE_SECONDS, AlertEngine
from khoa.alerts.model import Event
from khoa.alerts.notifiers import FAILED, PENDING, SENT, Notifiers, StoredAlert, post_json, slack_payload
from khoa.audit.events import AuditEvent
from khoa.audit.recorder import rows_for
from khoa.audit.usage import UsageBehind
from khoa.settings import Settings
from khoa.storage import schema
from khoa.storage.database import create_database_engine, migrate

ACCOUNT = "111122223333"
REGION = "us-east-1"
START = datetime(2030, 1, 1, tzinfo=UTC)
SECRET_VALUE = "do-not-leak-this-value"


# -- fake collaborators -----------------------------------------------------------------------------


@dataclass
class FakeClock:
    moment: datetime = START

    def now(self) -> datetime:
        return self.moment

    def advance(self, seconds: float) -> None:
        self.moment += timedelta(seconds=seconds)


@dataclass
class FakeAudit:
    engine: Engine
    failures: int = 0
    broken: bool = False

    def write(self, events: list[AuditEvent], updates: list[AuditEvent] | None = None) -> None:
        if self.broken:
            raise RuntimeError("sink down")
        with self.engine.begin() as conn:
            conn.execute(insert(schema.audit_events), rows_for(events))

    def note_failure(self) -> None:
        self.failures += 1


@dataclass
class FakeRuntime:
    engine: Engine
    settings: Settings
    audit: FakeAudit
    clock: FakeClock
    dev_account_id: str = ACCOUNT


class Recorder(Notifiers):
    """Notifiers that keep what they would send."""

    def __init__(self, settings: AlertSettings) -> None:
        super().__init__(settings)
        self.sent: list[StoredAlert] = []
        self.answer = SENT

    @property
    def webhook_configured(self) -> bool:
        return True

    def to_webhook(self, alert: StoredAlert) -> str:
        if self.answer == SENT:
            self.sent.append(alert)
        return self.answer

    def to_slack(self, alert: StoredAlert) -> str:
        return SENT


@dataclass
class World:
    runtime: FakeRuntime
    engine: AlertEngine
    notifier: Recorder
    written: list[int] = field(default_factory=list)

    @property
    def db(self) -> Engine:
        return self.runtime.engine

    @property
    def clock(self) -> FakeClock:
        return self.runtime.clock

    def record(self, *events: AuditEvent) -> None:
        self.runtime.audit.write(list(events))

    def run(self) -> list[StoredAlert]:
        before = len(self.notifier.sent)
        self.engine.run(self.clock.now())
        return self.notifier.sent[before:]

    def rules(self) -> list[str]:
        return [a.rule for a in self.run()]


@pytest.fixture
def db(tmp_path: Path) -> Engine:
    engine = create_database_engine(f"sqlite:///{tmp_path / 'khoa.db'}")
    migrate(engine)
    return engine


def make_world(db: Engine, **alert_settings: Any) -> World:
    alerts = replace(AlertSettings(), **{"allowed_networks": "127.0.0.0/8,10.0.0.0/8", **alert_settings})
    runtime = FakeRuntime(db, Settings(alerts=alerts), FakeAudit(db), FakeClock())
    notifier = Recorder(alerts)
    engine = AlertEngine(
        engine=db,
        settings=alerts,
        audit=runtime.audit,
        now=runtime.clock.now,
        default_account_id=ACCOUNT,
        default_region=REGION,
        notifiers=notifier,
    )
    return World(runtime, engine, notifier)


@pytest.fixture
def world(db: Engine) -> World:
    return make_world(db)


@pytest.fixture(params=["sqlite", "postgresql"])
def trail_world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    """A world on SQLite and on PostgreSQL: how the engine reads the trail differs between them
    (parameter style, snapshot isolation, sequences that commit out of order)."""
    url = f"sqlite:///{tmp_path / 'khoa.db'}"
    if request.param == "postgresql":
        url = request.getfixturevalue("private_postgres")
    engine = create_database_engine(url)
    migrate(engine)
    try:
        yield make_world(engine)
    finally:
        engine.dispose()


# -- events ---------------------------------------------------------------------------------------


def root() -> dict[str, Any]:
    arn = f"arn:aws:iam::{ACCOUNT}:root"
    return {
        "type": "Root",
        "principalId": ACCOUNT,
        "arn": arn,
        "accountId": ACCOUNT,
        "accessKeyId": "AKIAROOT",
    }


def user(name: str, key: str = "") -> dict[str, Any]:
    return {
        "type": "IAMUser",
        "principalId": f"AIDA{name.upper()}",
        "arn": f"arn:aws:iam::{ACCOUNT}:user/{name}",
        "accountId": ACCOUNT,
        "accessKeyId": key or f"AKIA{name.upper()}",
        "userName": name,
    }


def session(role: str, name: str) -> dict[str, Any]:
    return {
        "type": "AssumedRole",
        "principalId": f"AROA:{name}",
        "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/{role}/{name}",
        "accountId": ACCOUNT,
        "accessKeyId": f"ASIA{name.upper()}",
        "sessionContext": {
            "sessionIssuer": {"type": "Role", "arn": f"arn:aws:iam::{ACCOUNT}:role/{role}", "userName": role}
        },
    }


def call(
    name: str,
    identity: dict[str, Any],
    *,
    service: str = "secretsmanager",
    at: datetime | None = None,
    resources: list[str] | None = None,
    error: str | None = None,
    request: dict[str, Any] | None = None,
    response: Any = "complete",
    read_only: bool | None = None,
    ip: str = "127.0.0.1",
) -> AuditEvent:
    moment = at or START
    types = {"secretsmanager": "AWS::SecretsManager::Secret", "kms": "AWS::KMS::Key"}
    listed = [{"accountId": ACCOUNT, "type": types.get(service, "x"), "ARN": arn} for arn in resources or []]
    is_read = name.startswith(("Get", "BatchGet", "List", "Describe", "Encrypt", "Decrypt", "Generate"))
    if response == "complete":  # a finished mutating call has response elements; a read has none
        response = None if is_read else {"arn": (resources or ["x"])[0]}
    record: dict[str, Any] = {
        "eventVersion": "1.08",
        "userIdentity": identity,
        "eventTime": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventSource": f"{service}.amazonaws.com",
        "eventName": name,
        "awsRegion": REGION,
        "sourceIPAddress": ip,
        "userAgent": "tests",
        "requestParameters": request,
        "responseElements": response,
        "eventID": str(uuid.uuid4()),
        "readOnly": is_read if read_only is None else read_only,
        "resources": listed,
        "eventType": "AwsApiCall",
        "recipientAccountId": ACCOUNT,
    }
    if error:
        record["errorCode"] = error
        record["errorMessage"] = "refused"
    return AuditEvent(
        record=record,
        account_id=ACCOUNT,
        region=REGION,
        event_time=moment.timestamp(),
        event_source=record["eventSource"],
        event_name=name,
        read_only=record["readOnly"],
        username=identity.get("userName"),
        access_key_id=identity.get("accessKeyId"),
        error_code=error,
        resources=listed,
        principal_arn=legacy_row(record).principal,  # what an older row's record says
        source_ip=ip,
    )


def legacy_row(record: dict[str, Any]) -> Event:
    """A row written before the caller columns existed: rules read its record instead."""
    return Event(
        0, str(record.get("eventID", "")), ACCOUNT, REGION, 0.0, "", "", True, None, None, json.dumps(record)
    )


def service_event(name: str, arn: str, details: dict[str, Any], at: datetime | None = None) -> AuditEvent:
    from khoa.audit.events import background

    return background(
        service="secretsmanager",
        event_name=name,
        account_id=ACCOUNT,
        region=REGION,
        now=at or START,
        details=details,
        resources=[{"accountId": ACCOUNT, "type": "AWS::SecretsManager::Secret", "ARN": arn}],
    )


def add_secret(
    db: Engine, name: str, *, created: datetime = START, primary: str | None = None, **extra: Any
) -> str:
    secret_id = str(uuid.uuid4())
    arn = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{name}-AbCdEf"
    with db.begin() as conn:
        conn.execute(
            insert(schema.sm_secrets).values(
                secret_id=secret_id,
                account_id=ACCOUNT,
                region=REGION,
                name=name,
                arn=arn,
                created_at=created.timestamp(),
                last_changed_at=created.timestamp(),
                rotation_enabled=False,
                primary_secret_id=primary,
                **extra,
            )
        )
    return arn


def secret_id_of(db: Engine, arn: str) -> str:
    with db.connect() as conn:
        return str(
            conn.execute(select(schema.sm_secrets.c.secret_id).where(schema.sm_secrets.c.arn == arn)).scalar()
        )


def later(seconds: float) -> datetime:
    return START + timedelta(seconds=seconds)


# -- settings -------------------------------------------------------------------------------------


def test_settings_from_environment() -> None:
    settings = AlertSettings.from_env(
        {
            "KHOA_ALERTS": "on",
            "KHOA_ALERT_WEBHOOK_URL": "https://alerts.example/hook",
            "KHOA_ALERT_ACCESS_DENIED_THRESHOLD": "7",
            "KHOA_ALERT_ACCESS_DENIED_FACTOR": "2.5",
            "KHOA_ALERT_ALLOWED_NETWORKS": "10.0.0.0/8, 2001:db8::/32",
            "KHOA_ALERT_DISABLE": "rotation-failed",
            "KHOA_ALERT_KEY_RECENT_USE_DAYS": "",
        }
    )
    assert settings.access_denied_threshold == 7
    assert settings.access_denied_factor == 2.5
    assert settings.key_recent_use_days == 30.0
    assert [str(n) for n in settings.networks()] == ["10.0.0.0/8", "2001:db8::/32"]
    assert not settings.rule_enabled(config.ROTATION_FAILED)
    assert settings.rule_enabled(config.UNEXPECTED_NETWORK)
    assert AlertSettings.from_env(settings.to_env()) == settings
    # Without allowed networks the network rule has nothing to compare against.
    assert not AlertSettings().rule_enabled(config.UNEXPECTED_NETWORK)
    for bad in (
        {"KHOA_ALERT_ALLOWED_NETWORKS": "10.0.0.0/33"},
        {"KHOA_ALERT_DISABLE": "no-such-rule"},
        {"KHOA_ALERT_SLACK_URL": "ftp://x"},
    ):
        with pytest.raises(ValueError):
            AlertSettings.from_env(bad)


def test_settings_reach_the_server_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KHOA_ALERT_DECRYPT_FAILURE_THRESHOLD", "9")
    settings = Settings.from_env()
    assert settings.alerts.decrypt_failure_threshold == 9
    assert settings.to_env()["KHOA_ALERT_DECRYPT_FAILURE_THRESHOLD"] == "9"


def test_principals_are_iam_arns() -> None:
    def principal(identity: dict[str, Any]) -> str | None:
        return legacy_row(call("GetSecretValue", identity).record).principal

    assert principal(root()) == f"arn:aws:iam::{ACCOUNT}:root"
    assert principal(user("alice")) == f"arn:aws:iam::{ACCOUNT}:user/alice"
    assert principal(session("app", "one")) == f"arn:aws:iam::{ACCOUNT}:role/app"
    assert principal({"type": "Unknown", "accessKeyId": "AKIA"}) is None


# -- new-secret-reader ----------------------------------------------------------------------------


def test_new_reader_semantics(trail_world: World) -> None:
    world = trail_world
    arn = add_secret(world.db, "db", created=later(1))
    world.record(
        call("CreateSecret", user("owner"), resources=[arn], response={"aRN": arn}, at=later(1)),
        call("GetSecretValue", user("owner"), resources=[arn], at=later(2)),
    )
    assert world.run() == []
    # Two sessions of one role are one principal.
    world.record(call("GetSecretValue", session("app", "s1"), resources=[arn], at=later(3)))
    world.record(call("GetSecretValue", session("app", "s2"), resources=[arn], at=later(4)))
    (alert,) = world.run()
    assert alert.details["principal"] == f"arn:aws:iam::{ACCOUNT}:role/app"
    assert alert.details["callerArn"].endswith("assumed-role/app/s1")
    # Failed reads and other operations are not reads.
    world.record(
        call("GetSecretValue", user("mallory"), resources=[arn], error="AccessDeniedException", at=later(5)),
        call("DescribeSecret", user("mallory"), resources=[arn], at=later(5)),
    )
    assert world.run() == []
    # A reader of one secret is new to another.
    other = add_secret(world.db, "api", created=later(6))
    world.record(
        call("CreateSecret", user("owner"), resources=[other], at=later(6)),
        call(
            "BatchGetSecretValue", session("app", "s3"), request={"secretIdList": ["api", arn]}, at=later(7)
        ),
    )
    (alert,) = world.run()
    assert alert.details["secretArn"] == other
    assert SECRET_VALUE not in json.dumps(alert.details)


def test_secrets_from_before_the_engine_learn_their_first_reader(db: Engine) -> None:
    old = add_secret(db, "legacy", created=START - timedelta(days=30))
    world = make_world(db)
    world.record(call("GetSecretValue", user("service"), resources=[old], at=later(1)))
    assert world.run() == []  # nobody known for it: learned silently
    world.record(call("GetSecretValue", user("intruder"), resources=[old], at=later(2)))
    (alert,) = world.run()
    assert alert.details["principal"].endswith("user/intruder")


def test_history_is_learned_on_first_start(db: Engine) -> None:
    arn = add_secret(db, "known", created=START - timedelta(days=3))
    FakeAudit(db).write(
        [call("GetSecretValue", user("batch"), resources=[arn], at=START - timedelta(days=1))]
    )
    world = make_world(db)  # the engine starts after that read
    assert world.run() == []
    world.record(call("GetSecretValue", user("batch"), resources=[arn], at=later(1)))
    assert world.run() == []
    world.record(call("GetSecretValue", user("newcomer"), resources=[arn], at=later(2)))
    assert [a.rule for a in world.run()] == [config.NEW_SECRET_READER]


def test_replicas_share_their_primary_readers_and_rotation_roles_are_expected(world: World) -> None:
    lambda_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:rotator"
    with world.db.begin() as conn:
        conn.execute(
            insert(schema.rotation_functions).values(
                account_id=ACCOUNT,
                region=REGION,
                name="rotator",
                kind="python",
                target="x:y",
                role_arn=f"arn:aws:iam::{ACCOUNT}:role/rotation",
                timeout_seconds=30.0,
                created_at=0.0,
            )
        )
    primary = add_secret(world.db, "shared", created=later(1), rotation_lambda_arn=lambda_arn)
    replica = add_secret(
        world.db, "shared-replica", created=later(1), primary=secret_id_of(world.db, primary)
    )
    world.record(
        call("CreateSecret", user("owner"), resources=[primary], at=later(1)),
        call("GetSecretValue", user("owner"), resources=[replica], at=later(2)),
        call(
            "GetSecretValue", session("rotation", "khoa-rotation-rotator"), resources=[primary], at=later(3)
        ),
    )
    assert world.run() == []
    world.record(call("GetSecretValue", user("reader"), resources=[replica], at=later(4)))
    (alert,) = world.run()
    assert alert.details["secretArn"] == primary
    world.record(call("GetSecretValue", user("reader"), resources=[primary], at=later(5)))
    assert world.run() == []


def test_a_destroyed_secret_forgets_its_readers(world: World) -> None:
    arn = add_secret(world.db, "gone", created=later(1))
    world.record(
        call("CreateSecret", user("owner"), resources=[arn], at=later(1)),
        call("GetSecretValue", user("reader"), resources=[arn], at=later(2)),
    )
    assert len(world.run()) == 1
    world.record(service_event("DeleteSecret", arn, {"secretId": arn}, at=later(3)))
    world.run()
    with world.db.connect() as conn:
        pairs = conn.execute(select(schema.alert_seen_principals.c.secret_arn)).scalars().all()
    assert arn not in pairs


# -- rotation-failed, key-deletion-scheduled ------------------------------------------------------


def test_rotation_failures_fold_retries_of_one_rotation(world: World) -> None:
    arn = add_secret(world.db, "rotating")
    details = {"versionId": "v1", "step": "setSecret", "error": f"could not log in with {SECRET_VALUE}"}
    world.record(service_event("RotationFailed", arn, details, at=later(1)))
    (alert,) = world.run()
    assert alert.details == {
        "secretArn": arn,
        "step": "setSecret",
        "versionId": "v1",
        "eventTime": "2030-01-01T00:00:01Z",
        "eventId": alert.event_ids[0],
    }
    assert SECRET_VALUE not in json.dumps(alert.details) + alert.summary
    world.clock.advance(120)
    world.record(service_event("RotationFailed", arn, details, at=later(121)))
    assert world.run() == []
    world.record(service_event("RotationFailed", arn, {**details, "versionId": "v2"}, at=later(122)))
    assert world.rules() == [config.ROTATION_FAILED]
    world.clock.advance(3600)
    world.record(service_event("RotationFailed", arn, details, at=later(3800)))
    assert world.rules() == [config.ROTATION_FAILED]


def test_incomplete_events_are_held_until_they_have_an_outcome(trail_world: World) -> None:
    world = trail_world
    key = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    pre = call("ScheduleKeyDeletion", root(), service="kms", request={"keyId": key}, response=None, at=START)
    world.record(pre)
    assert world.run() == []  # recorded before the call ran: wait for its outcome
    final = call(
        "ScheduleKeyDeletion",
        root(),
        service="kms",
        resources=[key],
        response={"keyId": key, "pendingWindowInDays": 7, "deletionDate": "Jan 8, 2030"},
        at=START,
    )
    final.record["eventID"] = pre.event_id
    with world.db.begin() as conn:
        row = rows_for([final])[0]
        conn.execute(
            schema.audit_events.update()
            .where(schema.audit_events.c.event_id == pre.event_id)
            .values(record=row["record"], resource_names=row["resource_names"])
        )
    (alert,) = world.run()
    assert alert.rule == config.KEY_DELETION_SCHEDULED and alert.severity == "medium"
    assert alert.details["pendingWindowInDays"] == 7
    assert world.run() == []
    # One that never gets an outcome is judged as it is once it is old enough.
    world.record(
        call("ScheduleKeyDeletion", root(), service="kms", resources=[key], response=None, at=later(1))
    )
    assert world.run() == []
    world.clock.advance(SETTLE_SECONDS + 1)
    assert world.rules() == [config.KEY_DELETION_SCHEDULED]


def test_key_use_makes_a_deletion_more_severe(world: World) -> None:
    key = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/0000aaaa-12ab-34cd-56ef-1234567890ab"
    other = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1111bbbb-12ab-34cd-56ef-1234567890ab"
    world.record(
        call("Decrypt", root(), service="kms", resources=[other], at=later(1)),
        call("Encrypt", root(), service="kms", resources=[key], error="DisabledException", at=later(1)),
        call("DescribeKey", root(), service="kms", resources=[key], at=later(1)),
    )
    world.record(call("ScheduleKeyDeletion", root(), service="kms", resources=[key], response={"keyId": key}))
    world.clock.advance(10)
    (alert,) = world.run()
    assert alert.severity == "medium" and alert.details["usedRecently"] is False
    world.record(call("GenerateDataKey", root(), service="kms", resources=[key], at=later(20)))
    world.record(
        call("ScheduleKeyDeletion", root(), service="kms", resources=[key], response={}, at=later(30))
    )
    world.clock.advance(30)
    (alert,) = world.run()
    assert alert.severity == "high" and alert.details["usedRecently"] is True
    assert alert.details["lastUsed"] == "2030-01-01T00:00:20Z"


def test_a_deletion_whose_key_use_is_not_counted_yet_is_judged_used(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    def behind(ctx: Any, key_arn: str) -> float | None:
        raise UsageBehind()

    monkeypatch.setattr(alert_rules, "key_last_used", behind)
    key = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/2222cccc-12ab-34cd-56ef-1234567890ab"
    world.record(call("ScheduleKeyDeletion", root(), service="kms", resources=[key], response={"keyId": key}))
    world.clock.advance(10)
    (alert,) = world.run()
    assert alert.severity == "high" and alert.details["usedRecently"] is True
    assert alert.details["lastUsed"] == "unknown (still being counted)"
    assert "not known yet" in alert.summary


# -- error bursts ---------------------------------------------------------------------------------


def test_decryption_failure_burst_counts_per_account_within_the_window(db: Engine) -> None:
    world = make_world(db, decrypt_failure_threshold=2, decrypt_failure_window_seconds=60)
    fail = {"service": "kms", "error": "InvalidCiphertextException"}
    world.record(call("Decrypt", root(), at=later(0), **fail), call("Decrypt", root(), at=later(30), **fail))
    assert world.run() == []
    world.record(call("Decrypt", root(), at=later(70), **fail))  # the first has left the window
    assert world.run() == []
    world.record(call("GetSecretValue", root(), at=later(80), error="DecryptionFailure"))
    (alert,) = world.run()
    assert alert.rule == config.DECRYPTION_FAILURE_BURST and alert.details["count"] == 3
    assert {o["operation"] for o in alert.details["topOperations"]} == {
        "kms:Decrypt",
        "secretsmanager:GetSecretValue",
    }


def test_access_denied_spike_against_the_baseline(db: Engine) -> None:
    world = make_world(
        db,
        access_denied_threshold=3,
        access_denied_factor=2.0,
        access_denied_window_seconds=60,
        access_denied_baseline_seconds=600,
    )
    denied = {"service": "kms", "error": "AccessDeniedException"}
    # 50 refusals spread over the baseline: 5 per window on average, so the limit is max(3, 10).
    world.record(*[call("ListKeys", user("scanner"), at=later(i * 11), **denied) for i in range(50)])
    world.clock.moment = later(600)
    world.engine.run(world.clock.now())
    world.notifier.sent.clear()
    world.record(*[call("ListKeys", user("scanner"), at=later(650), **denied) for _ in range(10)])
    assert world.run() == []
    world.record(call("ListAliases", user("scanner"), at=later(655), error="AccessDenied", service="kms"))
    (alert,) = world.run()
    assert alert.details["count"] == 11 and alert.details["limit"] == 10.0
    assert alert.details["baselineAveragePerWindow"] == 5.0


# -- audit-sink-errors ----------------------------------------------------------------------------


def test_audit_sink_errors_raise_once_per_cooldown(world: World) -> None:
    assert world.run() == []
    world.runtime.audit.failures = 3
    (alert,) = world.run()
    assert alert.rule == config.AUDIT_SINK_ERRORS and alert.severity == "critical"
    assert alert.details == {"newFailures": 3, "totalFailures": 3}
    assert alert.account_id == ACCOUNT
    world.runtime.audit.failures = 5
    world.clock.advance(60)
    assert world.run() == []
    world.clock.advance(300)
    assert world.run() == []  # no new failures
    world.runtime.audit.failures = 6
    assert world.rules() == [config.AUDIT_SINK_ERRORS]


def test_the_alert_goes_out_even_when_the_database_is_down(tmp_path: Path) -> None:
    db = create_database_engine(f"sqlite:///{tmp_path / 'khoa.db'}")
    migrate(db)
    world = make_world(db)
    world.runtime.audit.failures = 1
    with db.begin() as conn:
        conn.exec_driver_sql("DROP TABLE alerts")  # storing fails; notifying must not
    world.engine._tick(world.clock.now().timestamp())
    (alert,) = world.notifier.sent
    assert alert.rule == config.AUDIT_SINK_ERRORS


def test_alert_raised_events_wait_for_the_sink(world: World) -> None:
    arn = add_secret(world.db, "s", created=later(1))
    world.record(
        call("CreateSecret", user("owner"), resources=[arn], at=later(1)),
        call("GetSecretValue", user("reader"), resources=[arn], at=later(2)),
    )
    world.runtime.audit.broken = True
    (alert,) = world.run()  # notified although the event could not be recorded
    assert world.runtime.audit.failures == 1
    world.runtime.audit.broken = False
    world.runtime.audit.failures = 0  # (the audit-sink rule is tested on its own)
    world.engine.rules = [r for r in world.engine.rules if r.name != config.AUDIT_SINK_ERRORS]
    assert world.run() == []
    with world.db.connect() as conn:
        records = conn.execute(
            select(schema.audit_events.c.record).where(schema.audit_events.c.event_name == "AlertRaised")
        ).scalars()
        (record,) = [json.loads(r) for r in records]
    assert record["eventID"] == alert.audit_event_id
    assert record["eventSource"] == "khoa.amazonaws.com"
    assert record["additionalEventData"]["alertId"] == alert.alert_id
    assert record["resources"] == [{"accountId": ACCOUNT, "type": "AWS::SecretsManager::Secret", "ARN": arn}]


# -- unexpected-network ---------------------------------------------------------------------------


def test_unexpected_network(trail_world: World) -> None:
    world = trail_world
    world.record(
        call("ListKeys", root(), service="kms", ip="10.1.2.3"),
        call("ListKeys", root(), service="kms", ip="::ffff:127.0.0.1"),
        call("ListKeys", root(), service="kms", ip="secretsmanager.amazonaws.com"),
        call("ListKeys", {"type": "Unknown", "accessKeyId": "AKIAFORGED"}, service="kms", ip="192.0.2.1"),
    )
    assert world.run() == []
    world.record(
        call("ListKeys", root(), service="kms", ip="192.0.2.1"),
        call("ListKeys", root(), service="kms", ip="192.0.2.1", error="AccessDeniedException"),
        call("ListKeys", user("bob"), service="kms", ip="192.0.2.1"),
        call("ListKeys", root(), service="kms", ip="2001:db8::1"),
    )
    alerts = world.run()
    assert [(a.details["accessKeyId"], a.details["address"]) for a in alerts] == [
        ("AKIAROOT", "192.0.2.1"),
        ("AKIABOB", "192.0.2.1"),
        ("AKIAROOT", "2001:db8::1"),
    ]
    world.clock.advance(3601)
    world.record(call("ListKeys", root(), service="kms", ip="192.0.2.1", at=later(3601)))
    assert world.rules() == [config.UNEXPECTED_NETWORK]


# -- reading the trail ----------------------------------------------------------------------------


def test_gaps_in_the_sequence_are_read_when_they_commit(trail_world: World) -> None:
    world = trail_world
    arn = add_secret(world.db, "gappy", created=later(1))
    world.record(call("CreateSecret", user("owner"), resources=[arn], at=later(1)))
    late = call("GetSecretValue", user("late"), resources=[arn], at=later(2))
    world.record(late, call("ListSecrets", root(), at=later(3)))
    with world.db.begin() as conn:  # as if the middle event's transaction had not committed yet
        conn.execute(delete(schema.audit_events).where(schema.audit_events.c.event_id == late.event_id))
    assert world.run() == []
    with world.db.begin() as conn:
        row = rows_for([late])[0]
        seq = (
            conn.execute(select(schema.audit_events.c.seq).order_by(schema.audit_events.c.seq))
            .scalars()
            .all()
        )
        conn.execute(insert(schema.audit_events).values(seq=seq[0] + 1, **row))
    (alert,) = world.run()
    assert alert.details["principal"].endswith("user/late")
    assert world.run() == []


def test_routine_reads_reach_the_rules_once_per_kind(trail_world: World) -> None:
    """A busy application's thousands of identical reads are judged as one; everything else, and
    every difference a rule could tell apart, still reaches the rules event by event."""
    world = trail_world
    arn = add_secret(world.db, "busy", created=later(1))
    world.record(call("CreateSecret", user("owner"), resources=[arn], at=later(1)))
    assert world.run() == []
    reads = [call("GetSecretValue", user("app"), resources=[arn], at=later(2)) for _ in range(300)]
    outsiders = [call("GetSecretValue", user("app"), resources=[arn], ip="192.0.2.7", at=later(3))] * 1
    world.record(*reads[:150], *outsiders, *reads[150:])
    world.record(call("GetSecretValue", user("app"), resources=[arn], error="AccessDeniedException"))
    c = schema.audit_events.c
    with world.db.connect() as conn:
        first = int(conn.execute(select(c.seq).order_by(c.seq)).scalars().first() or 0)
        seqs, events = world.engine._reader.read(conn, first, 1000)
    assert len(seqs) == 302 and seqs == sorted(seqs)
    # one first read per (principal, address), plus the failed read (not routine)
    assert [(e.source_ip, e.error_code) for e in events] == [
        ("127.0.0.1", None),
        ("192.0.2.7", None),
        ("127.0.0.1", "AccessDeniedException"),
    ]
    assert events[0].event_id == reads[0].event_id
    alerts = world.run()
    assert sorted(a.rule for a in alerts) == [config.NEW_SECRET_READER, config.UNEXPECTED_NETWORK]
    (reader,) = [a for a in alerts if a.rule == config.NEW_SECRET_READER]
    assert reader.event_ids == [reads[0].event_id]
    world.record(*[call("GetSecretValue", user("app"), resources=[arn], at=later(4)) for _ in range(50)])
    assert world.run() == []


def test_the_batch_lists_its_gaps(trail_world: World) -> None:
    world = trail_world
    events = [call("ListSecrets", root(), at=later(i)) for i in range(5)]
    world.record(*events)
    c = schema.audit_events.c
    with world.db.begin() as conn:
        seqs = conn.execute(select(c.seq).order_by(c.seq)).scalars().all()
        conn.execute(delete(schema.audit_events).where(c.seq == seqs[2]))
    with world.db.connect() as conn:
        read, rows = world.engine._reader.read(conn, seqs[0] - 1, 1000)
        assert read == [seqs[0], seqs[1], seqs[3], seqs[4]]
        assert [e.seq for e in rows] == [seqs[0]]  # four alike ListSecrets: the first stands for all
        read, _ = world.engine._reader.read(conn, seqs[0] - 1, 2)
        assert read == [seqs[0], seqs[1]]
        assert world.engine._reader.read(conn, seqs[4], 1000) == ([], [])


def test_a_disabled_engine_does_nothing(db: Engine) -> None:
    world = make_world(db, enabled=False)
    world.runtime.audit.failures = 4
    assert world.run() == []
    with db.connect() as conn:
        assert conn.execute(select(schema.alert_state)).first() is None


# -- notifiers ------------------------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[dict[str, Any]]:
    state: dict[str, Any] = {"answers": [], "bodies": [], "headers": []}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            status = state["answers"].pop(0) if state["answers"] else 200
            state["bodies"].append(body)
            state["headers"].append(dict(self.headers))
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}/secret-path"
    yield state
    server.shutdown()
    server.server_close()


def test_webhook_post_is_signed_and_retried(receiver: dict[str, Any]) -> None:
    receiver["answers"] = [503, 500]
    payload = {"alertId": "a1", "summary": "x"}
    sleeps: list[float] = []
    kwargs = {"key": b"k3y", "attempts": 3, "timeout": 5.0, "sleep": sleeps.append}
    assert post_json(receiver["url"], payload, **kwargs) == SENT
    assert len(receiver["bodies"]) == 3 and sleeps == [0.25, 0.5]
    body = receiver["bodies"][-1]
    assert json.loads(body) == payload
    signature = {k.lower(): v for k, v in receiver["headers"][-1].items()}["x-khoa-signature"]
    assert signature == "sha256=" + hmac.new(b"k3y", body, hashlib.sha256).hexdigest()
    receiver["answers"] = [503, 503, 503]
    assert post_json(receiver["url"], payload, **kwargs) == PENDING
    receiver["answers"] = [400]
    assert post_json(receiver["url"], payload, **kwargs) == FAILED
    assert post_json("http://127.0.0.1:9/unreachable", payload, **kwargs) == PENDING


def test_slack_payload() -> None:
    alert = StoredAlert(
        alert_id="a1",
        rule="new-secret-reader",
        severity="high",
        account_id=ACCOUNT,
        region=REGION,
        raised_at="2030-01-01T00:00:00Z",
        summary="<user> & co read a secret",
        details={f"k{i}": i for i in range(12)},
        resources=[],
        event_ids=["e1"],
        audit_event_id="ae1",
    )
    payload = slack_payload(alert)
    assert set(payload) == {"text", "blocks"}
    assert payload["text"].startswith("[HIGH] Khoa alert new-secret-reader")
    assert payload["blocks"][1]["text"]["text"] == "&lt;user&gt; &amp; co read a secret"
    assert len(payload["blocks"][2]["fields"]) == 10
