"""What khoa-leaks takes as a leak, what a match may name, and whose rate limit a check counts
against, through boto3 against a real server:

- an access key id is no secret: CheckLeakedValues reports it as information (to a caller who may
  list the user's keys), ReportLeakedValues neither answers with it nor responds to it (no key
  deactivated, no user quarantined, the root's second key left alone); the secret access key, and an
  STS session's secret or token, are leaks and are responded to. Fingerprint rows of key ids written
  by earlier versions prove nothing either;
- common values in a secret's JSON (a Region, "true", a port, an id) are not fingerprinted and, when
  an earlier version fingerprinted them, no longer match; the whole value and credential fields do;
- a match names a secret or parameter only to a caller that may describe it, otherwise it says a value
  of the account matched (and is still responded to, naming the secret only in the trail);
- all sessions of a role share the role's bucket of the rate limit.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from khoa.client.leaks import leaks_client
from tests.support.iam import allow, document, trust
from tests.support.identity import Caller, new_user, session
from tests.support.names import unique
from tests.support.rotation import holder, register, stages_of, value_of
from tests.support.server import ACCESS_KEY_ID, ACCOUNT_ID, REGION, SECRET_ACCESS_KEY, KhoaServer

QUARANTINE = "arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV2"
SOURCE = "https://git.example.com/acme/app/blob/main/.env"
CHECK_AND_REPORT = allow(["khoa:CheckLeakedValues", "khoa:ReportLeakedValues"])
HIDDEN_SECRET = f"arn:aws:secretsmanager:*:{ACCOUNT_ID}:secret:*"
HIDDEN_PARAMETER = f"arn:aws:ssm:*:{ACCOUNT_ID}:parameter/*"


def leaks_as(caller: Caller) -> Any:
    session_ = boto3.Session(
        aws_access_key_id=caller.access_key_id,
        aws_secret_access_key=caller.secret_access_key,
        aws_session_token=caller.session_token,
    )
    return leaks_client(session_, caller.server.endpoint, REGION, config=Config(retries={"max_attempts": 1}))


def root_of(server: KhoaServer) -> Caller:
    return Caller(server, f"arn:aws:iam::{ACCOUNT_ID}:root", ACCESS_KEY_ID, SECRET_ACCESS_KEY)


def candidates(*values: str) -> list[dict[str, str]]:
    return [{"Id": str(i), "Value": v} for i, v in enumerate(values)]


def check(client: Any, *values: str) -> dict[str, list[dict[str, Any]]]:
    """Matches by candidate value."""
    found: dict[str, list[dict[str, Any]]] = {v: [] for v in values}
    for match in client.check_leaked_values(Candidates=candidates(*values))["Matches"]:
        found[values[int(match["Id"])]].append(match)
    return found


def report(client: Any, *values: str) -> dict[str, Any]:
    answer: dict[str, Any] = client.report_leaked_values(Candidates=candidates(*values), SourceUrl=SOURCE)
    answer.pop("ResponseMetadata", None)
    return answer


def random_value(prefix: str) -> str:
    return f"{prefix}-{secrets.token_urlsafe(24)}7Q"


def rows_of(server: KhoaServer, resource_id: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(server.data_dir / "khoa.db") as conn:
        return conn.execute(
            "SELECT fingerprint, field FROM leak_fingerprints WHERE resource_id = ?", (resource_id,)
        ).fetchall()


def plant(server: KhoaServer, sm: Any, value: str, **row: Any) -> None:
    """A fingerprint row of ``value`` as an earlier version of Khoa wrote it: the keyed fingerprint is
    taken from a throwaway secret holding ``value`` (deleted, with its own rows), the rest from ``row``."""
    throwaway = sm.create_secret(Name=unique("leak-plant"), SecretString=value)["ARN"]
    sm.delete_secret(SecretId=throwaway, ForceDeleteWithoutRecovery=True)
    with sqlite3.connect(server.data_dir / "khoa.db") as conn:
        (fingerprint,) = conn.execute(
            "SELECT fingerprint FROM leak_fingerprints WHERE resource_arn = ? AND field IS NULL", (throwaway,)
        ).fetchone()
        conn.execute("DELETE FROM leak_fingerprints WHERE resource_arn = ?", (throwaway,))
        values = {
            "row_id": hashlib.sha256(f"planted {time.time()} {value}".encode()).hexdigest(),
            "account_id": ACCOUNT_ID,
            "fingerprint": fingerprint,
            "region": "",
            "version_id": None,
            "field": None,
            "access_key_id": None,
            "created_at": time.time(),
            "invalid_since": None,
            "expires_at": None,
            **row,
        }
        columns = ", ".join(values)
        conn.execute(
            f"INSERT INTO leak_fingerprints ({columns}) VALUES ({', '.join('?' for _ in values)})",
            tuple(values.values()),
        )


def responses_in_trail(server: KhoaServer, since: datetime) -> list[dict[str, Any]]:
    found = server.client("cloudtrail").lookup_events(
        LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "LeakResponse"}], StartTime=since
    )["Events"]
    return [json.loads(e["CloudTrailEvent"])["additionalEventData"] for e in found]


# -- 1. an access key id is not a leak --------------------------------------------------------------


def test_a_key_id_is_no_leak_and_is_never_responded_to(server: KhoaServer, account_b: Caller) -> None:
    iam = account_b.client("iam")
    admin = new_user(server, iam, allow("*"))
    reporter = new_user(server, iam, CHECK_AND_REPORT)
    spare = iam.create_access_key()["AccessKey"]  # the root has two keys: either could be deactivated
    try:
        # the ids (ListAccessKeys, the trail and error messages show them) deactivate nothing
        answer = report(leaks_as(reporter), admin.access_key_id, spare["AccessKeyId"])
        assert answer == {"Matches": [], "Responses": []}
        assert [k["Status"] for k in iam.list_access_keys(UserName=admin.name)["AccessKeyMetadata"]] == [
            "Active"
        ]
        assert iam.list_attached_user_policies(UserName=admin.name)["AttachedPolicies"] == []
        assert admin.client("iam").get_user()["User"]["Arn"] == admin.arn
        assert {k["Status"] for k in iam.list_access_keys()["AccessKeyMetadata"]} == {"Active"}
        # nor when the root reports them, although it may see whose they are
        root = leaks_as(account_b)
        assert report(root, admin.access_key_id) == {"Matches": [], "Responses": []}
        # CheckLeakedValues tells who may list the user's keys what an id is, as information
        info = check(root, admin.access_key_id)[admin.access_key_id]
        assert [(m["Status"], m["ResourceArn"], m["AccessKeyId"]) for m in info] == [
            ("live", admin.arn, admin.access_key_id)
        ]
        assert check(leaks_as(reporter), admin.access_key_id)[admin.access_key_id] == []
        # only the secret is fingerprinted (one row: its secret's)
        assert len(rows_of(server, admin.access_key_id)) == 1
        # the secret access key is a leak: deactivated and quarantined
        answer = report(leaks_as(reporter), admin.secret_access_key)
        assert [(m["ResourceArn"], m["AccessKeyId"]) for m in answer["Matches"]] == [
            (admin.arn, admin.access_key_id)
        ]
        assert [r["Action"] for r in answer["Responses"]] == ["access-key-quarantined"]
        keys = iam.list_access_keys(UserName=admin.name)["AccessKeyMetadata"]
        assert [k["Status"] for k in keys] == ["Inactive"]
        attached = iam.list_attached_user_policies(UserName=admin.name)["AttachedPolicies"]
        assert [p["PolicyArn"] for p in attached] == [QUARANTINE]
    finally:
        iam.delete_access_key(AccessKeyId=spare["AccessKeyId"])


def test_an_sts_key_id_is_information_its_secret_and_token_are_leaks(server: KhoaServer, iam: Any) -> None:
    role_name = unique("leak-evidence-role")
    role = iam.create_role(
        RoleName=role_name, AssumeRolePolicyDocument=trust({"AWS": f"arn:aws:iam::{ACCOUNT_ID}:root"})
    )["Role"]["Arn"]
    assumer = new_user(server, iam, allow("sts:AssumeRole", role))
    credentials = session(assumer, role, "leaky")
    assert credentials.session_token is not None
    reporter = leaks_as(new_user(server, iam, CHECK_AND_REPORT))
    key_id = credentials.access_key_id

    assert report(reporter, key_id) == {"Matches": [], "Responses": []}
    assert check(reporter, key_id)[key_id] == []  # may not iam:GetRole: nothing to say
    info = check(leaks_as(root_of(server)), key_id)[key_id]
    assert [(m["ResourceType"], m["ResourceArn"], m["AccessKeyId"]) for m in info] == [
        ("sts-credential", role, key_id)
    ]
    for secret in (credentials.secret_access_key, credentials.session_token):
        answer = report(reporter, secret)
        assert [(m["Status"], m["ResourceArn"], m["AccessKeyId"]) for m in answer["Matches"]] == [
            ("live", role, key_id)
        ]
        assert [(r["Action"], r["ResourceArn"]) for r in answer["Responses"]] == [("alerted", role)]


def test_a_key_id_fingerprint_written_by_an_earlier_version_proves_nothing(
    server: KhoaServer, iam: Any, sm: Any
) -> None:
    user = new_user(server, iam, allow("iam:GetUser"))
    plant(
        server,
        sm,
        user.access_key_id,
        resource_type="access-key",
        resource_id=user.access_key_id,
        resource_arn=user.arn,
        access_key_id=user.access_key_id,
    )
    assert len(rows_of(server, user.access_key_id)) == 2  # the secret's, and the planted id's
    root = leaks_as(root_of(server))
    assert report(root, user.access_key_id) == {"Matches": [], "Responses": []}
    assert [k["Status"] for k in iam.list_access_keys(UserName=user.name)["AccessKeyMetadata"]] == ["Active"]
    assert len(check(root, user.access_key_id)[user.access_key_id]) == 1  # information, once


# -- 2a. common values inside a secret are not its value ------------------------------------------


def test_common_json_leaves_are_not_evidence(server: KhoaServer, sm: Any) -> None:
    function = register(server, unique("simple"), "tests.support.rotators:simple")
    password, api_key, signing, client_id = (
        random_value("pw"),
        "k-" + secrets.token_hex(4),
        random_value("sig"),
        random_value("client"),
    )
    region = f"qa-{secrets.token_hex(3)}-1"  # a Region-like word: short, found in any configuration
    document_ = {
        "password": password,
        "api_key": api_key,
        "region": region,
        "tls": "true",
        "port": 5432,
        "enabled": True,
        "client_id": client_id,
        "nested": {"signing": signing},
    }
    name = unique("leak-leaves")
    created = sm.create_secret(Name=name, SecretString=json.dumps(document_))
    sm.rotate_secret(
        SecretId=name,
        RotationLambdaARN=function,
        RotationRules={"AutomaticallyAfterDays": 30},
        RotateImmediately=False,
    )
    root = leaks_as(root_of(server))
    found = check(root, region, "true", "5432", client_id, password, api_key, signing, json.dumps(document_))

    def fields(value: str) -> list[str | None]:
        return [m.get("Field") for m in found[value] if m["ResourceArn"] == created["ARN"]]

    for common in (region, "true", "5432", client_id):
        assert fields(common) == [], common
    assert fields(password) == ["password"]
    assert fields(api_key) == ["api_key"]
    assert fields(signing) == ["nested.signing"]
    assert fields(json.dumps(document_)) == [None]  # the whole value
    # reporting a common value rotates nothing
    assert report(root, region) == {"Matches": [], "Responses": []}
    assert holder(stages_of(sm, name), "AWSCURRENT") == created["VersionId"]
    # its password does
    answer = report(root, password)
    assert [r["Action"] for r in answer["Responses"]] == ["emergency-rotation-started"]
    assert value_of(sm, name)["password"] != password


def test_a_leaf_fingerprint_written_by_an_earlier_version_no_longer_matches(
    server: KhoaServer, sm: Any
) -> None:
    region = f"qa-{secrets.token_hex(3)}-2"
    password = random_value("pw")
    created = sm.create_secret(
        Name=unique("leak-old-leaf"), SecretString=json.dumps({"password": password, "region": region})
    )
    (secret_id,) = {r[0] for r in _ids_of(server, created["ARN"])}
    plant(
        server,
        sm,
        region,
        region=REGION,
        resource_type="secret",
        resource_id=secret_id,
        resource_arn=created["ARN"],
        version_id=created["VersionId"],
        field="region",
    )
    root = leaks_as(root_of(server))
    assert check(root, region)[region] == []
    assert report(root, region) == {"Matches": [], "Responses": []}
    assert [m["Field"] for m in check(root, password)[password]] == ["password"]
    # a secret whose whole value is that word is still found: its owner stored it as a secret
    whole = sm.create_secret(Name=unique("leak-whole-word"), SecretString=region)["ARN"]
    assert [(m["ResourceArn"], m.get("Field")) for m in check(root, region)[region]] == [(whole, None)]


def _ids_of(server: KhoaServer, arn: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(server.data_dir / "khoa.db") as conn:
        return conn.execute(
            "SELECT resource_id FROM leak_fingerprints WHERE resource_arn = ?", (arn,)
        ).fetchall()


# -- 2b. a match names only what the caller may see -----------------------------------------------


def test_a_match_names_only_what_the_caller_may_describe(
    server: KhoaServer, iam: Any, sm: Any, ssm: Any
) -> None:
    since = datetime.now(UTC) - timedelta(minutes=5)
    function = register(server, unique("simple"), "tests.support.rotators:simple")
    rotated_name, plain_name = unique("leak-hidden-rotated"), unique("leak-hidden-plain")
    password, plain, stored = random_value("pw"), random_value("plain"), random_value("param")
    rotated = sm.create_secret(Name=rotated_name, SecretString=json.dumps({"password": password}))["ARN"]
    sm.rotate_secret(
        SecretId=rotated,
        RotationLambdaARN=function,
        RotationRules={"AutomaticallyAfterDays": 30},
        RotateImmediately=False,
    )
    plain_arn = sm.create_secret(Name=plain_name, SecretString=plain)["ARN"]
    twice = random_value("twice")  # one value in two secrets: said once
    for _ in range(2):
        sm.create_secret(Name=unique("leak-hidden-twice"), SecretString=twice)
    parameter = f"/leak-hidden/{unique('p')}"
    ssm.put_parameter(Name=parameter, Value=stored, Type="SecureString")
    parameter_arn = f"arn:aws:ssm:{REGION}:{ACCOUNT_ID}:parameter{parameter}"

    blind = leaks_as(new_user(server, iam, CHECK_AND_REPORT))
    answer = blind.check_leaked_values(Candidates=candidates(password, plain, stored, twice))["Matches"]
    assert sorted((m["Id"], m["ResourceType"], m["ResourceArn"], m["Status"]) for m in answer) == [
        ("0", "secret", HIDDEN_SECRET, "live"),
        ("1", "secret", HIDDEN_SECRET, "live"),
        ("2", "parameter", HIDDEN_PARAMETER, "live"),
        ("3", "secret", HIDDEN_SECRET, "live"),
    ]
    assert all(set(m) == {"Id", "Status", "ResourceType", "ResourceArn"} for m in answer)
    text = json.dumps(answer)
    for name in (rotated_name, plain_name, parameter):
        assert name not in text

    # the value is the proof: the blind reporter's report is responded to, naming nothing
    result = report(blind, password)
    assert [m["ResourceArn"] for m in result["Matches"]] == [HIDDEN_SECRET]
    [response] = result["Responses"]
    assert (response["ResourceArn"], response["Action"]) == (HIDDEN_SECRET, "emergency-rotation-started")
    assert rotated_name not in json.dumps(result) and "not named" in response["Detail"]
    assert value_of(sm, rotated)["password"] != password  # rotated
    assert rotated in [r["resourceArn"] for r in responses_in_trail(server, since)]  # named to admins

    # a caller that may describe the secret (or parameters) is told which
    describer = new_user(
        server,
        iam,
        CHECK_AND_REPORT,
        allow("secretsmanager:DescribeSecret", plain_arn),
        allow("ssm:DescribeParameters"),
    )
    found = check(leaks_as(describer), password, plain, stored)
    assert [m["ResourceArn"] for m in found[password]] == [HIDDEN_SECRET]  # not that one
    assert [(m["ResourceArn"], "VersionId" in m) for m in found[plain]] == [(plain_arn, True)]
    assert [(m["ResourceArn"], m["VersionId"]) for m in found[stored]] == [(parameter_arn, "1")]
    assert len(check(leaks_as(root_of(server)), twice)[twice]) == 2


# -- 3. one rate limit per identity --------------------------------------------------------------


def _burst(client: Any, calls: int) -> list[str]:
    def call(_: int) -> str:
        try:
            client.check_leaked_values(Candidates=[{"Id": "1", "Value": random_value("guess")}])
            return "ok"
        except ClientError as error:
            return str(error.response["Error"]["Code"])

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(call, range(calls)))


def _scanner_role(server: KhoaServer, iam: Any) -> tuple[str, Caller]:
    name = unique("leak-scanner")
    role = iam.create_role(
        RoleName=name, AssumeRolePolicyDocument=trust({"AWS": f"arn:aws:iam::{ACCOUNT_ID}:root"})
    )["Role"]["Arn"]
    iam.put_role_policy(
        RoleName=name, PolicyName="scan", PolicyDocument=document(allow("khoa:CheckLeakedValues"))
    )
    return role, new_user(server, iam, allow("sts:AssumeRole", role))


def test_a_roles_sessions_share_the_roles_rate_limit(server: KhoaServer, iam: Any) -> None:
    role, assumer = _scanner_role(server, iam)
    other_role, other_assumer = _scanner_role(server, iam)
    # every session and client made before the burst, so no time passes between the bursts
    first, second = (leaks_as(session(assumer, role, name)) for name in ("first", "second"))
    other = leaks_as(session(other_assumer, other_role, "first"))
    deadline = time.monotonic() + 10
    while True:  # the new role's policy may take a moment to be read
        try:
            first.check_leaked_values(Candidates=[{"Id": "1", "Value": random_value("warm")}])
            break
        except ClientError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)

    assert "ThrottlingException" in _burst(first, 40)  # the bucket holds 20
    later = _burst(second, 10)  # a new session name is no new bucket
    assert later.count("ThrottlingException") >= 7, later
    # another identity has its own
    other.check_leaked_values(Candidates=[{"Id": "1", "Value": random_value("other")}])
