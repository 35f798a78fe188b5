"""Secrets Manager's handlers called as the pipeline calls them, without a server: the service is built
from a SQLite database, a barrier, KMS's internal API and the production authoriser, with a fake
rotation engine that records what the handlers ask of it."""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, update

from khoa.audit.events import build as build_event
from khoa.audit.recorder import AuditRecorder
from khoa.auth.principal import Principal
from khoa.blocking import WouldBlock, on_the_loop
from khoa.protocol.context import RequestContext
from khoa.protocol.errors import AWSError
from khoa.secret_rotation import functions
from khoa.services.base import Service
from khoa.services.kms.backend import KmsBackend
from khoa.services.kms.internal import InternalKms
from khoa.services.secretsmanager import authz, build_service, versions
from khoa.services.secretsmanager import store as store_package
from khoa.services.secretsmanager.backend import SecretsBackend
from khoa.services.secretsmanager.store import SecretStore
from khoa.services.secretsmanager.store import access as access_module
from khoa.storage import schema
from tests.support.handlers import ACCOUNT, REGION, authorizer, barrier, context, database

OTHER_REGION = "eu-west-1"
FUNCTION_ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:rotator"


class FakeRotation:
    """Records the rotations handlers queue and cancel (the engine's RotationControl)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.started: list[tuple[str, str]] = []
        self.cancelled: list[str] = []
        self.running: dict[str, str] = {}
        # Rotations another call queues (and the engine finds) between a handler's checks and its start.
        self.queued_meanwhile: dict[str, str] = {}

    def start(
        self, secret_id: str, token: str, now: float, configure: Mapping[str, Any] | None = None
    ) -> bool:
        """As the engine starts: nothing when one is queued, else the run and ``configure`` at once."""
        if secret_id in self.queued_meanwhile:
            self.running[secret_id] = self.queued_meanwhile.pop(secret_id)
        if secret_id in self.running:
            return False
        if configure:
            with self.engine.begin() as conn:
                table = schema.sm_secrets
                conn.execute(update(table).where(table.c.secret_id == secret_id).values(**configure))
        self.started.append((secret_id, token))
        self.running[secret_id] = token
        return True

    def cancel(self, secret_id: str) -> None:
        self.cancelled.append(secret_id)
        self.running.pop(secret_id, None)

    def in_progress(self, secret_id: str) -> str | None:
        return self.running.get(secret_id)

    def has_function(self, arn: str) -> bool:
        return functions.lookup(self.engine, arn) is not None


class Harness:
    def __init__(self, tmp_path: Path) -> None:
        engine = database(tmp_path)
        authorize = authorizer(engine)
        kms = KmsBackend.create(engine, barrier(), authorize, cache_seconds=0)
        self.rotation = FakeRotation(engine)
        self.pokes = 0
        self.backend = SecretsBackend(
            engine=engine,
            store=SecretStore(engine, cache_seconds=0),
            keys=InternalKms(kms),
            authorizer=authorize,
            rotation=self.rotation,
            poke_jobs=self.poke,
            regions=(REGION, OTHER_REGION),
        )
        self.service: Service = build_service(self.backend)

    def poke(self) -> None:
        self.pokes += 1

    def call(self, operation: str, region: str = REGION, **params: Any) -> dict[str, Any]:
        return self.service.handlers[operation](context("secretsmanager", operation, region=region), params)

    def fails(self, code: str, operation: str, region: str = REGION, **params: Any) -> AWSError:
        with pytest.raises(AWSError) as caught:
            self.call(operation, region, **params)
        assert caught.value.code == code, caught.value.message
        return caught.value


@pytest.fixture
def sm(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


# -- a secret's life ---------------------------------------------------------------------------------------
def test_create_then_get_the_value(sm: Harness) -> None:
    created = sm.call("CreateSecret", Name="app/db", SecretString='{"password":"p1"}', Description="db")
    assert created["Name"] == "app/db"
    assert created["ARN"].startswith(f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:app/db-")
    value = sm.call("GetSecretValue", SecretId="app/db")
    assert value["SecretString"] == '{"password":"p1"}'
    assert value["VersionStages"] == ["AWSCURRENT"]
    assert value["VersionId"] == created["VersionId"]
    # by full ARN and by partial ARN (without the random suffix) too
    assert sm.call("GetSecretValue", SecretId=created["ARN"])["VersionId"] == created["VersionId"]
    assert sm.call("GetSecretValue", SecretId=created["ARN"][:-7])["VersionId"] == created["VersionId"]
    described = sm.call("DescribeSecret", SecretId="app/db")
    assert described["Description"] == "db"
    assert described["VersionIdsToStages"] == {created["VersionId"]: ["AWSCURRENT"]}
    assert "RotationEnabled" not in described


def test_binary_values_round_trip(sm: Harness) -> None:
    sm.call("CreateSecret", Name="blob", SecretBinary=b"\x00\x01secret")
    assert sm.call("GetSecretValue", SecretId="blob")["SecretBinary"] == b"\x00\x01secret"


def test_create_is_idempotent_on_its_token(sm: Harness) -> None:
    token = "11111111-2222-3333-4444-555555555555"
    first = sm.call("CreateSecret", Name="s", SecretString="v", ClientRequestToken=token)
    again = sm.call("CreateSecret", Name="s", SecretString="v", ClientRequestToken=token)
    assert again == {"ARN": first["ARN"], "Name": "s", "VersionId": token}
    sm.fails(
        "ResourceExistsException", "CreateSecret", Name="s", SecretString="other", ClientRequestToken=token
    )
    sm.fails("ResourceExistsException", "CreateSecret", Name="s", SecretString="v")


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"Name": "bad name!", "SecretString": "v"}, "ValidationException"),
        ({"Name": "both", "SecretString": "v", "SecretBinary": b"v"}, "InvalidParameterException"),
        ({"Name": "big", "SecretString": "x" * 65537}, "ValidationException"),
        ({"Name": "tagged", "Tags": [{"Key": "aws:owner", "Value": "me"}]}, "InvalidParameterException"),
        ({"Name": "far", "AddReplicaRegions": [{"Region": "xx-nowhere-1"}]}, "InvalidParameterException"),
        ({"Name": "key", "SecretString": "v", "KmsKeyId": "alias/missing"}, "ResourceNotFoundException"),
    ],
)
def test_create_refuses_bad_input(sm: Harness, params: dict[str, Any], code: str) -> None:
    sm.fails(code, "CreateSecret", **params)
    assert sm.call("ListSecrets")["SecretList"] == [], "a refused CreateSecret leaves nothing behind"


def test_unknown_secrets_are_not_found(sm: Harness) -> None:
    for operation in ("GetSecretValue", "DescribeSecret", "PutResourcePolicy", "TagResource"):
        params: dict[str, Any] = {"SecretId": "missing"}
        if operation == "PutResourcePolicy":
            params["ResourcePolicy"] = "{}"
        if operation == "TagResource":
            params["Tags"] = []
        sm.fails("ResourceNotFoundException", operation, **params)


def test_delete_restore_and_forced_delete(sm: Harness) -> None:
    sm.call("CreateSecret", Name="gone", SecretString="v")
    sm.fails(
        "InvalidParameterException",
        "DeleteSecret",
        SecretId="gone",
        ForceDeleteWithoutRecovery=True,
        RecoveryWindowInDays=7,
    )
    sm.fails("InvalidParameterException", "DeleteSecret", SecretId="gone", RecoveryWindowInDays=3)
    deleted = sm.call("DeleteSecret", SecretId="gone", RecoveryWindowInDays=7)
    assert deleted["Name"] == "gone"
    sm.fails("InvalidRequestException", "GetSecretValue", SecretId="gone")
    assert sm.call("ListSecrets")["SecretList"] == []
    assert [s["Name"] for s in sm.call("ListSecrets", IncludePlannedDeletion=True)["SecretList"]] == ["gone"]
    sm.call("RestoreSecret", SecretId="gone")
    assert sm.call("GetSecretValue", SecretId="gone")["SecretString"] == "v"
    sm.call("DeleteSecret", SecretId="gone", ForceDeleteWithoutRecovery=True)
    sm.fails("ResourceNotFoundException", "DescribeSecret", SecretId="gone")
    # forcing the deletion of a secret that does not exist is not an error
    assert sm.call("DeleteSecret", SecretId="never", ForceDeleteWithoutRecovery=True)["Name"] == "never"


def test_update_changes_metadata_and_adds_a_version(sm: Harness) -> None:
    first = sm.call("CreateSecret", Name="u", SecretString="v1")
    updated = sm.call("UpdateSecret", SecretId="u", Description="new", SecretString="v2")
    assert sm.call("DescribeSecret", SecretId="u")["Description"] == "new"
    assert sm.call("GetSecretValue", SecretId="u")["SecretString"] == "v2"
    previous = sm.call("GetSecretValue", SecretId="u", VersionStage="AWSPREVIOUS")
    assert (previous["VersionId"], previous["SecretString"]) == (first["VersionId"], "v1")
    # UpdateSecret refuses an existing token with another value
    sm.fails(
        "ResourceExistsException",
        "UpdateSecret",
        SecretId="u",
        SecretString="v3",
        ClientRequestToken=updated["VersionId"],
    )


# -- versions and labels -----------------------------------------------------------------------------------
def test_put_moves_current_and_previous(sm: Harness) -> None:
    v1 = sm.call("CreateSecret", Name="p", SecretString="one")["VersionId"]
    put = sm.call("PutSecretValue", SecretId="p", SecretString="two")
    assert put["VersionStages"] == ["AWSCURRENT"]
    pending = sm.call("PutSecretValue", SecretId="p", SecretString="three", VersionStages=["AWSPENDING"])
    labels = sm.call("DescribeSecret", SecretId="p")["VersionIdsToStages"]
    assert labels == {
        v1: ["AWSPREVIOUS"],
        put["VersionId"]: ["AWSCURRENT"],
        pending["VersionId"]: ["AWSPENDING"],
    }
    listed = sm.call("ListSecretVersionIds", SecretId="p")["Versions"]
    assert {v["VersionId"] for v in listed} == {v1, put["VersionId"], pending["VersionId"]}
    sm.fails("InvalidRequestException", "PutSecretValue", SecretId="p")  # no value at all


def test_a_retried_put_racing_its_first_try_is_the_same_request(
    sm: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write looks for its ClientRequestToken's version (caching "none"), and another worker writes
    that token with the same value before this one inserts it: the insert fails, and the request
    must then find the version written, not its own cached absence (it was refused as a different
    request, ResourceExistsException, about once in 24 concurrent retries)."""
    arn = sm.call("CreateSecret", Name="app/race", SecretString="v0")["ARN"]
    cached = replace(sm.backend, store=SecretStore(sm.backend.engine, cache_seconds=60))
    token = "a" * 36
    look = cached.store.version
    raced: list[bool] = []

    def looked_then_raced(secret_id: str, version_id: str) -> Any:
        found = look(secret_id, version_id)
        if not raced:  # the other worker writes right after this worker looked
            raced.append(True)
            sm.call("PutSecretValue", SecretId=arn, SecretString="same", ClientRequestToken=token)
        return found

    monkeypatch.setattr(cached.store, "version", looked_then_raced)
    put = build_service(cached).handlers["PutSecretValue"]
    answer = put(
        context("secretsmanager", "PutSecretValue"),
        {"SecretId": arn, "SecretString": "same", "ClientRequestToken": token},
    )
    assert raced and answer["VersionId"] == token and answer["VersionStages"] == ["AWSCURRENT"]


def test_a_retried_create_racing_its_first_try_is_the_same_request(
    sm: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two tries of one CreateSecret (same token, same value) at once: the one whose insert loses
    answers as the repeat it is, with the first one's ARN, not ResourceExistsException."""
    cached = replace(sm.backend, store=SecretStore(sm.backend.engine, cache_seconds=60))
    token = "b" * 36
    look = cached.store.by_name
    first: dict[str, Any] = {}

    def looked_then_raced(account_id: str, region: str, name: str) -> Any:
        found = look(account_id, region, name)
        if not first:  # the first try stores the secret right after this one looked
            stored = sm.call("CreateSecret", Name="app/twice", SecretString="s", ClientRequestToken=token)
            first.update(stored)
        return found

    monkeypatch.setattr(cached.store, "by_name", looked_then_raced)
    create = build_service(cached).handlers["CreateSecret"]
    params = {"Name": "app/twice", "SecretString": "s", "ClientRequestToken": token}
    answer = create(context("secretsmanager", "CreateSecret"), params)
    assert answer == {"ARN": first["ARN"], "Name": "app/twice", "VersionId": token}
    other = {**params, "SecretString": "another value", "ClientRequestToken": "c" * 36}
    sm.fails("ResourceExistsException", "CreateSecret", **other)


def test_a_put_committed_last_is_never_older_than_the_one_it_replaces(sm: Harness) -> None:
    """A write reads the clock before it waits for the secret's lock, so two concurrent puts can
    commit in the opposite order to their clock readings: the one committed last (AWSCURRENT) must
    still not carry an earlier CreatedDate than the version it made AWSPREVIOUS."""
    sm.call("CreateSecret", Name="app/order", SecretString="v0")
    put = sm.service.handlers["PutSecretValue"]
    later, earlier = datetime.now(UTC), datetime.now(UTC) - timedelta(seconds=5)
    put(
        context("secretsmanager", "PutSecretValue", now=later), {"SecretId": "app/order", "SecretString": "b"}
    )
    put(
        context("secretsmanager", "PutSecretValue", now=earlier),
        {"SecretId": "app/order", "SecretString": "c"},
    )
    listed = sm.call("ListSecretVersionIds", SecretId="app/order")["Versions"]
    dates = {stage: v["CreatedDate"] for v in listed for stage in v["VersionStages"]}
    assert dates["AWSCURRENT"] >= dates["AWSPREVIOUS"]
    assert sm.call("GetSecretValue", SecretId="app/order")["SecretString"] == "c"


def test_get_by_version_and_stage(sm: Harness) -> None:
    v1 = sm.call("CreateSecret", Name="g", SecretString="one")["VersionId"]
    sm.call("PutSecretValue", SecretId="g", SecretString="two")
    assert sm.call("GetSecretValue", SecretId="g", VersionId=v1)["SecretString"] == "one"
    sm.fails(
        "InvalidRequestException", "GetSecretValue", SecretId="g", VersionId=v1, VersionStage="AWSCURRENT"
    )
    sm.fails("ResourceNotFoundException", "GetSecretValue", SecretId="g", VersionStage="AWSPENDING")
    sm.fails("ResourceNotFoundException", "GetSecretValue", SecretId="g", VersionId="no-such-version-id")


def _read(sm: Harness, request_id: str, **params: Any) -> tuple[RequestContext, dict[str, Any]]:
    ctx = replace(context("secretsmanager", "GetSecretValue"), request_id=request_id)
    return ctx, sm.service.handlers["GetSecretValue"](ctx, params)


def _record(sm: Harness, ctx: RequestContext, params: dict[str, Any], error: str | None = None) -> None:
    """Record the call in the trail as the pipeline's recorder would (outcome ``error``, or success)."""
    recorder = AuditRecorder(sm.backend.engine)
    try:
        event = build_event(
            model=sm.service.model,
            service="secretsmanager",
            operation=ctx.operation,
            region=ctx.region,
            request_id=ctx.request_id,
            principal=ctx.principal,
            access_key_id="",
            source_ip="",
            user_agent="",
            params=params,
            result=None,
            error_code=error,
            error_message=error,
            now=ctx.now,
            recipient_account=ctx.account_id,
        )
        recorder.write([event])
    finally:
        recorder.close()


def test_a_read_writes_nothing_on_its_way(sm: Harness) -> None:
    """GetSecretValue noted LastAccessedDate by writing it (once a day per secret), in the read: on
    SQLite, on the event loop, waiting for the writers' turn and the busy timeout of a locked file."""
    sm.call("CreateSecret", Name="quiet", SecretString="v")
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(sm.backend.engine, "before_cursor_execute", seen)
    try:
        assert _read(sm, "00000000-0000-4000-8000-00000000000a", SecretId="quiet")[1]["SecretString"] == "v"
    finally:
        event.remove(sm.backend.engine, "before_cursor_execute", seen)
    writes = [s for s in statements if s.lstrip().split()[0].upper() in ("INSERT", "UPDATE", "DELETE")]
    assert writes == []


def test_an_access_counts_once_the_trail_recorded_its_read_and_never_if_refused(sm: Harness) -> None:
    """LastAccessedDate moved with reads the trail then could not record (refused, 503): a refused call
    changed state, which contradicted the trail. Now only a recorded, successful read counts."""
    sm.call("CreateSecret", Name="seen", SecretString="v")
    refused, _ = _read(sm, "00000000-0000-4000-8000-00000000000b", SecretId="seen")
    _read(sm, "00000000-0000-4000-8000-00000000000c", SecretId="seen")  # not recorded (yet)
    assert "LastAccessedDate" not in sm.call("DescribeSecret", SecretId="seen")
    access = sm.backend.store.access
    _record(sm, refused, {"SecretId": "seen"}, error="ServiceUnavailableException")
    access.flush()
    assert "LastAccessedDate" not in sm.call("DescribeSecret", SecretId="seen")
    assert access.pending() == 1  # one note for the secret's version and the day, however many reads

    recorded, _ = _read(sm, "00000000-0000-4000-8000-00000000000d", SecretId="seen")
    _record(sm, recorded, {"SecretId": "seen"})
    assert not access.flush()  # written: nothing left
    day = sm.call("DescribeSecret", SecretId="seen")["LastAccessedDate"].astimezone(UTC)
    assert (day.hour, day.minute, day.second) == (0, 0, 0) and day.date() == recorded.now.date()
    [version] = sm.call("ListSecretVersionIds", SecretId="seen")["Versions"]
    assert version["LastAccessedDate"] == day


def test_an_access_counts_while_reads_keep_coming(sm: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under steady reads, a note's newest reads (all it keeps) were newer than a pass's query by the
    time it answered: judged by those, the note was never confirmed, so the day was never written and
    the log's thread looked for records again and again for as long as the reads went on."""
    sm.call("CreateSecret", Name="busy", SecretString="v")
    access = sm.backend.store.access
    recorded, _ = _read(sm, "00000000-0000-4000-8000-0000000000a0", SecretId="busy")
    _record(sm, recorded, {"SecretId": "busy"})
    looked_up = access._recorded

    def while_reads_come(notes: Any) -> set[str]:
        found = looked_up(notes)
        for n in range(2 * access_module.READS_PER_NOTE):  # newer reads push the looked-for ones out
            _read(sm, f"00000000-0000-4000-8000-0000000001{n:02x}", SecretId="busy")
        return found

    monkeypatch.setattr(access, "_recorded", while_reads_come)
    assert not access.flush()  # written, though the reads the pass looked for are no longer kept
    assert sm.call("DescribeSecret", SecretId="busy")["LastAccessedDate"].date() == recorded.now.date()


def test_notes_of_reads_never_recorded_are_given_up(sm: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    sm.call("CreateSecret", Name="never", SecretString="v")
    ctx, _ = _read(sm, "00000000-0000-4000-8000-00000000000e", SecretId="never")
    assert "LastAccessedDate" not in sm.call("DescribeSecret", SecretId="never")
    access = sm.backend.store.access
    monkeypatch.setattr(access_module, "GIVE_UP_SECONDS", -1.0)
    assert not access.flush()  # given up: the read was refused
    _record(sm, ctx, {"SecretId": "never"})  # (a record that came after all: too late, not looked for)
    access.flush()
    assert "LastAccessedDate" not in sm.call("DescribeSecret", SecretId="never")


def test_a_version_put_after_a_forced_deletion_is_not_found(sm: Harness) -> None:
    """PutSecretValue that found the secret, then lost it to DeleteSecret(ForceDeleteWithoutRecovery)
    before its transaction: ResourceNotFoundException, not a clash of its ClientRequestToken."""
    sm.call("CreateSecret", Name="gone-meanwhile", SecretString="v")
    record = sm.backend.store.by_name(ACCOUNT, REGION, "gone-meanwhile")
    assert record is not None
    sm.call("DeleteSecret", SecretId="gone-meanwhile", ForceDeleteWithoutRecovery=True)
    ctx = context("secretsmanager", "PutSecretValue")
    with pytest.raises(AWSError) as caught:  # the write as it goes on with the record it read
        versions.add_version(sm.backend, ctx, record, "token-1", "string", b"w", ["AWSCURRENT"])
    assert caught.value.code == "ResourceNotFoundException"
    with pytest.raises(AWSError) as caught:
        sm.backend.store.tag(record.secret_id, [{"Key": "k", "Value": "v"}], time.time())
    assert caught.value.code == "ResourceNotFoundException"


def test_update_secret_version_stage(sm: Harness) -> None:
    v1 = sm.call("CreateSecret", Name="st", SecretString="one")["VersionId"]
    v2 = sm.call("PutSecretValue", SecretId="st", SecretString="two")["VersionId"]
    # AWSCURRENT is on v2: moving it back needs RemoveFromVersionId naming v2
    sm.fails(
        "InvalidParameterException",
        "UpdateSecretVersionStage",
        SecretId="st",
        VersionStage="AWSCURRENT",
        MoveToVersionId=v1,
    )
    sm.call(
        "UpdateSecretVersionStage",
        SecretId="st",
        VersionStage="AWSCURRENT",
        MoveToVersionId=v1,
        RemoveFromVersionId=v2,
    )
    assert sm.call("GetSecretValue", SecretId="st")["SecretString"] == "one"
    sm.fails(
        "InvalidParameterException",
        "UpdateSecretVersionStage",
        SecretId="st",
        VersionStage="AWSCURRENT",
        RemoveFromVersionId=v1,
    )
    sm.fails(
        "InvalidParameterException",
        "UpdateSecretVersionStage",
        SecretId="st",
        VersionStage="x",
        MoveToVersionId="nope",
    )


def test_list_secret_version_ids_pages(sm: Harness) -> None:
    sm.call("CreateSecret", Name="pages", SecretString="0")
    for n in range(1, 4):
        sm.call("PutSecretValue", SecretId="pages", SecretString=str(n), VersionStages=[f"L{n}"])
    first = sm.call("ListSecretVersionIds", SecretId="pages", MaxResults=3)
    rest = sm.call("ListSecretVersionIds", SecretId="pages", MaxResults=3, NextToken=first["NextToken"])
    assert len(first["Versions"]) == 3 and len(rest["Versions"]) == 1 and "NextToken" not in rest
    sm.fails("InvalidNextTokenException", "ListSecretVersionIds", SecretId="pages", NextToken="garbage")


# -- listing, tags, policies, passwords --------------------------------------------------------------------
def test_list_secrets_filters_and_batch_get(sm: Harness) -> None:
    sm.call("CreateSecret", Name="prod/db", SecretString="a", Tags=[{"Key": "team", "Value": "red"}])
    sm.call("CreateSecret", Name="dev/db", SecretString="b")
    named = sm.call("ListSecrets", Filters=[{"Key": "name", "Values": ["prod/"]}])["SecretList"]
    assert [s["Name"] for s in named] == ["prod/db"]
    assert named[0]["Tags"] == [{"Key": "team", "Value": "red"}]
    tagged = sm.call("ListSecrets", Filters=[{"Key": "tag-value", "Values": ["red"]}])["SecretList"]
    assert [s["Name"] for s in tagged] == ["prod/db"]
    sm.fails("InvalidParameterException", "ListSecrets", Filters=[{"Key": "name", "Values": []}])
    batch = sm.call("BatchGetSecretValue", SecretIdList=["prod/db", "dev/db", "missing"])
    assert sorted(v["SecretString"] for v in batch["SecretValues"]) == ["a", "b"]
    assert [(e["SecretId"], e["ErrorCode"]) for e in batch["Errors"]] == [
        ("missing", "ResourceNotFoundException")
    ]
    sm.fails("InvalidParameterException", "BatchGetSecretValue")


def test_word_filters_cost_a_bounded_statement_and_answer_the_same(sm: Harness) -> None:
    """Every word of every "all" and "description" value used to become SQL: 10 filters of 10 values
    of ~100 words built a statement of ~100,000 terms (25 s on the event loop). Repeats now count once
    and the SQL looks for a bounded number of words, the exact check on the rows deciding the rest:
    the same secrets are found, from a statement of bounded size; a listing with many words moves off
    the event loop (khoa.blocking)."""
    vocabulary = ["".join(pair) for pair in itertools.product("bcdfghjklm", repeat=2)]  # 100 words
    sm.call("CreateSecret", Name="every-word", SecretString="v", Description=" ".join(vocabulary))
    sm.call("CreateSecret", Name="all-but-one", SecretString="v", Description=" ".join(vocabulary[1:]))
    sm.call(
        "CreateSecret", Name="tagged", SecretString="v", Tags=[{"Key": "Bb", "Value": " ".join(vocabulary)}]
    )
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        statements.append(statement)

    def listed(key: str, values: list[str]) -> set[str]:
        filters = [{"Key": key, "Values": values}] * 10
        return {s["Name"] for s in sm.call("ListSecrets", Filters=filters)["SecretList"]}

    # ten values of the same hundred words, in different orders (and a word no secret has)
    every = [" ".join(vocabulary[i:] + vocabulary[:i]) for i in range(10)]
    event.listen(sm.backend.engine, "before_cursor_execute", record)
    try:
        assert listed("description", every) == {"every-word"}
        assert listed("all", every) == {"every-word", "tagged"}
        assert listed("description", [f"{v} zz" for v in every]) == set()
        assert listed("description", [f"!{v}" for v in every]) == {"all-but-one", "tagged"}
        assert listed("all", [f"!{v}" for v in every]) == {"all-but-one"}
    finally:
        event.remove(sm.backend.engine, "before_cursor_execute", record)
    # a word of "all" is four LIKEs (name, description, tag key, tag value): at most 32 words
    assert max(statement.count(" LIKE ") for statement in statements) <= 4 * 32
    many = [" ".join(vocabulary[10 * i : 10 * i + 10]) for i in range(10)]  # 100 distinct words
    with on_the_loop(), pytest.raises(WouldBlock):
        sm.call("ListSecrets", Filters=[{"Key": "all", "Values": many}])
    with on_the_loop():
        assert sm.call("ListSecrets", Filters=[{"Key": "all", "Values": ["bb cd"]}])["SecretList"]


def test_tag_and_untag(sm: Harness) -> None:
    sm.call("CreateSecret", Name="t", SecretString="v", Tags=[{"Key": "a", "Value": "1"}])
    sm.call("TagResource", SecretId="t", Tags=[{"Key": "b", "Value": "2"}, {"Key": "a", "Value": "3"}])
    assert sm.call("DescribeSecret", SecretId="t")["Tags"] == [
        {"Key": "a", "Value": "3"},
        {"Key": "b", "Value": "2"},
    ]
    sm.call("UntagResource", SecretId="t", TagKeys=["a"])
    assert sm.call("DescribeSecret", SecretId="t")["Tags"] == [{"Key": "b", "Value": "2"}]
    sm.fails("InvalidParameterException", "TagResource", SecretId="t", Tags=[{"Key": "aws:x", "Value": "1"}])


def test_the_tag_quota_is_counted_in_the_writing_transaction(sm: Harness) -> None:
    """Fifty tags in all: the 51st, counted with the stored ones, is refused and nothing is written."""
    sm.call("CreateSecret", Name="q", Tags=[{"Key": f"k{i}", "Value": "v"} for i in range(50)])
    changed = sm.call("DescribeSecret", SecretId="q")["LastChangedDate"]
    sm.fails("InvalidRequestException", "TagResource", SecretId="q", Tags=[{"Key": "one-more", "Value": "v"}])
    described = sm.call("DescribeSecret", SecretId="q")
    assert len(described["Tags"]) == 50 and described["LastChangedDate"] == changed
    sm.call("TagResource", SecretId="q", Tags=[{"Key": "k0", "Value": "new"}])  # overwriting is no new tag
    assert sm.call("DescribeSecret", SecretId="q")["Tags"][0] == {"Key": "k0", "Value": "new"}


def test_resource_policies(sm: Harness) -> None:
    sm.call("CreateSecret", Name="pol", SecretString="v")
    policy: dict[str, Any] = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                "Action": "secretsmanager:GetSecretValue",
                "Resource": "*",
            }
        ],
    }
    sm.call("PutResourcePolicy", SecretId="pol", ResourcePolicy=json.dumps(policy))
    assert json.loads(sm.call("GetResourcePolicy", SecretId="pol")["ResourcePolicy"]) == policy
    public = dict(policy, Statement=[dict(policy["Statement"][0], Principal="*")])
    sm.fails(
        "PublicPolicyException",
        "PutResourcePolicy",
        SecretId="pol",
        ResourcePolicy=json.dumps(public),
        BlockPublicPolicy=True,
    )
    sm.fails(
        "MalformedPolicyDocumentException", "PutResourcePolicy", SecretId="pol", ResourcePolicy="not json"
    )
    no_principal = dict(
        policy, Statement=[{k: v for k, v in policy["Statement"][0].items() if k != "Principal"}]
    )
    validated = sm.call("ValidateResourcePolicy", ResourcePolicy=json.dumps(no_principal))
    assert not validated["PolicyValidationPassed"]
    assert validated["ValidationErrors"][0]["CheckName"] == "SYNTAX_CHECK"
    sm.call("DeleteResourcePolicy", SecretId="pol")
    assert "ResourcePolicy" not in sm.call("GetResourcePolicy", SecretId="pol")


def test_random_password(sm: Harness) -> None:
    password = sm.call("GetRandomPassword", PasswordLength=40, ExcludePunctuation=True)["RandomPassword"]
    assert len(password) == 40 and password.isalnum()
    sm.fails(
        "InvalidParameterException",
        "GetRandomPassword",
        ExcludeLowercase=True,
        ExcludeUppercase=True,
        ExcludeNumbers=True,
        ExcludePunctuation=True,
    )


# -- rotation: the handlers ask the engine, they do not run it ---------------------------------------------
def _register_function(sm: Harness) -> None:
    functions.register(
        sm.backend.engine,
        account_id=ACCOUNT,
        region=REGION,
        name="rotator",
        kind="python",
        target="tests.support.rotators:simple",
        role_arn=None,
        secret_sealed=None,
        timeout_seconds=30.0,
        now=time.time(),
    )


def test_rotate_secret_queues_a_rotation_and_wakes_the_jobs(sm: Harness) -> None:
    arn = sm.call("CreateSecret", Name="rot", SecretString="v")["ARN"]
    sm.fails("InvalidRequestException", "RotateSecret", SecretId="rot")  # no function configured
    sm.fails("AccessDeniedException", "RotateSecret", SecretId="rot", RotationLambdaARN=FUNCTION_ARN)
    sm.fails("InvalidParameterException", "RotateSecret", SecretId="rot", RotationLambdaARN="not-an-arn")
    _register_function(sm)
    sm.fails(
        "InvalidParameterException",
        "RotateSecret",
        SecretId="rot",
        RotationLambdaARN=FUNCTION_ARN,
        RotationRules={"AutomaticallyAfterDays": 0},
    )
    rotated = sm.call(
        "RotateSecret",
        SecretId="rot",
        RotationLambdaARN=FUNCTION_ARN,
        RotationRules={"AutomaticallyAfterDays": 30},
    )
    secret_id = sm.backend.store.by_arn(arn).secret_id  # type: ignore[union-attr]
    assert sm.rotation.started == [(secret_id, rotated["VersionId"])]
    assert sm.pokes == 1
    described = sm.call("DescribeSecret", SecretId="rot")
    assert described["RotationEnabled"] is True
    assert described["RotationRules"] == {"AutomaticallyAfterDays": 30}
    assert "NextRotationDate" in described
    sm.fails("InvalidRequestException", "RotateSecret", SecretId="rot")  # one rotation at a time
    sm.call("CancelRotateSecret", SecretId="rot")
    assert sm.rotation.cancelled == [secret_id]
    assert sm.call("DescribeSecret", SecretId="rot")["RotationEnabled"] is False


def test_a_rotate_secret_that_loses_the_race_to_start_is_refused_and_writes_nothing(sm: Harness) -> None:
    """Concurrent RotateSecret calls all pass the checks made before their transaction; the engine
    queues exactly one. A loser answered 200 with a VersionId that never came to exist."""
    created = sm.call("CreateSecret", Name="raced", SecretString="v")
    _register_function(sm)
    secret_id = sm.backend.store.by_arn(created["ARN"]).secret_id  # type: ignore[union-attr]
    sm.rotation.queued_meanwhile[secret_id] = "the-winners-token"
    error = sm.fails(
        "InvalidRequestException",
        "RotateSecret",
        SecretId="raced",
        RotationLambdaARN=FUNCTION_ARN,
        RotationRules={"AutomaticallyAfterDays": 30},
    )
    assert error.message == "A previous rotation isn't complete. That rotation will be reattempted."
    assert sm.rotation.started == [] and sm.pokes == 0
    described = sm.call("DescribeSecret", SecretId="raced")
    assert "RotationEnabled" not in described and "RotationLambdaARN" not in described


def test_rotate_later_queues_nothing(sm: Harness) -> None:
    sm.call("CreateSecret", Name="later", SecretString="v")
    _register_function(sm)
    sm.call(
        "RotateSecret",
        SecretId="later",
        RotationLambdaARN=FUNCTION_ARN,
        RotationRules={"ScheduleExpression": "rate(10 days)"},
        RotateImmediately=False,
    )
    assert sm.rotation.started == [] and sm.pokes == 0


# -- replication --------------------------------------------------------------------------------------------
def test_replicas_mirror_the_primary_and_refuse_writes(sm: Harness) -> None:
    sm.call("CreateSecret", Name="rep", SecretString="v1")
    sm.fails(
        "InvalidParameterException",
        "ReplicateSecretToRegions",
        SecretId="rep",
        AddReplicaRegions=[{"Region": REGION}],
    )
    statuses = sm.call(
        "ReplicateSecretToRegions", SecretId="rep", AddReplicaRegions=[{"Region": OTHER_REGION}]
    )
    assert [(s["Region"], s["Status"]) for s in statuses["ReplicationStatus"]] == [(OTHER_REGION, "InSync")]
    sm.call("PutSecretValue", SecretId="rep", SecretString="v2")
    assert sm.call("GetSecretValue", region=OTHER_REGION, SecretId="rep")["SecretString"] == "v2"
    sm.fails(
        "InvalidParameterException", "PutSecretValue", region=OTHER_REGION, SecretId="rep", SecretString="x"
    )
    sm.fails("InvalidParameterException", "DeleteSecret", SecretId="rep")  # replicas remain
    removed = sm.call("RemoveRegionsFromReplication", SecretId="rep", RemoveReplicaRegions=[OTHER_REGION])
    assert removed["ReplicationStatus"] == []
    sm.fails("ResourceNotFoundException", "GetSecretValue", region=OTHER_REGION, SecretId="rep")


# -- the service as built --------------------------------------------------------------------------------
def test_writes_clear_the_cache(sm: Harness) -> None:
    """With a long-lived cache, a write is still seen by the next read of the same process."""
    cached = SecretStore(sm.backend.engine, cache_seconds=3600)
    backend = replace(sm.backend, store=cached)
    service = build_service(backend)
    ctx = context("secretsmanager", "CreateSecret")
    service.handlers["CreateSecret"](ctx, {"Name": "c", "SecretString": "one"})
    assert service.handlers["GetSecretValue"](ctx, {"SecretId": "c"})["SecretString"] == "one"
    service.handlers["PutSecretValue"](ctx, {"SecretId": "c", "SecretString": "two"})
    assert service.handlers["GetSecretValue"](ctx, {"SecretId": "c"})["SecretString"] == "two"


def test_the_authorisation_table_uses_the_given_authoriser(sm: Harness) -> None:
    sm.call("CreateSecret", Name="authz", SecretString="v")
    root = context("secretsmanager", "GetSecretValue")
    sm.service.authorizer(root, {"SecretId": "authz"})  # the account root, on its own secret
    someone = Principal(
        account_id=ACCOUNT,
        arn=f"arn:aws:iam::{ACCOUNT}:user/someone",
        user_id="AIDAEXAMPLE",
        kind="IAMUser",
        name="someone",
    )
    with pytest.raises(AWSError) as denied:
        sm.service.authorizer(
            context("secretsmanager", "GetSecretValue", principal=someone), {"SecretId": "authz"}
        )
    assert denied.value.code == "AccessDeniedException"


def test_only_the_store_runs_sql() -> None:
    """Issue 12's template: handler modules call intention-revealing store methods and never build a
    statement or open a transaction themselves."""
    sql = re.compile(r"engine\.(begin|connect)\(|conn\.execute|(?<![.\w])(select|insert|update|delete)\(")
    package = Path(store_package.__file__).parent.parent
    offenders = [
        f"{path.name}:{number}"
        for path in sorted(package.glob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if sql.search(line)
    ]
    assert offenders == []


def test_a_read_takes_the_secret_its_authorisation_found_and_no_other(sm: Harness) -> None:
    """GetSecretValue's handler reads the secret the request's authorisation found, by the same
    SecretId, with that secret's deletion still refused; a SecretId its authorisation did not find is
    looked up afresh, never answered with the secret noted for another."""
    sm.call("CreateSecret", Name="first", SecretString="one")
    sm.call("CreateSecret", Name="second", SecretString="two")
    ctx = context("secretsmanager", "GetSecretValue")
    authz.authorize_request(sm.backend, ctx, {"SecretId": "first"})
    read = sm.service.handlers["GetSecretValue"]
    assert read(ctx, {"SecretId": "first"})["SecretString"] == "one"
    assert read(ctx, {"SecretId": "second"})["SecretString"] == "two"  # not the noted one

    sm.call("DeleteSecret", SecretId="first", RecoveryWindowInDays=7)
    ctx = context("secretsmanager", "GetSecretValue")
    with pytest.raises(AWSError) as caught:
        authz.authorize_request(sm.backend, ctx, {"SecretId": "first"})
        read(ctx, {"SecretId": "first"})
    assert caught.value.code == "InvalidRequestException"
