"""Rotations that go wrong: a function failing at each step, a database that is down, a server killed
with SIGKILL during finishSecret. Every time the labels stay consistent (one AWSCURRENT, the current
value never lost, AWSPENDING kept for resumption), the failure is audited (RotationFailed, in
LookupEvents), raised as an alert (``khoa_alerts_raised_total{rule="rotation-failed"}``), and the next
attempt completes the same rotation.

These tests move the clock (retries wait out a backoff) and kill the server, so they have their own.
"""

from __future__ import annotations

import json
import re
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from sqlalchemy import update

from khoa.settings import Settings
from khoa.storage import schema
from khoa.storage.database import create_database_engine
from tests.support import pgcluster
from tests.support.pgcluster import PgDatabase
from tests.support.rotation import holder, register, rotate_now, stages_of, value_of, wait_for
from tests.support.server import KhoaServer

# the database fixtures (pytest finds fixtures among a module's names)
pg_cluster = pgcluster.pg_cluster
pg_database = pgcluster.pg_database

STEPS = ("createSecret", "setSecret", "testSecret", "finishSecret")
BACKOFF_SECONDS = 2 * 60 + 1  # the first retry waits two minutes


@pytest.fixture(scope="module")
def own_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KhoaServer]:
    instance = KhoaServer(tmp_path_factory.mktemp("rotation-failures") / "data").start()
    instance.run_jobs()  # the alert engine's first pass puts its cursor at the trail's end
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def controlled(own_server: KhoaServer) -> str:
    return register(own_server, "controlled", "tests.support.rotation:controlled")


def _secret(sm: Any, tags: dict[str, str]) -> tuple[str, str]:
    name = f"failing/{uuid.uuid4().hex[:8]}"
    created = sm.create_secret(
        Name=name,
        SecretString=json.dumps({"user": "app", "password": "v0"}),
        Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
    )
    return name, created["VersionId"]


def _alerts_raised(server: KhoaServer) -> float:
    with urllib.request.urlopen(f"{server.endpoint}/metrics", timeout=10) as response:
        text = response.read().decode()
    match = re.search(r'^khoa_alerts_raised_total\{rule="rotation-failed"\} (\S+)$', text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def _failed_events(server: KhoaServer, arn: str) -> list[dict[str, Any]]:
    cloudtrail = server.client("cloudtrail")
    events = cloudtrail.lookup_events(
        LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "RotationFailed"}]
    )["Events"]
    records = [json.loads(e["CloudTrailEvent"]) for e in events]
    return [r for r in records if any(res.get("ARN") == arn for res in r.get("resources", []))]


def _refused_while_pending(sm: Any, name: str) -> None:
    with pytest.raises(ClientError) as info:
        sm.rotate_secret(SecretId=name)
    assert info.value.response["Error"]["Code"] == "InvalidRequestException"
    assert "previous rotation isn't complete" in info.value.response["Error"]["Message"]


def test_the_rotation_version_exists_before_its_value(own_server: KhoaServer, controlled: str) -> None:
    """RotateSecret gives its token a version labelled AWSPENDING before the function runs, as
    Secrets Manager does: AWS's rotation templates look the token up in VersionIdsToStages, find
    no value (ResourceNotFoundException) and put one with that token."""
    sm = own_server.client("secretsmanager")
    name, first = _secret(sm, {"fail-at": "createSecret"})
    token = rotate_now(own_server, sm, name, RotationLambdaARN=controlled)
    assert sm.describe_secret(SecretId=name)["VersionIdsToStages"] == {
        first: ["AWSCURRENT"],
        token: ["AWSPENDING"],
    }
    for lookup in ({"VersionId": token}, {"VersionStage": "AWSPENDING"}):
        with pytest.raises(ClientError) as missing:
            sm.get_secret_value(SecretId=name, **lookup)
        assert missing.value.response["Error"]["Code"] == "ResourceNotFoundException"
        assert missing.value.response["Error"]["Message"] == (
            "Secrets Manager can't find the specified secret value for "
            + (f"VersionId: {token}" if "VersionId" in lookup else "staging label: AWSPENDING")
        )
    listed = {v["VersionId"]: v for v in sm.list_secret_version_ids(SecretId=name)["Versions"]}
    assert listed[token]["VersionStages"] == ["AWSPENDING"] and "KmsKeyIds" not in listed[token]
    batch = sm.batch_get_secret_value(SecretIdList=[name])  # AWSCURRENT: unaffected
    assert json.loads(batch["SecretValues"][0]["SecretString"])["password"] == "v0"

    # what createSecret does: put the value under the token, labelled AWSPENDING
    new_value = json.dumps({"user": "app", "password": "v1"})
    put = sm.put_secret_value(
        SecretId=name, ClientRequestToken=token, SecretString=new_value, VersionStages=["AWSPENDING"]
    )
    assert put["VersionId"] == token and put["VersionStages"] == ["AWSPENDING"]
    assert sm.get_secret_value(SecretId=name, VersionStage="AWSPENDING")["SecretString"] == new_value
    assert holder(stages_of(sm, name), "AWSCURRENT") == first
    again = sm.put_secret_value(
        SecretId=name, ClientRequestToken=token, SecretString=new_value, VersionStages=["AWSPENDING"]
    )
    assert again["VersionId"] == token  # the same token and value: idempotent
    with pytest.raises(sm.exceptions.ResourceExistsException):
        sm.put_secret_value(SecretId=name, ClientRequestToken=token, SecretString="something else")

    # the rotation resumes from createSecret, which now finds the value, and completes
    sm.untag_resource(SecretId=name, TagKeys=["fail-at"])
    own_server.advance_clock(BACKOFF_SECONDS)
    own_server.run_jobs()
    stages = stages_of(sm, name)
    assert holder(stages, "AWSCURRENT") == token and holder(stages, "AWSPENDING") is None
    assert value_of(sm, name)["password"] == "v1"


@pytest.mark.parametrize("step", STEPS)
def test_a_function_failing_at_each_step(own_server: KhoaServer, controlled: str, step: str) -> None:
    sm = own_server.client("secretsmanager")
    name, first = _secret(sm, {"fail-at": step})
    arn = sm.describe_secret(SecretId=name)["ARN"]
    alerts_before = _alerts_raised(own_server)
    token = rotate_now(
        own_server, sm, name, RotationLambdaARN=controlled, RotationRules={"AutomaticallyAfterDays": 30}
    )
    own_server.run_jobs()  # the alert pass after the failure

    stages = stages_of(sm, name)
    assert holder(stages, "AWSCURRENT") == first
    assert value_of(sm, name) == {"user": "app", "password": "v0"}, "the current value was lost"
    assert holder(stages, "AWSPENDING") == token, "AWSPENDING must stay for the next attempt"
    if step == "createSecret":  # the rotation's version exists, with no value yet
        with pytest.raises(sm.exceptions.ResourceNotFoundException):
            sm.get_secret_value(SecretId=name, VersionStage="AWSPENDING")
    else:
        assert value_of(sm, name, VersionStage="AWSPENDING")["password"] != "v0"
    assert "LastRotatedDate" not in sm.describe_secret(SecretId=name)
    _refused_while_pending(sm, name)

    failed = _failed_events(own_server, arn)
    assert failed and failed[0]["additionalEventData"]["step"] == step
    assert failed[0]["additionalEventData"]["versionId"] == token
    assert "v0" not in json.dumps(failed)
    assert _alerts_raised(own_server) >= alerts_before + 1

    # no retry before the backoff has passed
    own_server.advance_clock(30)
    own_server.run_jobs()
    assert holder(stages_of(sm, name), "AWSCURRENT") == first

    # the cause goes away; the next attempt resumes and completes the same rotation
    sm.untag_resource(SecretId=name, TagKeys=["fail-at"])
    own_server.advance_clock(BACKOFF_SECONDS)
    own_server.run_jobs()
    stages = stages_of(sm, name)
    assert holder(stages, "AWSCURRENT") == token
    assert holder(stages, "AWSPREVIOUS") == first
    assert holder(stages, "AWSPENDING") is None
    assert value_of(sm, name, VersionStage="AWSPREVIOUS") == {"user": "app", "password": "v0"}
    assert "LastRotatedDate" in sm.describe_secret(SecretId=name)
    # and the one after it runs at once
    again = rotate_now(own_server, sm, name)
    assert holder(stages_of(sm, name), "AWSCURRENT") == again


def test_the_functions_calls_are_audited_as_its_role(own_server: KhoaServer, controlled: str) -> None:
    sm = own_server.client("secretsmanager")
    name, _ = _secret(sm, {})
    rotate_now(own_server, sm, name, RotationLambdaARN=controlled)
    events = own_server.client("cloudtrail").lookup_events(
        LookupAttributes=[{"AttributeKey": "Username", "AttributeValue": "khoa-rotation-controlled"}]
    )["Events"]
    records = [json.loads(e["CloudTrailEvent"]) for e in events]
    put = [r for r in records if r["eventName"] == "PutSecretValue" and name in json.dumps(r)]
    assert put, "the function's PutSecretValue is not in the trail"
    identity = put[0]["userIdentity"]
    assert identity["type"] == "AssumedRole"
    assert identity["sessionContext"]["sessionIssuer"]["arn"].split(":role/")[1].startswith("rotation-role")
    assert identity["sessionContext"].get("sourceIdentity") == "secretsmanager.amazonaws.com"


def test_a_database_that_is_down(own_server: KhoaServer, pg_database: PgDatabase) -> None:
    sm = own_server.client("secretsmanager")
    function = register(own_server, f"pg-single-{uuid.uuid4().hex[:6]}", "postgresql-single-user", "builtin")
    original = pg_database.secret()
    name = f"failing/db-down/{uuid.uuid4().hex[:8]}"
    first = sm.create_secret(Name=name, SecretString=json.dumps(original))["VersionId"]

    pg_database.cluster.stop()
    try:
        token = rotate_now(own_server, sm, name, RotationLambdaARN=function)
        stages = stages_of(sm, name)
        assert holder(stages, "AWSCURRENT") == first
        assert holder(stages, "AWSPENDING") == token
        assert value_of(sm, name) == original
        failed = _failed_events(own_server, sm.describe_secret(SecretId=name)["ARN"])
        assert failed[0]["additionalEventData"]["step"] == "setSecret"
        assert original["password"] not in json.dumps(failed)
    finally:
        pg_database.cluster.start()
    # nothing changed in the database meanwhile
    assert pg_database.can_login(original["username"], original["password"])

    own_server.advance_clock(BACKOFF_SECONDS)
    own_server.run_jobs()
    stages = stages_of(sm, name)
    assert holder(stages, "AWSCURRENT") == token and holder(stages, "AWSPENDING") is None
    rotated = value_of(sm, name)
    assert pg_database.can_login(rotated["username"], rotated["password"])
    assert not pg_database.can_login(original["username"], original["password"])


def _expire_dead_node(server: KhoaServer) -> None:
    """What waiting would do after a node dies: its jobs lease (30 s) and its claim on the rotation
    (engine.CLAIM_SECONDS) expire, both by the wall clock, which the test clock cannot advance."""
    engine = create_database_engine(Settings(data_dir=server.data_dir).effective_database_url)
    try:
        with engine.begin() as conn:
            conn.execute(update(schema.leases).values(expires_at=0.0))
            conn.execute(update(schema.rotation_runs).values(owner_expires_at=0.0))
    finally:
        engine.dispose()


@pytest.mark.parametrize("when", ["before", "after"])
def test_server_killed_during_finish_secret(
    own_server: KhoaServer, controlled: str, tmp_path: Path, when: str
) -> None:
    """Killed in finishSecret before it moved AWSCURRENT, or after (but before the engine recorded the
    rotation as done): either way the state is consistent and the restarted server finishes it."""
    sm = own_server.client("secretsmanager")
    hold = tmp_path / "hold"
    hold.touch()
    name, first = _secret(sm, {"hold": f"{when}:{hold}"})
    token = sm.rotate_secret(SecretId=name, RotationLambdaARN=controlled)["VersionId"]
    wait_for(lambda: Path(f"{hold}.entered").exists(), seconds=15)
    own_server.kill9()
    hold.unlink()

    own_server.start()
    sm = own_server.client("secretsmanager")
    stages = stages_of(sm, name)
    assert holder(stages, "AWSPENDING") == token
    if when == "before":
        assert holder(stages, "AWSCURRENT") == first
        assert value_of(sm, name)["password"] == "v0"
    else:  # AWSCURRENT moved: the new value is current; AWSPENDING not yet cleared, as mid-rotation on AWS
        assert holder(stages, "AWSCURRENT") == token
        assert holder(stages, "AWSPREVIOUS") == first
        assert value_of(sm, name)["password"] != "v0"
    assert value_of(sm, name, VersionId=first)["password"] == "v0"
    _refused_while_pending(sm, name)

    _expire_dead_node(own_server)
    # the restarted process's test clock starts again from the wall clock, behind the one that queued
    # the rotation (earlier tests advanced it): catch up
    own_server.advance_clock(3600)
    assert own_server.run_jobs() > 0, "the restarted server did not become the job leader"
    stages = stages_of(sm, name)
    assert holder(stages, "AWSCURRENT") == token
    assert holder(stages, "AWSPREVIOUS") == first
    assert holder(stages, "AWSPENDING") is None
    assert "LastRotatedDate" in sm.describe_secret(SecretId=name)
    sm.untag_resource(SecretId=name, TagKeys=["hold"])
    assert holder(stages_of(sm, name), "AWSCURRENT") == token
    again = rotate_now(own_server, sm, name)
    assert holder(stages_of(sm, name), "AWSCURRENT") == again
