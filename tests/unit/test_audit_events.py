"""Audit records, their redaction, background-job events, LookupEvents filters, tail lines, metrics
and readiness, without a server."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, func, insert, select

from khoa.audit.events import HIDDEN, background, build, redact
from khoa.audit.jobs import PARAMETERS, JobAudit, recorded
from khoa.audit.recorder import AuditRecorder, AuditUnavailable
from khoa.auth.principal import Principal
from khoa.cli.audit import format_event, principal_of
from khoa.observe.health import readiness
from khoa.observe.metrics import Metrics
from khoa.protocol.errors import AWSError
from khoa.protocol.model import ServiceModel
from khoa.server.recording import access_key_of
from khoa.services.cloudtrail.lookup import CloudTrailModel, decode_token, encode_token
from khoa.services.cloudtrail.store import line_match
from khoa.storage import schema
from khoa.storage.turn import WriterTurn

ACCOUNT = "111122223333"
NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture
def engine() -> Iterator[Engine]:
    engine = create_engine("sqlite://")
    schema.metadata.create_all(engine)
    yield engine
    engine.dispose()


def event(
    service: str, operation: str, params: dict[str, Any] | None, result: dict[str, Any] | None, **kw: Any
) -> Any:
    return build(
        model=ServiceModel(service),
        service=service,
        operation=operation,
        region="us-east-1",
        request_id="req-1",
        principal=Principal.account_root(ACCOUNT, "AKIAEXAMPLE"),
        access_key_id="AKIAEXAMPLE",
        source_ip="127.0.0.1",
        user_agent="test",
        params=params,
        result=result,
        error_code=kw.get("error_code"),
        error_message=kw.get("error_message"),
        now=NOW,
        recipient_account=ACCOUNT,
    )


# -- records and redaction ----------------------------------------------------------------------


def test_secrets_are_hidden_and_blobs_left_out() -> None:
    created = event(
        "secretsmanager",
        "CreateSecret",
        {"Name": "db", "SecretString": "hunter2", "ClientRequestToken": "t" * 32},
        {"ARN": "arn:aws:secretsmanager:us-east-1:111122223333:secret:db-AbCdEf", "Name": "db"},
    )
    assert created.record["requestParameters"]["secretString"] == HIDDEN
    assert created.record["requestParameters"]["name"] == "db"
    assert "hunter2" not in json.dumps(created.record)

    encrypted = event(
        "kms", "Encrypt", {"KeyId": "k", "Plaintext": b"plain"}, {"CiphertextBlob": b"c", "KeyId": "k"}
    )
    assert encrypted.record["requestParameters"] == {"keyId": "k"}
    assert encrypted.record["responseElements"] is None  # read-only: no response elements
    assert encrypted.read_only

    put = event(
        "ssm", "PutParameter", {"Name": "/p", "Value": "s3cr3t", "Type": "SecureString"}, {"Version": 1}
    )
    assert put.record["requestParameters"]["value"] == HIDDEN

    model = ServiceModel("sts")
    credentials = {"AccessKeyId": "ASIA", "SecretAccessKey": "sk", "SessionToken": "tok", "Expiration": NOW}
    shown = redact(model, "AssumeRoleResponse", {"Credentials": credentials})
    assert shown["credentials"]["secretAccessKey"] == HIDDEN
    assert shown["credentials"]["sessionToken"] == HIDDEN
    assert shown["credentials"]["accessKeyId"] == "ASIA"


def test_refused_calls_carry_their_error_and_name_no_resource() -> None:
    denied = event(
        "kms", "DisableKey", {"KeyId": "k"}, None, error_code="AccessDeniedException", error_message="no"
    )
    assert denied.record["errorCode"] == "AccessDeniedException"
    assert denied.record["errorMessage"] == "no"
    assert denied.record["resources"] == []
    assert denied.error_code == "AccessDeniedException"
    assert not denied.read_only
    assert denied.username == "root"


def test_background_event_shape() -> None:
    resource = {"accountId": ACCOUNT, "type": "AWS::KMS::Key", "ARN": "arn:aws:kms:us-east-1:1:key/k"}
    record = background(
        service="kms",
        event_name="DeleteKey",
        account_id=ACCOUNT,
        region="eu-west-1",
        now=NOW,
        details={"keyId": "k"},
        resources=[resource],
    ).record
    assert record["eventType"] == "AwsServiceEvent"
    assert record["userIdentity"]["invokedBy"] == "kms.amazonaws.com"
    assert record["eventTime"] == "2025-01-02T03:04:05Z"
    assert record["awsRegion"] == "eu-west-1"
    assert record["additionalEventData"] == {"keyId": "k"}
    assert record["resources"] == [resource]


# -- background jobs -----------------------------------------------------------------------------


class FakeAudit:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.written: list[Any] = []
        self.failures = 0

    def write(self, events: list[Any]) -> None:
        if self.fail:
            raise RuntimeError("sink down")
        self.written.extend(events)

    def note_failure(self) -> None:
        self.failures += 1


def _job_audit(engine: Engine, audit: FakeAudit) -> JobAudit:
    return JobAudit(engine, audit, ACCOUNT, "us-east-1")


def _parameter(engine: Engine, account: str, region: str, name: str, expires_at: float | None) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(schema.ssm_parameters).values(
                param_id=f"{account}{region}{name}",
                account_id=account,
                region=region,
                name=name,
                parent_path="/",
                version=1,
                tier="Advanced",
                expires_at=expires_at,
            )
        )


def test_job_events_name_each_resource_and_its_owner(engine: Engine) -> None:
    _parameter(engine, ACCOUNT, "us-east-1", "/app/db", 100.0)
    _parameter(engine, "444455556666", "eu-west-1", "/app/db", 50.0)  # same name, another account
    _parameter(engine, ACCOUNT, "us-east-1", "/later", 10_000.0)
    audit = FakeAudit()
    calls: list[float] = []

    def work(now: float) -> list[str]:
        calls.append(now)
        return ["/app/db", "/app/db"]

    recorded(_job_audit(engine, audit), "DeleteParameter", PARAMETERS, work)(datetime.fromtimestamp(200, UTC))
    assert calls == [200.0]
    owners = sorted((e.account_id, e.region, e.resources[0]["ARN"]) for e in audit.written)
    assert owners == [
        ("111122223333", "us-east-1", "arn:aws:ssm:us-east-1:111122223333:parameter/app/db"),
        ("444455556666", "eu-west-1", "arn:aws:ssm:eu-west-1:444455556666:parameter/app/db"),
    ]
    for written in audit.written:
        assert written.event_name == "DeleteParameter"
        assert written.event_source == "ssm.amazonaws.com"
        assert written.record["additionalEventData"] == {"name": "/app/db"}
        assert written.record["recipientAccountId"] == written.account_id


def test_job_with_nothing_done_writes_nothing_and_sink_failures_are_counted(engine: Engine) -> None:
    audit = FakeAudit()
    recorded(_job_audit(engine, audit), "DeleteParameter", PARAMETERS, lambda now: [])(NOW)
    assert audit.written == []
    broken = FakeAudit(fail=True)
    _parameter(engine, ACCOUNT, "us-east-1", "/gone", 1.0)
    with pytest.raises(RuntimeError):
        recorded(_job_audit(engine, broken), "DeleteParameter", PARAMETERS, lambda now: ["/gone"])(NOW)
    assert broken.failures == 1


# -- LookupEvents ---------------------------------------------------------------------------------


def test_resource_names_match_whole_lines_only(engine: Engine) -> None:
    table = schema.audit_events
    names = {
        "a": "arn:one",
        "b": "arn:one\narn:two",
        "c": "arn:two\narn:one_x",
        "d": "arn:zero\narn:one\narn:2",
    }
    with engine.begin() as conn:
        for event_id, resource_names in names.items():
            conn.execute(
                insert(table).values(
                    event_id=event_id,
                    account_id=ACCOUNT,
                    region="us-east-1",
                    event_time=0.0,
                    event_source="kms.amazonaws.com",
                    event_name="X",
                    read_only=True,
                    resource_names=resource_names,
                    record="{}",
                )
            )

    def matching(value: str) -> set[str]:
        with engine.connect() as conn:
            rows = conn.execute(select(table.c.event_id).where(line_match(table.c.resource_names, value)))
            return {row.event_id for row in rows}

    assert matching("arn:one") == {"a", "b", "d"}
    assert matching("arn:two") == {"b", "c"}
    assert matching("arn:one_x") == {"c"}
    assert matching("arn:one%") == set()
    assert matching("arn:on_") == set()


def test_next_tokens_belong_to_their_query() -> None:
    token = encode_token(1_780_000_000.123456, 42, "abc")
    assert decode_token(token, "abc") == (1_780_000_000.123456, 42)
    forged = [
        base64.urlsafe_b64encode(json.dumps(value).encode()).decode()
        for value in (
            [42, "abc"],
            ["NaN", 42, "abc"],
            [1.5, 4.2, "abc"],
            [True, 42, "abc"],
            [1.5, False, "abc"],
            [1.5, 2**63, "abc"],
            [1.5, -1, "abc"],
        )
    ]
    cases = [(token, "other"), ("garbage!", "abc"), (token[:-4], "abc"), *((bad, "abc") for bad in forged)]
    for bad, fingerprint in cases:
        with pytest.raises(AWSError) as info:
            decode_token(bad, fingerprint)
        assert info.value.code == "InvalidNextTokenException"


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"MaxResults": 0}, "InvalidMaxResultsException"),
        ({"MaxResults": 51}, "InvalidMaxResultsException"),
        ({"EventCategory": "data"}, "InvalidEventCategoryException"),
        (
            {"LookupAttributes": [{"AttributeKey": "Colour", "AttributeValue": "x"}]},
            "InvalidLookupAttributesException",
        ),
        (
            {"LookupAttributes": [{"AttributeKey": "EventName", "AttributeValue": ""}]},
            "InvalidLookupAttributesException",
        ),
    ],
)
def test_cloudtrail_validation_errors(params: dict[str, Any], code: str) -> None:
    with pytest.raises(AWSError) as info:
        CloudTrailModel().validate("LookupEvents", params)
    assert info.value.code == code


# -- tail lines, metrics, readiness ----------------------------------------------------------------


def test_tail_lines() -> None:
    assert principal_of({"type": "Root", "arn": "arn:aws:iam::1:root"}) == "root"
    assert principal_of({"arn": "arn:aws:sts::1:assumed-role/app/session"}) == "assumed-role/app/session"
    assert principal_of({"type": "AWSService", "invokedBy": "kms.amazonaws.com"}) == "kms.amazonaws.com"
    assert principal_of({"type": "Unknown", "accessKeyId": "AKIAX"}) == "unknown (AKIAX)"
    denied = event("kms", "DisableKey", {"KeyId": "k"}, None, error_code="AccessDeniedException")
    line = format_event(denied.record).plain
    assert line.startswith("2025-01-02T03:04:05Z  111122223333  root ")
    assert line.endswith("kms:DisableKey  AccessDeniedException")
    ok = event("kms", "DisableKey", {"KeyId": "arn:aws:kms:us-east-1:1:key/k"}, {})
    assert format_event(ok.record).plain.endswith("kms:DisableKey  OK  arn:aws:kms:us-east-1:1:key/k")


def test_tail_lines_escape_every_control_character() -> None:
    """What a caller sent (or a database writer wrote) is shown, never obeyed by the terminal."""
    record = {
        "eventTime": "2025\x1b]0;title\x07",
        "recipientAccountId": "1111\x9b2J",
        "userIdentity": {"type": "Unknown", "accessKeyId": "\x1b[1A\x1b[2KAKIA"},
        "eventSource": "kms\u202e.amazonaws.com",
        "eventName": "List\x1b[8mKeys",
        "errorCode": "Denied\r\n",
        "resources": [{"ARN": "arn:\x00x"}],
    }
    line = format_event(record).plain
    assert line.isprintable(), repr(line)
    for shown in ("2025\\x1b]0;title\\x07", "1111\\x9b2J", "unknown (\\x1b[1A\\x1b[2KAKIA)"):
        assert shown in line
    assert "kms\\u202e:List\\x1b[8mKeys  Denied\\x0d\\x0a  arn:\\x00x" in line
    assert principal_of({"invokedBy": "svc\x1b"}) == "svc\\x1b"
    # Odd shapes do not break the line.
    assert format_event({"resources": ["not a dict"], "userIdentity": "nobody"}).plain.startswith("  ")


@pytest.mark.parametrize(
    ("claimed", "recorded"),
    [
        ("AKIAKHOATESTROOT0001", "AKIAKHOATESTROOT0001"),
        ("ASIA" + "A1" * 8, "ASIA" + "A1" * 8),
        ("\x1b[1A\x1b[2KAKIA", ""),
        ("AKIA\u00c9XAMPLE00000001", ""),
        ("AKIASHORT", ""),
        ("A" * 129, ""),
        ("AKIA-EXAMPLE-000000", ""),
    ],
)
def test_a_refused_calls_claimed_key_id_is_recorded_only_when_it_is_one(claimed: str, recorded: str) -> None:
    query = urllib.parse.urlencode(
        {
            "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
            "X-Amz-Credential": f"{claimed}/20250101/us-east-1/sts/aws4_request",
            "X-Amz-Date": "20250101T000000Z",
            "X-Amz-Expires": "60",
            "X-Amz-SignedHeaders": "host",
            "X-Amz-Signature": "0" * 64,
        }
    )
    assert access_key_of({}, query.encode()) == recorded
    header = f"AWS4-HMAC-SHA256 Credential={claimed}/20250101/us-east-1/kms/aws4_request, Signature=00"
    assert access_key_of({"authorization": [header]}) == recorded


def test_outcome_counters() -> None:
    metrics = Metrics()
    for outcome in (
        "ok",
        "AccessDeniedException",
        "AccessDenied",
        "InvalidCiphertextException",
        "ThrottlingException",
    ):
        metrics.count_request("kms", "Decrypt", outcome)
    value = metrics.registry.get_sample_value
    assert value("khoa_access_denied_total", {"service": "kms", "operation": "Decrypt"}) == 2
    assert value("khoa_decryption_failures_total") == 1
    assert value("khoa_throttled_requests_total", {"service": "kms"}) == 1
    assert value("khoa_requests_total", {"service": "kms", "operation": "Decrypt", "outcome": "ok"}) == 1


def test_readiness(engine: Engine, tmp_path: Any) -> None:
    recorder = AuditRecorder(engine)
    try:
        assert readiness(engine, recorder) == (
            200,
            {"status": "ok", "sealed": False, "database": "ok", "audit": "ok"},
        )
        recorder.note_failure()
        status, body = readiness(engine, recorder)
        assert (status, body["audit"]) == (503, "failing")
        recorder.last_success_at = recorder.last_failure_at + 1  # a later commit succeeded
        assert readiness(engine, recorder)[0] == 200
        recorder.note_failure()
        recorder.last_failure_at -= 3600  # long ago
        assert readiness(engine, recorder)[0] == 200

        missing_table = create_engine("sqlite://")
        assert readiness(missing_table, recorder)[1]["audit"] == "down"
        down = create_engine(f"sqlite:///{tmp_path}/no/such/dir/khoa.db")
        status, body = readiness(down, recorder)
        assert (status, body["database"]) == (503, "down")
    finally:
        recorder.close()


# -- caller columns ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "principal",
    [
        Principal.account_root(ACCOUNT, "AKIAROOT"),
        Principal(
            ACCOUNT, f"arn:aws:iam::{ACCOUNT}:user/alice", "AIDAALICE", "IAMUser", "AKIAALICE", "alice"
        ),
        Principal(
            ACCOUNT,
            f"arn:aws:sts::{ACCOUNT}:assumed-role/app/one",
            "AROAAPP:one",
            "AssumedRole",
            "ASIAONE",
            "app",
            "AROAAPP",
            "one",
        ),
        None,
    ],
    ids=["root", "user", "assumed-role", "unknown"],
)
def test_caller_columns_say_what_the_record_says(engine: Engine, principal: Principal | None) -> None:
    """Alert rules read the caller from columns; an older row (NULL columns) from its record. Both
    must name the same principal, address, event type and resources."""
    from khoa.alerts.reader import event_columns, event_from_row

    arn = f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:db-AbCdEf"
    api_call = build(
        model=ServiceModel("secretsmanager"),
        service="secretsmanager",
        operation="GetSecretValue",
        region="us-east-1",
        request_id="req-1",
        principal=principal,
        access_key_id="AKIAUNKNOWN" if principal is None else principal.access_key_id,
        source_ip="203.0.113.9",
        user_agent="test",
        params={"SecretId": arn},
        result={"ARN": arn, "Name": "db"},
        error_code=None,
        error_message=None,
        now=NOW,
        recipient_account=ACCOUNT,
    )
    job = background(
        service="secretsmanager",
        event_name="DeleteSecret",
        account_id=ACCOUNT,
        region="us-east-1",
        now=NOW,
        details={},
        resources=[{"accountId": ACCOUNT, "type": "AWS::SecretsManager::Secret", "ARN": arn}],
    )
    AuditRecorder(engine).write([api_call, job])
    with engine.connect() as conn:
        rows = conn.execute(select(*event_columns()).order_by(schema.audit_events.c.seq)).all()
    for row in rows:
        stored = event_from_row(row)
        legacy = replace(stored, stored_event_type=None, stored_principal=None, stored_source_ip=None)
        assert stored.stored_event_type is not None
        for attribute in ("principal", "source_ip", "event_type", "authenticated", "resource_arns"):
            assert getattr(stored, attribute) == getattr(legacy, attribute), attribute
    assert event_from_row(rows[0]).principal == (
        None
        if principal is None
        else (f"arn:aws:iam::{ACCOUNT}:role/app" if principal.kind == "AssumedRole" else principal.arn)
    )


def test_the_writer_reconnects_when_the_database_dropped_its_connection(postgres_url: str) -> None:
    """The writer keeps one connection between commits; a database restart kills it while idle.
    The next batch must go through on a new connection rather than be refused."""
    from sqlalchemy import func, text

    from khoa.storage.database import create_database_engine, migrate

    engine = create_database_engine(postgres_url)
    migrate(engine)
    recorder = AuditRecorder(engine)
    try:
        first = event("kms", "ListKeys", {}, {})
        recorder.write([first])
        assert recorder._connection is not None
        backend = recorder._connection.dbapi_connection.info.backend_pid  # type: ignore[union-attr]
        with engine.begin() as conn:
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
        second = event("kms", "ListKeys", {}, {})
        recorder.write([second])
        with engine.connect() as conn:
            found = conn.execute(
                select(func.count())
                .select_from(schema.audit_events)
                .where(schema.audit_events.c.event_id.in_([first.event_id, second.event_id]))
            ).scalar()
        assert found == 2
    finally:
        recorder.close()
        engine.dispose()


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_a_batch_of_new_and_completed_events_is_stored_exactly(
    store: str, tmp_path: Any, request: pytest.FixtureRequest
) -> None:
    """New events and completions of events recorded before their call ran, written in one batch
    (PostgreSQL streams the new rows with COPY, SQLite inserts them): every column reads back as
    the writer's row made it, NULLs, booleans, floats and non-ASCII text included."""
    from khoa.audit.recorder import _COLUMNS, _row
    from khoa.storage.database import create_database_engine, migrate

    url = request.getfixturevalue("private_postgres") if store == "postgres" else f"sqlite:///{tmp_path}/a.db"
    engine = create_database_engine(url)
    migrate(engine)
    recorder = AuditRecorder(engine)
    try:
        before = event("secretsmanager", "PutSecretValue", {"SecretId": "db", "SecretString": "s3cr3t"}, None)
        recorder.write([before])
        done = replace(before, error_code="ThrottlingException")
        done.record = {**before.record, "errorCode": "ThrottlingException", "errorMessage": "ü ✓ 雪"}
        fresh = [
            event("kms", "ListKeys", {}, {}),
            event("ssm", "GetParameter", {"Name": "/ü/✓"}, {}, error_code="ParameterNotFound"),
        ]
        fresh[1].event_time = 1735787045.123456789
        recorder.write(fresh, [done])
        assert recorder._statements is not None
        assert (recorder._statements.copy is not None) == (store == "postgres")
        columns = [schema.audit_events.c[name] for name in _COLUMNS]
        with engine.connect() as conn:
            stored = {
                row[0]: tuple(row)
                for row in conn.execute(select(*columns).order_by(schema.audit_events.c.seq))
            }
        assert list(stored) == [before.event_id, *(e.event_id for e in fresh)]
        for expected in (*fresh, done):
            assert stored[expected.event_id] == _row(expected)
        assert "s3cr3t" not in json.dumps(list(stored.values()), default=str)
    finally:
        recorder.close()
        engine.dispose()


def _process_turn(tmp_path: Any) -> WriterTurn:
    """The writers' turn of one of two server processes on the SQLite file khoa.db in tmp_path."""
    return WriterTurn.for_database(str(tmp_path / "khoa.db"), processes=2)


def test_a_writer_of_several_takes_its_turn_before_its_batch(tmp_path: Any) -> None:
    """Two processes' recorders on one SQLite file take turns on the lock file; events that arrive
    while one waits for its turn go into its next commit, all of them, and none is lost."""
    engine = create_engine(f"sqlite:///{tmp_path / 'khoa.db'}")
    schema.metadata.create_all(engine)
    mine = AuditRecorder(engine, turn=_process_turn(tmp_path))
    other = AuditRecorder(engine, turn=_process_turn(tmp_path))
    batches: list[int] = []
    write_in_turn = mine._write_in_turn

    def counted(events: list[Any], updates: list[Any]) -> None:
        batches.append(len(events))
        write_in_turn(events, updates)

    mine._write_in_turn = counted  # type: ignore[method-assign]
    other.turn.take()  # the other process is committing

    async def calls() -> None:
        first = [asyncio.ensure_future(mine.record(event("kms", "ListKeys", {}, {}))) for _ in range(30)]
        await asyncio.sleep(0.1)  # the writer waits for its turn; more calls come meanwhile
        later = [asyncio.ensure_future(mine.record(event("kms", "ListKeys", {}, {}))) for _ in range(30)]
        await asyncio.sleep(0.1)
        threading.Timer(0.05, other.turn.end).start()
        await asyncio.gather(*first, *later)

    try:
        asyncio.run(calls())
        other.write([event("kms", "ListKeys", {}, {})])  # the other's turn works again too
    finally:
        mine.close()
        other.close()
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.audit_events)).scalar() == 61
    assert batches == [60]
    engine.dispose()


def test_a_background_write_waits_for_its_turn_within_the_bound(tmp_path: Any) -> None:
    """A background job's write() (no event loop) waits for a sibling that holds the lock file at
    most the bound, then is refused (AuditUnavailable), never held for good; a turn that comes
    after the job gave up is given back, and a turn freed in time is taken."""
    engine = create_engine(f"sqlite:///{tmp_path / 'khoa.db'}")
    schema.metadata.create_all(engine)
    mine = AuditRecorder(engine, turn=_process_turn(tmp_path), turn_seconds=0.2)
    other = AuditRecorder(engine, turn=_process_turn(tmp_path))
    try:
        other.turn.take()
        started = time.monotonic()
        with pytest.raises(AuditUnavailable):
            mine.write([event("kms", "ListKeys", {}, {})])
        waited = time.monotonic() - started
        other.turn.end()
        time.sleep(0.05)  # the helper's late turn, given back
        other.turn.take_within(2.0)  # not held by the abandoned wait
        threading.Timer(0.05, other.turn.end).start()
        mine.write([event("kms", "ListKeys", {}, {})])  # freed within the bound: written
        mine.write([event("kms", "ListKeys", {}, {})])  # and the turn was given back after it
    finally:
        mine.close()
        other.close()
    assert 0.2 <= waited < 2.0
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.audit_events)).scalar() == 2
    engine.dispose()


def test_a_turn_held_too_long_refuses_the_batch_promptly_and_then_recovers(tmp_path: Any) -> None:
    """A sibling process that holds the lock file (stopped, say) gets this process's requests a
    prompt refusal (503) within the bound, never a hang; once it lets go, commits work again."""
    engine = create_engine(f"sqlite:///{tmp_path / 'khoa.db'}")
    schema.metadata.create_all(engine)
    mine = AuditRecorder(engine, turn=_process_turn(tmp_path), turn_seconds=0.2)
    other = AuditRecorder(engine, turn=_process_turn(tmp_path))
    other.turn.take()

    async def calls() -> tuple[float, bool]:
        started = time.monotonic()
        refused = False
        try:
            await mine.record(event("kms", "ListKeys", {}, {}))
        except AuditUnavailable:
            refused = True
        waited = time.monotonic() - started
        other.turn.end()
        await mine.record(event("kms", "ListKeys", {}, {}))  # the late turn was given back
        return waited, refused

    try:
        waited, refused = asyncio.run(calls())
    finally:
        mine.close()
        other.close()
    assert refused and waited < 2.0
    assert mine.failures == 1
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.audit_events)).scalar() == 1
    engine.dispose()
