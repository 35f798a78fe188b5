"""The response to a leak, through the wire (ReportLeakedValues with Respond, EmergencyRotateSecret and
``khoa secrets emergency-rotate``) against a real server:

- a leaked access key is deactivated and its user quarantined: the key's next call is refused, and the
  user's other key is denied everything by the quarantine policy;
- a leaked PostgreSQL credential (a private cluster that checks passwords, tests/support/pgcluster.py)
  is emergency-rotated: the leaked password and the previous user's no longer log in, AWSPREVIOUS is
  gone, and applications reading through Khoa's client and aws-secretsmanager-caching keep working;
- the same for MariaDB's alternating users (through EmergencyRotateSecret); a rotation that fails is
  reported with what was done, and a second call resumes it;
- the account root's key is deactivated only when the root keeps another active key;
- a secret without rotation and a SecureString are alerted with what to do;
- every response is a LeakResponse event and a ``secret-leaked`` alert, all visible in LookupEvents, and
  no value appears in the responses, the trail or the command's output.
"""

from __future__ import annotations

import functools
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from aws_secretsmanager_caching import SecretCache, SecretCacheConfig
from botocore.exceptions import ClientError

from khoa.client import SecretReader, connect_postgres
from khoa.client.leaks import leaks_client
from tests.support import mariadb, pgcluster
from tests.support.cli_here import khoa_here, register
from tests.support.iam import allow, document
from tests.support.identity import Caller
from tests.support.khoa_cli import run_khoa
from tests.support.mariadb import MariaDatabase
from tests.support.names import secret_name, unique
from tests.support.pgcluster import PgDatabase
from tests.support.rotation import holder, stages_of, value_of
from tests.support.server import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, KhoaServer

# the database fixtures (pytest finds fixtures among a module's names)
pg_cluster = pgcluster.pg_cluster
pg_database = pgcluster.pg_database
maria_database = mariadb.maria_database

QUARANTINE = "arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV2"
REFUSED_KEY = {"InvalidClientTokenId", "UnrecognizedClientException", "AccessDenied", "AccessDeniedException"}


@functools.cache
def _session(key: str, secret: str) -> Any:
    """One boto3 session per credential pair: a new session reads botocore's data files again."""
    return boto3.session.Session(aws_access_key_id=key, aws_secret_access_key=secret, region_name=REGION)


def leaks(server: KhoaServer, key: str = ACCESS_KEY_ID, secret: str = SECRET_ACCESS_KEY) -> Any:
    return leaks_client(_session(key, secret), server.endpoint, REGION)


def report(server: KhoaServer, *values: str) -> dict[str, Any]:
    candidates = [{"Id": f"c{n}", "Value": value} for n, value in enumerate(values)]
    result: dict[str, Any] = leaks(server).report_leaked_values(
        Candidates=candidates, SourceUrl="https://git.example.com/acme/app/blob/main/.env", Respond=True
    )
    return result


def events(server: KhoaServer, name: str, since: datetime) -> list[dict[str, Any]]:
    trail = server.client("cloudtrail")
    found = trail.lookup_events(
        LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": name}], StartTime=since
    )["Events"]
    return [json.loads(e["CloudTrailEvent"]) | {"Resources": e.get("Resources", [])} for e in found]


def leak_alerts(server: KhoaServer) -> list[dict[str, Any]]:
    server.run_jobs()  # the alert rules run on the job pass
    listed = khoa_here(
        server, "alerts", "list", "--json", "--since", "2000-01-01T00:00:00Z", "--limit", "10000"
    )
    return [a for a in json.loads(listed) if a["rule"] == "secret-leaked"]


def assert_no_value(text: str, *values: str) -> None:
    for value in values:
        assert value not in text, "a leaked value appears in the output"


def started() -> datetime:
    return datetime.now(UTC) - timedelta(minutes=5)


# -- access keys ------------------------------------------------------------------------------------
def test_a_leaked_access_key_is_deactivated_and_quarantined(server: KhoaServer, iam: Any) -> None:
    since = started()
    user = unique("leaky")
    iam.create_user(UserName=user)
    iam.put_user_policy(
        UserName=user, PolicyName="work", PolicyDocument=document(allow("secretsmanager:ListSecrets"))
    )
    leaked = iam.create_access_key(UserName=user)["AccessKey"]
    other = iam.create_access_key(UserName=user)["AccessKey"]

    def sm_as(key: dict[str, str]) -> Any:
        return server.client(
            "secretsmanager",
            aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"],
        )

    sm_as(leaked).list_secrets(MaxResults=1)  # it works before the leak is reported
    sm_as(other).list_secrets(MaxResults=1)

    result = report(server, leaked["SecretAccessKey"])
    [match] = result["Matches"]
    assert match["Status"] == "live" and match["ResourceType"] == "access-key"
    assert match["AccessKeyId"] == leaked["AccessKeyId"]
    [response] = result["Responses"]
    assert response["Action"] == "access-key-quarantined"
    assert response["ResourceArn"].endswith(f":user/{user}")
    assert leaked["AccessKeyId"] in response["Detail"]
    assert_no_value(json.dumps(result, default=str), leaked["SecretAccessKey"])

    # deactivated (not deleted: left to an administrator) and quarantined
    keys = {k["AccessKeyId"]: k["Status"] for k in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]}
    assert keys == {leaked["AccessKeyId"]: "Inactive", other["AccessKeyId"]: "Active"}
    attached = iam.list_attached_user_policies(UserName=user)["AttachedPolicies"]
    assert QUARANTINE in [p["PolicyArn"] for p in attached]
    policy = iam.get_policy_version(PolicyArn=QUARANTINE, VersionId="v1")["PolicyVersion"]["Document"]
    policy = json.loads(policy) if isinstance(policy, str) else policy
    assert policy["Statement"] == [{"Effect": "Deny", "Action": "*", "Resource": "*"}]

    # the leaked key's next call is refused; the user's other key is denied by the quarantine policy
    with pytest.raises(ClientError) as refused:
        sm_as(leaked).list_secrets(MaxResults=1)
    assert refused.value.response["Error"]["Code"] in REFUSED_KEY
    with pytest.raises(ClientError) as denied:
        sm_as(other).list_secrets(MaxResults=1)
    assert denied.value.response["Error"]["Code"] == "AccessDeniedException"

    # the response is in the trail, and raised the alert; no value anywhere
    [event] = [
        e
        for e in events(server, "LeakResponse", since)
        if e["additionalEventData"]["resourceArn"] == response["ResourceArn"]
    ]
    assert event["eventSource"] == "khoa-leaks.amazonaws.com"
    assert event["additionalEventData"]["action"] == "access-key-quarantined"
    assert event["additionalEventData"]["accessKeyId"] == leaked["AccessKeyId"]
    reports = events(server, "ReportLeakedValues", since)
    assert reports, "the report call is not in the trail"
    assert_no_value(json.dumps([*reports, event]), leaked["SecretAccessKey"])
    alerts = [a for a in leak_alerts(server) if response["ResourceArn"] in json.dumps(a)]
    assert alerts, "no secret-leaked alert for the quarantined key"
    assert_no_value(json.dumps(alerts), leaked["SecretAccessKey"])

    # an administrator closes the incident (runbook step 5)
    iam.delete_access_key(UserName=user, AccessKeyId=leaked["AccessKeyId"])
    iam.detach_user_policy(UserName=user, PolicyArn=QUARANTINE)
    sm_as(other).list_secrets(MaxResults=1)


def test_a_leaked_root_key_is_deactivated_only_when_the_root_keeps_another(
    server: KhoaServer, account_b: Caller
) -> None:
    """The account root's key cannot be quarantined by a policy, and deactivating its only key would
    leave the account without its root: then Khoa alerts (critical) and leaves it to the operator."""
    server.run_jobs()  # fingerprints keys made outside IAM (`khoa account create`)
    root = leaks(server, account_b.access_key_id, account_b.secret_access_key)
    candidates = [{"Id": "root", "Value": account_b.secret_access_key}]
    source = "https://paste.example.com/abc"
    [alone] = root.report_leaked_values(Candidates=candidates, SourceUrl=source)["Responses"]
    assert alone["Action"] == "alerted" and "only active access key" in alone["Detail"]
    assert alone["ResourceArn"] == account_b.arn
    assert account_b.client("sts").get_caller_identity()["Arn"] == account_b.arn  # still usable

    spare = account_b.client("iam").create_access_key()["AccessKey"]
    [deactivated] = root.report_leaked_values(Candidates=candidates, SourceUrl=source)["Responses"]
    assert deactivated["Action"] == "access-key-quarantined"
    with pytest.raises(ClientError) as refused:
        account_b.client("sts", fresh=True).get_caller_identity()
    assert refused.value.response["Error"]["Code"] in REFUSED_KEY
    spare_sts = server.client(
        "sts", aws_access_key_id=spare["AccessKeyId"], aws_secret_access_key=spare["SecretAccessKey"]
    )
    assert spare_sts.get_caller_identity()["Arn"] == account_b.arn
    keys = server.client(
        "iam", aws_access_key_id=spare["AccessKeyId"], aws_secret_access_key=spare["SecretAccessKey"]
    ).list_access_keys()["AccessKeyMetadata"]
    assert {k["AccessKeyId"]: k["Status"] for k in keys} == {
        account_b.access_key_id: "Inactive",
        spare["AccessKeyId"]: "Active",
    }


# -- secrets and parameters Khoa can only report --------------------------------------------------------
def test_a_secret_without_rotation_and_a_securestring_are_alerted(
    server: KhoaServer, sm: Any, ssm: Any
) -> None:
    since = started()
    password = f"pw-{uuid.uuid4().hex}"
    name = secret_name("leak/norotation")
    created = sm.create_secret(Name=name, SecretString=json.dumps({"username": "app", "password": password}))
    parameter = f"/leak/{uuid.uuid4().hex[:10]}/token"
    token = f"tok-{uuid.uuid4().hex}"
    ssm.put_parameter(Name=parameter, Type="SecureString", Value="first-" + token)
    version = ssm.put_parameter(Name=parameter, Type="SecureString", Value=token, Overwrite=True)["Version"]

    result = report(server, password, token)
    responses = {r["ResourceArn"]: r for r in result["Responses"]}
    secret = responses[created["ARN"]]
    assert secret["Action"] == "alerted"
    assert "NO rotation" in secret["Detail"] and created["VersionId"] in secret["Detail"]
    [param] = [r for arn, r in responses.items() if arn.endswith(f"parameter{parameter}")]
    assert param["Action"] == "alerted"
    assert parameter in param["Detail"] and f"version {version}" in param["Detail"]
    assert_no_value(json.dumps(result, default=str), password, token)
    assert value_of(sm, name)["password"] == password  # nothing was changed: Khoa cannot

    recorded = {e["additionalEventData"]["resourceArn"]: e for e in events(server, "LeakResponse", since)}
    assert recorded[created["ARN"]]["additionalEventData"]["severity"] == "high"
    assert recorded[param["ResourceArn"]]["additionalEventData"]["versionId"] == str(version)
    assert_no_value(json.dumps(list(recorded.values())), password, token)
    text = json.dumps(leak_alerts(server))
    assert created["ARN"] in text and param["ResourceArn"] in text


def test_emergency_rotation_needs_a_rotation_function(server: KhoaServer, sm: Any) -> None:
    name = secret_name("leak/manual")
    sm.create_secret(Name=name, SecretString="not rotated")
    with pytest.raises(ClientError) as refused:
        leaks(server).emergency_rotate_secret(SecretId=name)
    assert refused.value.response["Error"]["Code"] == "InvalidRequestException"
    assert "no rotation function" in refused.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as missing:
        leaks(server).emergency_rotate_secret(SecretId=secret_name("leak/none"))
    assert missing.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_emergency_rotation_with_a_python_function_says_what_is_left(server: KhoaServer, sm: Any) -> None:
    arn = register(server, unique("simple"), "tests.support.rotators:simple")
    name = secret_name("leak/python")
    first = sm.create_secret(Name=name, SecretString=json.dumps({"password": "p0"}))["VersionId"]
    sm.rotate_secret(
        SecretId=name,
        RotationLambdaARN=arn,
        RotationRules={"AutomaticallyAfterDays": 30},
        RotateImmediately=False,
    )
    result = leaks(server).emergency_rotate_secret(SecretId=name)
    assert holder(stages_of(sm, name), "AWSCURRENT") == result["VersionId"] != first
    assert any("by hand" in action for action in result["Actions"])
    assert value_of(sm, name)["password"] != "p0"


def test_a_failing_rotation_is_reported_with_what_was_done(server: KhoaServer, sm: Any) -> None:
    arn = register(server, unique("failing"), "tests.support.rotators:failing_at_set")
    name = secret_name("leak/failing")
    first = sm.create_secret(Name=name, SecretString=json.dumps({"password": "p0"}))["VersionId"]
    sm.rotate_secret(
        SecretId=name,
        RotationLambdaARN=arn,
        RotationRules={"AutomaticallyAfterDays": 30},
        RotateImmediately=False,
    )
    with pytest.raises(ClientError) as failed:
        leaks(server).emergency_rotate_secret(SecretId=name)
    error = failed.value.response["Error"]
    assert error["Code"] == "EmergencyRotationFailedException"
    assert "setSecret failed" in error["Message"] and "started a rotation to version" in error["Message"]
    assert holder(stages_of(sm, name), "AWSCURRENT") == first  # nothing half-done became current
    # a second call resumes the run already queued (and fails again, saying so)
    with pytest.raises(ClientError) as again:
        leaks(server).emergency_rotate_secret(SecretId=name)
    assert "resumed the rotation already in progress" in again.value.response["Error"]["Message"]
    sm.cancel_rotate_secret(SecretId=name)  # not left failing on the shared server


@pytest.fixture(scope="module")
def maria_function(server: KhoaServer) -> str:
    return register(server, f"leak-mysql-alt-{uuid.uuid4().hex[:6]}", "mysql-alternating-users", "builtin")


def test_a_mariadb_alternating_users_secret_is_emergency_rotated(
    server: KhoaServer, sm: Any, maria_function: str, maria_database: MariaDatabase
) -> None:
    suffix = uuid.uuid4().hex[:8]
    master = sm.create_secret(
        Name=f"leak/maria-master/{suffix}", SecretString=json.dumps(maria_database.master_secret())
    )["ARN"]
    name = f"leak/maria-app/{suffix}"
    sm.create_secret(Name=name, SecretString=json.dumps(maria_database.secret(masterarn=master)))
    sm.rotate_secret(
        SecretId=name, RotationLambdaARN=maria_function, RotationRules={"AutomaticallyAfterDays": 30}
    )
    server.run_jobs()
    current, previous = value_of(sm, name), value_of(sm, name, VersionStage="AWSPREVIOUS")
    assert maria_database.can_login(previous["username"], previous["password"])  # a normal rotation's grace

    result = leaks(server).emergency_rotate_secret(SecretId=name)
    now = value_of(sm, name)
    assert result["VersionId"] == holder(stages_of(sm, name), "AWSCURRENT")
    assert holder(stages_of(sm, name), "AWSPREVIOUS") is None
    assert maria_database.can_login(now["username"], now["password"])
    for old in (current, previous):
        assert not maria_database.can_login(old["username"], old["password"]), "an earlier value logs in"
    assert any(f"previous user {current['username']}" in action for action in result["Actions"])


# -- PostgreSQL ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pg_functions(server: KhoaServer) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:6]
    return {
        strategy: register(server, f"leak-{strategy}-{suffix}", strategy, "builtin")
        for strategy in ("postgresql-single-user", "postgresql-alternating-users")
    }


def wait_until(condition: Callable[[], bool], seconds: float = 15.0) -> None:
    """Poll ``condition`` until it holds (instead of sleeping a fixed time that should be enough)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not true in time"
        time.sleep(0.02)


class Application:
    """Threads querying PostgreSQL through Khoa's client (a new connection each time) until stopped."""

    def __init__(self, server: KhoaServer, name: str, threads: int = 3) -> None:
        self.reader = SecretReader(server.client("secretsmanager"), watch=True)
        self.name = name
        self.ok = 0
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(threads)]

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                with connect_postgres(self.reader, self.name, autocommit=True) as conn:
                    assert conn.execute("SELECT 1").fetchone() == (1,)
                self.ok += 1
            except Exception as exc:  # noqa: BLE001 - every failure counts
                self.failed.append(type(exc).__name__)
            self._stop.wait(0.05)

    def __enter__(self) -> Application:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        self.reader.close()


@pytest.fixture
def alternating(server: KhoaServer, pg_functions: dict[str, str], pg_database: PgDatabase) -> Iterator[Any]:
    """An application secret rotated once by alternating users: AWSCURRENT (``<user>_clone``) and
    AWSPREVIOUS (``<user>``) both log in, as a normal rotation leaves them."""
    sm = server.client("secretsmanager")
    suffix = uuid.uuid4().hex[:8]
    master = sm.create_secret(
        Name=f"leak/pg-master/{suffix}", SecretString=json.dumps(pg_database.cluster.master_secret())
    )["ARN"]
    name = f"leak/pg-app/{suffix}"
    sm.create_secret(Name=name, SecretString=json.dumps(pg_database.secret(masterarn=master)))
    sm.rotate_secret(
        SecretId=name,
        RotationLambdaARN=pg_functions["postgresql-alternating-users"],
        RotationRules={"AutomaticallyAfterDays": 30},
    )
    server.run_jobs()
    current, previous = value_of(sm, name), value_of(sm, name, VersionStage="AWSPREVIOUS")
    assert current["username"] == previous["username"] + "_clone"
    assert pg_database.can_login(current["username"], current["password"])
    assert pg_database.can_login(previous["username"], previous["password"])
    yield name


@pytest.mark.postgres
def test_a_leaked_postgres_password_is_emergency_rotated(
    server: KhoaServer, sm: Any, alternating: str, pg_database: PgDatabase
) -> None:
    since = started()
    name = alternating
    before = stages_of(sm, name)
    leaked = value_of(sm, name)  # AWSCURRENT leaked (its "password" leaf, in a .env file)
    previous = value_of(sm, name, VersionStage="AWSPREVIOUS")
    plain_cache = SecretCache(
        SecretCacheConfig(secret_refresh_interval=1), client=server.client("secretsmanager")
    )
    assert json.loads(plain_cache.get_secret_string(name)) == leaked

    with Application(server, name) as app:
        # querying before the leak is reported, and still querying after its emergency rotation
        wait_until(lambda: app.ok >= 3 or bool(app.failed))
        result = report(server, leaked["password"])
        after = app.ok
        wait_until(lambda: app.ok >= after + 6 or bool(app.failed))
    [match] = result["Matches"]
    assert (match["Status"], match["ResourceType"], match.get("Field")) == ("live", "secret", "password")
    [response] = result["Responses"]
    assert response["Action"] == "emergency-rotation-started", response
    assert "did not complete" not in response["Detail"], response["Detail"]

    # the leaked password and the previous user's no longer log in; the new one does
    current = value_of(sm, name)
    stages = stages_of(sm, name)
    assert holder(stages, "AWSCURRENT") not in before
    assert holder(stages, "AWSPREVIOUS") is None, "AWSPREVIOUS must not stay valid after a leak"
    assert not pg_database.can_login(leaked["username"], leaked["password"]), "the leaked password logs in"
    assert not pg_database.can_login(previous["username"], previous["password"]), "the previous one logs in"
    assert pg_database.can_login(current["username"], current["password"])

    # applications kept working: Khoa's client throughout, a plain cache once it refreshes
    assert app.ok > 0 and app.failed == [], f"{app.ok} ok, failures: {app.failed}"
    wait_until(lambda: json.loads(plain_cache.get_secret_string(name)) != leaked)  # its 1 s refresh
    cached = json.loads(plain_cache.get_secret_string(name))
    assert cached == current and pg_database.can_login(cached["username"], cached["password"])

    # the leaked value is now a former one
    [checked] = leaks(server).check_leaked_values(Candidates=[{"Id": "x", "Value": leaked["password"]}])[
        "Matches"
    ]
    assert checked["Status"] == "former"

    # all of it in the trail, and alerted; no value anywhere
    arn = response["ResourceArn"]
    recorded = [
        e for e in events(server, "LeakResponse", since) if e["additionalEventData"]["resourceArn"] == arn
    ]
    assert [e["additionalEventData"]["action"] for e in recorded] == ["emergency-rotation-started"]
    [emergency] = [e for e in events(server, "EmergencyRotation", since) if e["resources"][0]["ARN"] == arn]
    assert emergency["additionalEventData"]["succeeded"] is True
    assert emergency["additionalEventData"]["actions"]
    assert [e for e in events(server, "RotationSucceeded", since) if e["resources"][0]["ARN"] == arn]
    secrets_held = (leaked["password"], previous["password"], current["password"])
    assert_no_value(json.dumps([result, recorded, emergency], default=str), *secrets_held)
    assert [a for a in leak_alerts(server) if arn in json.dumps(a)], "no secret-leaked alert"


# -- khoa secrets emergency-rotate ------------------------------------------------------------------
def cli_env(
    server: KhoaServer | None, key: str = ACCESS_KEY_ID, secret: str = SECRET_ACCESS_KEY
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KHOA_", "AWS_"))}
    env.update(
        {
            "AWS_ACCESS_KEY_ID": key,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_REGION": REGION,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }
    )
    if server is not None:
        env["AWS_ENDPOINT_URL"] = server.endpoint
    return env


@pytest.mark.postgres
def test_the_command_rotates_a_single_user_postgres_secret(
    server: KhoaServer, sm: Any, pg_functions: dict[str, str], pg_database: PgDatabase
) -> None:
    name = f"leak/pg-single/{uuid.uuid4().hex[:8]}"
    original = pg_database.secret()
    first = sm.create_secret(Name=name, SecretString=json.dumps(original))["VersionId"]
    sm.rotate_secret(
        SecretId=name,
        RotationLambdaARN=pg_functions["postgresql-single-user"],
        RotationRules={"AutomaticallyAfterDays": 30},
        RotateImmediately=False,
    )
    done = run_khoa(cli_env(server), "secrets", "emergency-rotate", name)
    assert done.returncode == 0, done.stderr
    current = value_of(sm, name)
    stages = stages_of(sm, name)
    version = holder(stages, "AWSCURRENT")
    assert version != first and holder(stages, "AWSPREVIOUS") is None
    assert f"Emergency rotation of {sm.describe_secret(SecretId=name)['ARN']}\n" in done.stdout
    assert f"new version (AWSCURRENT): {version}" in done.stdout
    assert f"credentials of version {first} (user {original['username']}) are refused" in done.stdout
    assert not pg_database.can_login(original["username"], original["password"])
    assert pg_database.can_login(current["username"], current["password"])
    assert_no_value(done.stdout + done.stderr, original["password"], current["password"])

    as_json = run_khoa(cli_env(server), "secrets", "emergency-rotate", name, "--json")
    assert as_json.returncode == 0, as_json.stderr
    answer = json.loads(as_json.stdout)
    assert answer["Name"] == name and answer["VersionId"] == holder(stages_of(sm, name), "AWSCURRENT")
    assert not pg_database.can_login(current["username"], current["password"])


def test_the_command_exit_codes(server: KhoaServer, sm: Any, iam: Any) -> None:
    name = secret_name("leak/cli")
    sm.create_secret(Name=name, SecretString="manual")
    command = ("secrets", "emergency-rotate")
    # 1: the call failed (nothing to rotate with)
    no_rotation = run_khoa(cli_env(server), *command, name)
    assert no_rotation.returncode == 1 and "no rotation function" in no_rotation.stderr
    # 2: usage (no endpoint), connection, permission
    no_endpoint = run_khoa(cli_env(None), *command, name)
    assert no_endpoint.returncode == 2 and "AWS_ENDPOINT_URL" in no_endpoint.stderr
    unreachable = cli_env(server) | {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    assert run_khoa(unreachable, *command, name).returncode == 2
    user = unique("no-rotate")
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    denied = run_khoa(cli_env(server, key["AccessKeyId"], key["SecretAccessKey"]), *command, name)
    assert denied.returncode == 2 and "not allowed" in denied.stderr
    for result in (no_rotation, no_endpoint, denied):
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
