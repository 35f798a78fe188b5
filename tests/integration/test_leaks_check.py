"""khoa-leaks CheckLeakedValues through boto3 against a real server: live and former values of every
kind Khoa holds, account scoping, its own permission, the rate limit, AWS-shaped errors, and no value
in any response, trail record or log line."""

from __future__ import annotations

import base64
import functools
import json
import secrets
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from khoa.client.leaks import add_models, leaks_client
from tests.integration.test_cloudtrail import lookup
from tests.support.errors import expect_error
from tests.support.identity import Caller, new_user
from tests.support.names import unique
from tests.support.server import ACCESS_KEY_ID, ACCOUNT_ID, REGION, SECRET_ACCESS_KEY, KhoaServer

ALLOW_CHECK = {"Effect": "Allow", "Action": "khoa:CheckLeakedValues", "Resource": "*"}
ALLOW_DESCRIBE = {"Effect": "Allow", "Action": "secretsmanager:DescribeSecret", "Resource": "*"}


@pytest.fixture(scope="module", autouse=True)
def _leaks_model() -> None:
    """Let the default boto3 session (Caller.client, server.client) find the khoa-leaks model."""
    add_models(boto3._get_default_session())


@functools.cache
def _session(key: str, secret: str, token: str | None = None) -> Any:
    """One boto3 session per credential: a new session reads botocore's data files again."""
    return boto3.Session(aws_access_key_id=key, aws_secret_access_key=secret, aws_session_token=token)


def client_for(
    server: KhoaServer, key: str = ACCESS_KEY_ID, secret: str = SECRET_ACCESS_KEY, token: str | None = None
) -> Any:
    return leaks_client(
        _session(key, secret, token), server.endpoint, REGION, config=Config(retries={"max_attempts": 1})
    )


def unchecked_client(server: KhoaServer) -> Any:
    """The account root's client without botocore's parameter validation (the server's answers)."""
    return leaks_client(
        _session(ACCESS_KEY_ID, SECRET_ACCESS_KEY),
        server.endpoint,
        REGION,
        config=Config(retries={"max_attempts": 1}, parameter_validation=False),
    )


@pytest.fixture(scope="module")
def private_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KhoaServer]:
    """A server of this module's own, for the tests that move its clock or restart it (each start
    begins at the wall clock again)."""
    instance = KhoaServer(tmp_path_factory.mktemp("leaks") / "data").start()
    yield instance
    instance.stop()


@pytest.fixture
def leaks(server: KhoaServer) -> Any:
    return client_for(server)


def value(prefix: str = "v") -> str:
    return f"{prefix}-{secrets.token_urlsafe(24)}"


def check(leaks: Any, *values: str) -> dict[str, list[dict[str, Any]]]:
    """Matches by candidate value (each candidate's Id is its position)."""
    answer = leaks.check_leaked_values(Candidates=[{"Id": str(i), "Value": v} for i, v in enumerate(values)])
    found: dict[str, list[dict[str, Any]]] = {v: [] for v in values}
    for match in answer["Matches"]:
        found[values[int(match["Id"])]].append(match)
    return found


def one(matches: list[dict[str, Any]]) -> dict[str, Any]:
    assert len(matches) == 1, matches
    return matches[0]


# -- secrets --------------------------------------------------------------------------------------


def test_secret_whole_value_and_json_leaf_are_live(sm: Any, leaks: Any) -> None:
    password = value("pw")
    document = json.dumps({"username": "app", "password": password, "port": 5432})
    created = sm.create_secret(Name=unique("leak-json"), SecretString=document)
    found = check(leaks, document, password, "app", value("unknown"))
    whole = one(found[document])
    assert whole["Status"] == "live"
    assert whole["ResourceType"] == "secret"
    assert whole["ResourceArn"] == created["ARN"]
    assert whole["VersionId"] == created["VersionId"]
    assert whole["VersionStages"] == ["AWSCURRENT"]
    assert "Field" not in whole and "InvalidSince" not in whole
    leaf = one(found[password])
    assert (leaf["Status"], leaf["Field"], leaf["ResourceArn"]) == ("live", "password", created["ARN"])
    # a username is where to log in, not a credential; unknown values match nothing
    assert found["app"] == []
    assert list(found.values())[3] == []


def test_binary_secret_matches_its_base64_text(sm: Any, leaks: Any) -> None:
    raw = secrets.token_bytes(32)
    created = sm.create_secret(Name=unique("leak-bin"), SecretBinary=raw)
    match = one(check(leaks, base64.b64encode(raw).decode())[base64.b64encode(raw).decode()])
    assert (match["Status"], match["ResourceArn"]) == ("live", created["ARN"])


def test_rotated_out_secret_version_is_former(sm: Any, leaks: Any) -> None:
    name = unique("leak-rotated")
    first, second, third = value("one"), value("two"), value("three")
    v1 = sm.create_secret(Name=name, SecretString=first)["VersionId"]
    v2 = sm.put_secret_value(SecretId=name, SecretString=second)["VersionId"]
    before = time.time()
    v3 = sm.put_secret_value(SecretId=name, SecretString=third)["VersionId"]  # v1 loses AWSPREVIOUS
    found = check(leaks, first, second, third)
    old = one(found[first])
    assert (old["Status"], old["VersionId"], old["VersionStages"]) == ("former", v1, [])
    assert isinstance(old["InvalidSince"], datetime)
    assert before - 5 <= old["InvalidSince"].timestamp() <= time.time() + 5
    previous = one(found[second])
    assert (previous["Status"], previous["VersionId"], previous["VersionStages"]) == (
        "live",
        v2,
        ["AWSPREVIOUS"],
    )
    current = one(found[third])
    assert (current["Status"], current["VersionId"], current["VersionStages"]) == ("live", v3, ["AWSCURRENT"])
    # a custom label keeps a version live; removing the last label makes it former
    sm.update_secret_version_stage(SecretId=name, VersionStage="KEEP", MoveToVersionId=v1)
    assert one(check(leaks, first)[first])["Status"] == "live"
    sm.update_secret_version_stage(SecretId=name, VersionStage="KEEP", RemoveFromVersionId=v1)
    assert one(check(leaks, first)[first])["Status"] == "former"


# -- parameters -----------------------------------------------------------------------------------


def test_securestring_latest_version_is_live_older_is_former(ssm: Any, leaks: Any) -> None:
    name = f"/leaks/{unique('p')}"
    old, new, plain = value("old"), value("new"), value("plain")
    ssm.put_parameter(Name=name, Value=old, Type="SecureString")
    ssm.put_parameter(Name=name, Value=new, Type="SecureString", Overwrite=True)
    ssm.put_parameter(Name=f"{name}-plain", Value=plain, Type="String")
    found = check(leaks, old, new, plain)
    arn = f"arn:aws:ssm:{REGION}:{ACCOUNT_ID}:parameter{name}"
    former = one(found[old])
    assert (former["Status"], former["ResourceType"], former["ResourceArn"], former["VersionId"]) == (
        "former",
        "parameter",
        arn,
        "1",
    )
    assert "InvalidSince" in former
    live = one(found[new])
    assert (live["Status"], live["VersionId"]) == ("live", "2")
    assert found[plain] == []  # only SecureStrings are secrets
    ssm.delete_parameter(Name=name)
    assert one(check(leaks, new)[new])["Status"] == "former"  # kept after deletion, as former


# -- access keys and STS --------------------------------------------------------------------------


def test_access_key_active_inactive_deleted(server: KhoaServer, iam: Any, leaks: Any) -> None:
    user = new_user(server, iam)
    for candidate in (user.secret_access_key, user.access_key_id):
        match = one(check(leaks, candidate)[candidate])
        assert match["Status"] == "live"
        assert match["ResourceType"] == "access-key"
        assert match["ResourceArn"] == user.arn
        assert match["AccessKeyId"] == user.access_key_id
    iam.update_access_key(UserName=user.name, AccessKeyId=user.access_key_id, Status="Inactive")
    inactive = one(check(leaks, user.secret_access_key)[user.secret_access_key])
    assert inactive["Status"] == "former" and "InvalidSince" in inactive
    iam.update_access_key(UserName=user.name, AccessKeyId=user.access_key_id, Status="Active")
    assert one(check(leaks, user.secret_access_key)[user.secret_access_key])["Status"] == "live"
    renamed = unique("renamed")
    iam.update_user(UserName=user.name, NewUserName=renamed)
    moved = one(check(leaks, user.access_key_id)[user.access_key_id])
    assert moved["ResourceArn"] == f"arn:aws:iam::{ACCOUNT_ID}:user/{renamed}"
    user.name = renamed
    iam.delete_access_key(UserName=user.name, AccessKeyId=user.access_key_id)
    deleted = one(check(leaks, user.secret_access_key)[user.secret_access_key])
    assert (deleted["Status"], deleted["AccessKeyId"]) == ("former", user.access_key_id)
    assert "InvalidSince" in deleted


def _role(iam: Any) -> str:
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_ID}:root"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    return str(
        iam.create_role(RoleName=unique("leak-role"), AssumeRolePolicyDocument=json.dumps(trust))["Role"][
            "Arn"
        ]
    )


def test_sts_credential_live_until_it_expires(private_server: KhoaServer) -> None:
    iam = private_server.client("iam")
    role_arn = _role(iam)
    assumer = new_user(
        private_server, iam, {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": role_arn}
    )
    credentials = assumer.client("sts").assume_role(
        RoleArn=role_arn, RoleSessionName="leak", DurationSeconds=900
    )["Credentials"]
    leaks = client_for(private_server)
    secret, key_id = credentials["SecretAccessKey"], credentials["AccessKeyId"]
    found = check(leaks, secret, key_id)
    for candidate in (secret, key_id):
        match = one(found[candidate])
        assert (match["Status"], match["ResourceType"], match["ResourceArn"], match["AccessKeyId"]) == (
            "live",
            "sts-credential",
            role_arn,
            key_id,
        )
    private_server.advance_clock(1000)
    expired = one(check(leaks, secret)[secret])
    assert expired["Status"] == "former"
    assert abs(expired["InvalidSince"].timestamp() - credentials["Expiration"].timestamp()) < 1


# -- backfill -------------------------------------------------------------------------------------


def test_values_stored_before_fingerprints_are_backfilled(private_server: KhoaServer) -> None:
    """An installation upgraded to fingerprints: its values are fingerprinted by the backfill job
    after the (re)start, with the right status."""
    sm, ssm = private_server.client("secretsmanager"), private_server.client("ssm")
    name = unique("leak-backfill")
    first, password, param_old, param_new = value("first"), value("pw"), value("p1"), value("p2")
    current = json.dumps({"password": password})
    created = sm.create_secret(Name=name, SecretString=first)
    sm.put_secret_value(SecretId=name, SecretString=value("second"))
    latest = sm.put_secret_value(SecretId=name, SecretString=current)["VersionId"]
    ssm.put_parameter(Name="/backfill/p", Value=param_old, Type="SecureString")
    ssm.put_parameter(Name="/backfill/p", Value=param_new, Type="SecureString", Overwrite=True)
    with sqlite3.connect(private_server.data_dir / "khoa.db") as conn:  # as if they predated the table
        conn.execute("DELETE FROM leak_fingerprints")
    leaks = client_for(private_server)
    assert check(leaks, first, password) == {first: [], password: []}
    private_server.stop()
    private_server.start()
    leaks = client_for(private_server)
    deadline = time.monotonic() + 30
    while not all(check(leaks, first, password, param_old, param_new).values()):
        assert time.monotonic() < deadline, "the backfill job did not fingerprint the values"
        private_server.run_jobs()
        time.sleep(0.2)
    found = check(leaks, first, password, current, param_old, param_new)
    old = one(found[first])
    assert (old["Status"], old["ResourceArn"], old["VersionId"]) == (
        "former",
        created["ARN"],
        created["VersionId"],
    )
    assert "InvalidSince" in old
    leaf = one(found[password])
    assert (leaf["Status"], leaf["Field"], leaf["VersionId"]) == ("live", "password", latest)
    assert one(found[current])["Status"] == "live"
    assert (one(found[param_old])["Status"], one(found[param_new])["Status"]) == ("former", "live")


def test_account_root_keys_made_by_the_cli_are_backfilled(server: KhoaServer, account_b: Caller) -> None:
    """``khoa account create`` writes the root's key outside IAM's API: the job fingerprints it."""
    own = client_for(server, account_b.access_key_id, account_b.secret_access_key)
    deadline = time.monotonic() + 30
    while not check(own, account_b.secret_access_key)[account_b.secret_access_key]:
        assert time.monotonic() < deadline, "the backfill job did not fingerprint the root key"
        server.run_jobs()
        time.sleep(0.2)
    match = one(check(own, account_b.secret_access_key)[account_b.secret_access_key])
    assert (match["Status"], match["ResourceArn"], match["AccessKeyId"]) == (
        "live",
        f"arn:aws:iam::{account_b.account_id}:root",
        account_b.access_key_id,
    )


# -- scoping, permission, rate ------------------------------------------------------------------


def test_another_account_never_sees_this_accounts_values(
    server: KhoaServer, sm: Any, leaks: Any, account_b: Caller
) -> None:
    mine = value("a")
    sm.create_secret(Name=unique("leak-scope"), SecretString=mine)
    theirs = value("b")
    account_b.client("secretsmanager").create_secret(Name=unique("leak-scope"), SecretString=theirs)
    other = client_for(server, account_b.access_key_id, account_b.secret_access_key)
    seen_by_b = check(other, mine, theirs)
    assert seen_by_b[mine] == []
    assert one(seen_by_b[theirs])["ResourceArn"].split(":")[4] == account_b.account_id
    assert check(leaks, theirs)[theirs] == []


def test_denied_without_the_permission_allowed_with_it(server: KhoaServer, iam: Any, sm: Any) -> None:
    stored = value("perm")
    sm.create_secret(Name=unique("leak-perm"), SecretString=stored)
    without = new_user(server, iam, {"Effect": "Allow", "Action": "secretsmanager:*", "Resource": "*"})
    error = expect_error(
        "AccessDeniedException",
        client_for(server, without.access_key_id, without.secret_access_key).check_leaked_values,
        Candidates=[{"Id": "1", "Value": stored}],
    )
    assert "khoa:CheckLeakedValues" in error["Message"] and stored not in error["Message"]
    allowed = new_user(server, iam, ALLOW_CHECK)
    matches = client_for(server, allowed.access_key_id, allowed.secret_access_key).check_leaked_values(
        Candidates=[{"Id": "1", "Value": stored}]
    )["Matches"]
    assert [m["Status"] for m in matches] == ["live"]
    denied = new_user(server, iam, ALLOW_CHECK, {"Effect": "Deny", "Action": "khoa:*", "Resource": "*"})
    expect_error(
        "AccessDeniedException",
        client_for(server, denied.access_key_id, denied.secret_access_key).check_leaked_values,
        Candidates=[{"Id": "1", "Value": stored}],
    )


def test_report_and_emergency_rotation_need_their_own_permissions(
    server: KhoaServer, iam: Any, sm: Any
) -> None:
    created = sm.create_secret(Name=unique("leak-rotate-perm"), SecretString=value("r"))
    checker = new_user(server, iam, ALLOW_CHECK)
    client = client_for(server, checker.access_key_id, checker.secret_access_key)
    error = expect_error(
        "AccessDeniedException",
        client.report_leaked_values,
        Candidates=[{"Id": "1", "Value": "x"}],
        SourceUrl="https://example.com/a",
    )
    assert "khoa:ReportLeakedValues" in error["Message"]
    rotator = new_user(
        server, iam, {"Effect": "Allow", "Action": "secretsmanager:RotateSecret", "Resource": created["ARN"]}
    )
    error = expect_error(
        "AccessDeniedException",
        client_for(server, rotator.access_key_id, rotator.secret_access_key).emergency_rotate_secret,
        SecretId=created["ARN"],
    )
    assert "khoa:EmergencyRotateSecret" in error["Message"]
    emergency_only = new_user(
        server, iam, {"Effect": "Allow", "Action": "khoa:EmergencyRotateSecret", "Resource": "*"}
    )
    error = expect_error(
        "AccessDeniedException",
        client_for(
            server, emergency_only.access_key_id, emergency_only.secret_access_key
        ).emergency_rotate_secret,
        SecretId=created["ARN"],
    )
    assert "secretsmanager:RotateSecret" in error["Message"] and created["ARN"] in error["Message"]


def test_checks_are_rate_limited_per_principal(server: KhoaServer, iam: Any) -> None:
    first = new_user(server, iam, ALLOW_CHECK)
    second = new_user(server, iam, ALLOW_CHECK)
    hasty = client_for(server, first.access_key_id, first.secret_access_key)

    def call(_: int) -> str:
        try:
            hasty.check_leaked_values(Candidates=[{"Id": "1", "Value": value()}])
            return "ok"
        except hasty.exceptions.ClientError as error:
            assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 400
            return str(error.response["Error"]["Code"])

    with ThreadPoolExecutor(8) as pool:  # 40 calls at once: the bucket holds 20
        outcomes = list(pool.map(call, range(40)))
    assert set(outcomes) == {"ok", "ThrottlingException"}
    assert 20 <= outcomes.count("ok") < 40
    # another principal has its own bucket
    client_for(server, second.access_key_id, second.secret_access_key).check_leaked_values(
        Candidates=[{"Id": "1", "Value": value()}]
    )


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("candidates", "needle"),
    [
        ([], "candidates"),
        ([{"Id": "1", "Value": ""}], "candidates.1.member.value"),
        ([{"Id": "1", "Value": "x" * 65537}], "candidates.1.member.value"),
        ([{"Id": "", "Value": "abc"}], "candidates.1.member.id"),
        ([{"Id": str(i), "Value": "abc"} for i in range(101)], "candidates"),
        ([{"Value": "abc"}], "candidates.1.member.id"),
    ],
)
def test_bad_input_is_a_validation_error(
    server: KhoaServer, candidates: list[dict[str, str]], needle: str
) -> None:
    client = unchecked_client(server)
    error = expect_error("ValidationException", client.check_leaked_values, Candidates=candidates)
    assert needle in error["Message"]
    assert "abc" not in error["Message"] and "xxxx" not in error["Message"]


def test_duplicate_ids_and_wrong_types_are_refused(leaks: Any, server: KhoaServer) -> None:
    error = expect_error(
        "ValidationException",
        leaks.check_leaked_values,
        Candidates=[{"Id": "same", "Value": "one-value"}, {"Id": "same", "Value": "two-value"}],
    )
    assert "same" in error["Message"] and "one-value" not in error["Message"]
    unchecked = unchecked_client(server)
    expect_error(
        "ValidationException", unchecked.report_leaked_values, Candidates=[{"Id": "1", "Value": "v"}]
    )


# -- nothing leaks from the leak check ------------------------------------------------------------


@pytest.fixture
def trail(server: KhoaServer) -> Iterator[Any]:
    yield server.client("cloudtrail")


def test_no_value_in_responses_trail_or_log(server: KhoaServer, sm: Any, leaks: Any, trail: Any) -> None:
    stored, unknown = value("trail"), value("nothing")
    created = sm.create_secret(Name=unique("leak-trail"), SecretString=json.dumps({"password": stored}))
    answer = leaks.check_leaked_values(
        Candidates=[{"Id": "hit", "Value": stored}, {"Id": "miss", "Value": unknown}]
    )
    assert [m["Id"] for m in answer["Matches"]] == ["hit"]
    assert stored not in json.dumps(answer, default=str)
    request_id = answer["ResponseMetadata"]["RequestId"]
    events = [
        e for e in lookup(trail, "EventName", "CheckLeakedValues") if request_id in e["CloudTrailEvent"]
    ]
    record = json.loads(one(events)["CloudTrailEvent"])
    assert record["eventSource"] == "khoa-leaks.amazonaws.com"
    assert record["requestParameters"] == {"candidates": [{"id": "hit"}, {"id": "miss"}]}
    assert record["responseElements"]["matches"][0]["resourceArn"] == created["ARN"]
    text = json.dumps(record)
    assert stored not in text and unknown not in text
    log = server.log_path.read_text(errors="replace")
    assert stored not in log and unknown not in log


# -- PostgreSQL, two workers ----------------------------------------------------------------------


def test_check_and_rate_limit_on_postgresql_with_two_workers(tmp_path: Path, private_postgres: str) -> None:
    """The same answers on PostgreSQL, and one bucket per principal whichever worker answers."""
    instance = KhoaServer(tmp_path / "data", database_url=private_postgres, extra_env={"KHOA_WORKERS": "2"})
    instance.start()
    try:
        iam = instance.client("iam")
        sm = instance.client("secretsmanager")
        name = unique("leak-pg")
        first, password = value("pg1"), value("pgpw")
        created = sm.create_secret(Name=name, SecretString=first)
        sm.put_secret_value(SecretId=name, SecretString=value("pg2"))
        sm.put_secret_value(SecretId=name, SecretString=json.dumps({"password": password}))
        # a scanner that may describe the secrets, so matches name them (visibility.py)
        user = new_user(instance, iam, ALLOW_CHECK, ALLOW_DESCRIBE)
        leaks = client_for(instance, user.access_key_id, user.secret_access_key)
        found = check(leaks, first, password, user.secret_access_key)
        assert (one(found[first])["Status"], one(found[first])["VersionId"]) == (
            "former",
            created["VersionId"],
        )
        assert (one(found[password])["Status"], one(found[password])["Field"]) == ("live", "password")
        assert one(found[user.secret_access_key])["ResourceArn"] == user.arn

        def call(_: int) -> str:
            try:
                leaks.check_leaked_values(Candidates=[{"Id": "1", "Value": value()}])
                return "ok"
            except leaks.exceptions.ClientError as error:
                return str(error.response["Error"]["Code"])

        with ThreadPoolExecutor(8) as pool:
            outcomes = list(pool.map(call, range(40)))
        assert set(outcomes) == {"ok", "ThrottlingException"}
        assert outcomes.count("ok") < 30  # 19 tokens were left, plus what refilled meanwhile
    finally:
        instance.stop()
