"""CloudTrail LookupEvents over the audit trail, through boto3 and the aws CLI."""

from __future__ import annotations

import base64
import json
import secrets
import string
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError
from sqlalchemy import insert

from khoa.bootstrap import access_key_binding, create_account, load_barrier
from khoa.settings import Settings
from khoa.storage import schema
from khoa.storage.database import create_database_engine
from tests.support.awscli import aws_cli
from tests.support.errors import error_code
from tests.support.server import ACCESS_KEY_ID, ACCOUNT_ID, REGION, KhoaServer

RECORD_FIELDS = {
    "eventVersion",
    "userIdentity",
    "eventTime",
    "eventSource",
    "eventName",
    "awsRegion",
    "sourceIPAddress",
    "userAgent",
    "requestParameters",
    "responseElements",
    "requestID",
    "eventID",
    "readOnly",
    "resources",
    "eventType",
    "managementEvent",
    "recipientAccountId",
    "eventCategory",
}


# -- helpers (also used by the other audit tests) --------------------------------------------------


def _random(prefix: str) -> str:
    return prefix + "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(16))


def _installation(server: KhoaServer) -> tuple[Any, Any]:
    settings = Settings(data_dir=server.data_dir, database_url=server.database_url)
    engine = create_database_engine(settings.effective_database_url)
    return engine, load_barrier(settings, engine, create=False)


def seed_user(server: KhoaServer, name: str, policy: dict[str, Any] | None = None) -> tuple[str, str]:
    """An IAM user (with an optional inline policy) and an access key, written straight to the database."""
    engine, barrier = _installation(server)
    user_id = _random("AIDA")
    access_key_id, secret = _random("AKIA"), secrets.token_urlsafe(30)
    now = time.time()
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(schema.iam_principals).values(
                    principal_id=user_id,
                    account_id=ACCOUNT_ID,
                    kind="user",
                    name=name,
                    name_lower=name.lower(),
                    path="/",
                    arn=f"arn:aws:iam::{ACCOUNT_ID}:user/{name}",
                    created_at=now,
                )
            )
            if policy is not None:
                conn.execute(
                    insert(schema.iam_inline_policies).values(
                        owner_id=user_id, policy_name="inline", document=json.dumps(policy)
                    )
                )
            conn.execute(
                insert(schema.access_keys).values(
                    access_key_id=access_key_id,
                    account_id=ACCOUNT_ID,
                    secret_sealed=barrier.seal(secret.encode(), access_key_binding(access_key_id)),
                    principal_kind="user",
                    principal_name=name,
                    status="Active",
                    created_at=now,
                )
            )
    finally:
        engine.dispose()
    return access_key_id, secret


def seed_role(server: KhoaServer, name: str) -> str:
    """A role the account's root may assume; returns its ARN."""
    engine, _ = _installation(server)
    arn = f"arn:aws:iam::{ACCOUNT_ID}:role/{name}"
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
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(schema.iam_principals).values(
                    principal_id=_random("AROA"),
                    account_id=ACCOUNT_ID,
                    kind="role",
                    name=name,
                    name_lower=name.lower(),
                    path="/",
                    arn=arn,
                    created_at=time.time(),
                    assume_role_policy=json.dumps(trust),
                    max_session_duration=3600,
                )
            )
    finally:
        engine.dispose()
    return arn


def seed_account(server: KhoaServer, account_id: str) -> tuple[str, str]:
    engine, barrier = _installation(server)
    try:
        account = create_account(engine, barrier, account_id=account_id, name="second")
    finally:
        engine.dispose()
    return account.access_key_id, account.secret_access_key


def all_events(cloudtrail: Any, **kwargs: Any) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for page in cloudtrail.get_paginator("lookup_events").paginate(**kwargs):
        events.extend(page["Events"])
    return events


def lookup(cloudtrail: Any, key: str, value: str, **kwargs: Any) -> list[dict[str, Any]]:
    return all_events(cloudtrail, LookupAttributes=[{"AttributeKey": key, "AttributeValue": value}], **kwargs)


def run_aws(server: KhoaServer, *args: str, region: str = REGION) -> Any:
    cli = aws_cli(server.endpoint)
    cli.env["AWS_DEFAULT_REGION"] = region
    return cli.json(*args) or None


# -- one server with a known sequence of calls ----------------------------------------------------


class Trail:
    """What the module's server was asked to do, in order."""

    def __init__(self, server: KhoaServer) -> None:
        self.server = server
        self.calls: list[tuple[str, str, str]] = []  # (event source, event name, request id)
        kms = server.client("kms")
        sm = server.client("secretsmanager")
        ssm = server.client("ssm")
        key = kms.create_key(Description="trail")
        self._note("kms", "CreateKey", key)
        self.key_arn = key["KeyMetadata"]["Arn"]
        self.key_id = key["KeyMetadata"]["KeyId"]
        encrypted = kms.encrypt(KeyId=self.key_id, Plaintext=b"sequence")
        self._note("kms", "Encrypt", encrypted)
        self._note("kms", "Decrypt", kms.decrypt(CiphertextBlob=encrypted["CiphertextBlob"]))
        secret = sm.create_secret(Name=f"trail-{uuid.uuid4().hex[:8]}", SecretString="s3cr3t")
        self._note("secretsmanager", "CreateSecret", secret)
        self.secret_arn = secret["ARN"]
        self._note("secretsmanager", "GetSecretValue", sm.get_secret_value(SecretId=self.secret_arn))
        self.parameter = f"/trail/{uuid.uuid4().hex[:8]}"
        self._note("ssm", "PutParameter", ssm.put_parameter(Name=self.parameter, Value="v", Type="String"))
        self._note("ssm", "GetParameter", ssm.get_parameter(Name=self.parameter))
        self.first_hour = [call[1] for call in self.calls]
        # An hour later (server clock), a few more keys for paging and time ranges.
        server.advance_clock(3600)
        self.later_keys = [kms.create_key(Description=f"later-{i}")["KeyMetadata"]["Arn"] for i in range(7)]
        self.calls.extend(("kms.amazonaws.com", "CreateKey", "") for _ in self.later_keys)
        # Whatever the tests do happens another hour later: ``end`` separates it from this trail.
        self.end = datetime.now(UTC) + timedelta(minutes=90)
        server.advance_clock(3600)

    def _note(self, source: str, name: str, response: dict[str, Any]) -> None:
        self.calls.append((f"{source}.amazonaws.com", name, response["ResponseMetadata"]["RequestId"]))


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trail]:
    server = KhoaServer(tmp_path_factory.mktemp("cloudtrail") / "data").start()
    try:
        yield Trail(server)
    finally:
        server.stop()


@pytest.fixture
def cloudtrail(trail: Trail) -> Any:
    return trail.server.client("cloudtrail")


def api_events(cloudtrail: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """Every event but those of LookupEvents itself (each lookup adds one)."""
    return [e for e in all_events(cloudtrail, **kwargs) if e["EventSource"] != "cloudtrail.amazonaws.com"]


def trail_events(trail: Trail, cloudtrail: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """The events of the module's sequence of calls (not those of the tests themselves)."""
    return api_events(cloudtrail, **{"EndTime": trail.end, **kwargs})


def test_sequence_of_calls_newest_first_with_aws_fields(trail: Trail, cloudtrail: Any) -> None:
    events = trail_events(trail, cloudtrail)
    assert [(e["EventSource"], e["EventName"]) for e in events] == [
        (source, name) for source, name, _ in reversed(trail.calls)
    ]
    times = [e["EventTime"] for e in events]
    assert times == sorted(times, reverse=True)
    by_request = {json.loads(e["CloudTrailEvent"])["requestID"]: e for e in events}
    for source, name, request_id in trail.calls:
        if not request_id:
            continue
        event = by_request[request_id]
        record = json.loads(event["CloudTrailEvent"])
        assert set(record) >= RECORD_FIELDS
        assert set(event) == {
            "EventId",
            "EventName",
            "ReadOnly",
            "AccessKeyId",
            "EventTime",
            "EventSource",
            "Username",
            "Resources",
            "CloudTrailEvent",
        }
        assert event["EventId"] == record["eventID"]
        assert event["EventName"] == record["eventName"] == name
        assert event["EventSource"] == record["eventSource"] == source
        read_only = name.startswith(("Get", "Encrypt", "Decrypt"))
        assert event["ReadOnly"] == ("true" if read_only else "false")
        assert record["readOnly"] is read_only
        assert event["AccessKeyId"] == ACCESS_KEY_ID
        assert event["Username"] == "root"
        assert isinstance(event["EventTime"], datetime)
        assert abs(event["EventTime"] - datetime.now(UTC)) < timedelta(hours=2)
        assert record["userIdentity"] == {
            "type": "Root",
            "principalId": ACCOUNT_ID,
            "arn": f"arn:aws:iam::{ACCOUNT_ID}:root",
            "accountId": ACCOUNT_ID,
            "accessKeyId": ACCESS_KEY_ID,
        }
        assert record["awsRegion"] == REGION
        assert record["recipientAccountId"] == ACCOUNT_ID
        assert record["eventType"] == "AwsApiCall"
        assert record["eventCategory"] == "Management"
        assert record["managementEvent"] is True
        assert record["sourceIPAddress"] == "127.0.0.1"
        assert record["userAgent"].startswith("Boto3/")
        assert "errorCode" not in record
        assert event["Resources"] == [
            {"ResourceType": r["type"], "ResourceName": r["ARN"]} for r in record["resources"]
        ]
    create_key = by_request[trail.calls[0][2]]
    assert {"ResourceType": "AWS::KMS::Key", "ResourceName": trail.key_arn} in create_key["Resources"]
    created = json.loads(create_key["CloudTrailEvent"])
    assert created["requestParameters"] == {"description": "trail"}
    assert created["responseElements"]["keyMetadata"]["arn"] == trail.key_arn
    get_value = json.loads(by_request[trail.calls[4][2]]["CloudTrailEvent"])
    assert get_value["responseElements"] is None  # read-only calls: no response elements, as in AWS


@pytest.mark.parametrize(
    ("key", "value", "names"),
    [
        ("EventName", "CreateSecret", ["CreateSecret"]),
        ("EventSource", "ssm.amazonaws.com", ["GetParameter", "PutParameter"]),
        ("ResourceType", "AWS::SecretsManager::Secret", ["GetSecretValue", "CreateSecret"]),
        ("ReadOnly", "false", ["CreateKey"] * 7 + ["PutParameter", "CreateSecret", "CreateKey"]),
    ],
)
def test_lookup_attributes(trail: Trail, cloudtrail: Any, key: str, value: str, names: list[str]) -> None:
    attributes = [{"AttributeKey": key, "AttributeValue": value}]
    assert [e["EventName"] for e in trail_events(trail, cloudtrail, LookupAttributes=attributes)] == names


def test_lookup_by_resource_name_user_access_key_and_event_id(trail: Trail, cloudtrail: Any) -> None:
    def names(value: str) -> list[str]:
        return [e["EventName"] for e in lookup(cloudtrail, "ResourceName", value, EndTime=trail.end)]

    assert names(trail.key_arn) == ["Decrypt", "Encrypt", "CreateKey"]
    assert names(trail.secret_arn) == ["GetSecretValue", "CreateSecret"]
    # A resource name matches whole names only (not a prefix, and LIKE wildcards are literal).
    assert lookup(cloudtrail, "ResourceName", trail.key_arn[:-1]) == []
    assert lookup(cloudtrail, "ResourceName", trail.key_arn[:-1] + "_") == []
    assert lookup(cloudtrail, "ResourceName", "%") == []
    mine = lookup(cloudtrail, "AccessKeyId", ACCESS_KEY_ID, EndTime=trail.end)
    assert len(mine) == len(trail.calls)
    assert lookup(cloudtrail, "AccessKeyId", "AKIANOBODY0000000000") == []
    assert lookup(cloudtrail, "Username", "root", EndTime=trail.end) == mine
    target = mine[-1]
    (found,) = lookup(cloudtrail, "EventId", target["EventId"])
    assert found == target


def test_paging_is_stable_and_tokens_belong_to_their_query(trail: Trail, cloudtrail: Any) -> None:
    attribute = [{"AttributeKey": "EventName", "AttributeValue": "CreateKey"}]
    pages = []
    token = None
    while True:
        kwargs: dict[str, Any] = {"LookupAttributes": attribute, "MaxResults": 3, "EndTime": trail.end}
        if token:
            kwargs["NextToken"] = token
        page = cloudtrail.lookup_events(**kwargs)
        pages.append([e["Resources"][0]["ResourceName"] for e in page["Events"]])
        token = page.get("NextToken")
        if not token:
            break
    assert [len(p) for p in pages] == [3, 3, 2]
    assert [arn for page in pages for arn in page] == [*reversed(trail.later_keys), trail.key_arn]
    first = cloudtrail.lookup_events(LookupAttributes=attribute, MaxResults=1)
    assert (
        error_code(cloudtrail.lookup_events, NextToken=first["NextToken"], MaxResults=1)
        == "InvalidNextTokenException"
    )
    assert error_code(cloudtrail.lookup_events, NextToken="not-a-token") == "InvalidNextTokenException"
    # A token made by hand for this very query, with a sequence number no store can compare.
    at, _, fingerprint = json.loads(base64.urlsafe_b64decode(first["NextToken"]))
    forged = base64.urlsafe_b64encode(json.dumps([at, 2**64, fingerprint]).encode()).decode()
    assert (
        error_code(cloudtrail.lookup_events, LookupAttributes=attribute, MaxResults=1, NextToken=forged)
        == "InvalidNextTokenException"
    )


def test_time_range(trail: Trail, cloudtrail: Any) -> None:
    events = trail_events(trail, cloudtrail)
    later = [e for e in events if e["EventName"] == "CreateKey"][:7]
    earlier = events[len(later) :]
    boundary = max(e["EventTime"] for e in earlier) + timedelta(minutes=30)
    assert min(e["EventTime"] for e in later) > boundary
    before = api_events(cloudtrail, EndTime=boundary)
    assert [e["EventName"] for e in before] == list(reversed(trail.first_hour))
    after = trail_events(trail, cloudtrail, StartTime=boundary)
    assert [e["Resources"][0]["ResourceName"] for e in after] == list(reversed(trail.later_keys))
    window = api_events(
        cloudtrail, StartTime=boundary - timedelta(hours=2), EndTime=boundary - timedelta(minutes=90)
    )
    assert window == []
    assert (
        error_code(cloudtrail.lookup_events, StartTime=boundary, EndTime=boundary - timedelta(hours=1))
        == "InvalidTimeRangeException"
    )


def test_invalid_requests(cloudtrail: Any) -> None:
    two = [
        {"AttributeKey": "EventName", "AttributeValue": "CreateKey"},
        {"AttributeKey": "Username", "AttributeValue": "root"},
    ]
    assert error_code(cloudtrail.lookup_events, LookupAttributes=two) == "InvalidLookupAttributesException"
    assert (
        error_code(
            cloudtrail.lookup_events,
            LookupAttributes=[{"AttributeKey": "ReadOnly", "AttributeValue": "maybe"}],
        )
        == "InvalidLookupAttributesException"
    )
    assert error_code(cloudtrail.lookup_events, MaxResults=51) == "InvalidMaxResultsException"
    # Khoa records no Insights events.
    assert cloudtrail.lookup_events(EventCategory="insight")["Events"] == []


def test_events_are_scoped_to_the_account_and_region(trail: Trail, cloudtrail: Any) -> None:
    access_key_id, secret = seed_account(trail.server, "444455556666")
    other = trail.server.client("cloudtrail", aws_access_key_id=access_key_id, aws_secret_access_key=secret)
    assert all_events(other) == []
    other_kms = trail.server.client("kms", aws_access_key_id=access_key_id, aws_secret_access_key=secret)
    other_kms.create_key(Description="theirs")
    (theirs,) = [e for e in all_events(other) if e["EventName"] == "CreateKey"]
    assert json.loads(theirs["CloudTrailEvent"])["recipientAccountId"] == "444455556666"
    assert theirs["EventId"] not in {e["EventId"] for e in all_events(cloudtrail)}
    # LookupEvents is regional, as in AWS.
    west = trail.server.client("cloudtrail", region="us-west-2")
    assert api_events(west) == []
    trail.server.client("kms", region="us-west-2").create_key(Description="west")
    assert [e["EventName"] for e in api_events(west)] == ["CreateKey"]
    assert "us-west-2" not in {json.loads(e["CloudTrailEvent"])["awsRegion"] for e in api_events(cloudtrail)}


def test_lookup_is_authorised_by_policy_and_denials_are_recorded(trail: Trail, cloudtrail: Any) -> None:
    name = f"auditor-{uuid.uuid4().hex[:6]}"
    allowed = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "cloudtrail:LookupEvents", "Resource": "*"}],
    }
    key_id, secret = seed_user(trail.server, name, allowed)
    auditor = trail.server.client("cloudtrail", aws_access_key_id=key_id, aws_secret_access_key=secret)
    assert auditor.lookup_events(MaxResults=5)["Events"]
    intruder_key, intruder_secret = seed_user(trail.server, f"nosy-{uuid.uuid4().hex[:6]}")
    nosy = trail.server.client(
        "cloudtrail", aws_access_key_id=intruder_key, aws_secret_access_key=intruder_secret
    )
    with pytest.raises(ClientError) as info:
        nosy.lookup_events()
    assert info.value.response["Error"]["Code"] == "AccessDeniedException"
    assert "cloudtrail:LookupEvents" in info.value.response["Error"]["Message"]

    (denied,) = lookup(cloudtrail, "AccessKeyId", intruder_key)
    record = json.loads(denied["CloudTrailEvent"])
    assert denied["EventName"] == "LookupEvents"
    assert record["errorCode"] == "AccessDeniedException"
    assert "not authorized" in record["errorMessage"]
    assert record["userIdentity"]["type"] == "IAMUser"
    assert record["userIdentity"]["userName"] == denied["Username"]
    (granted,) = lookup(cloudtrail, "Username", name)
    assert granted["AccessKeyId"] == key_id
    assert "errorCode" not in json.loads(granted["CloudTrailEvent"])


def test_denied_calls_appear_with_their_error_code(trail: Trail, cloudtrail: Any) -> None:
    # Failed authentication: a wrong signature, with what is known of the caller (its access key).
    forged = trail.server.client("kms", aws_secret_access_key="not-the-secret-access-key-000000000000000")
    assert error_code(forged.list_keys) == "InvalidSignatureException"
    (signature,) = [
        e for e in lookup(cloudtrail, "EventName", "ListKeys") if "errorCode" in e["CloudTrailEvent"]
    ]
    record = json.loads(signature["CloudTrailEvent"])
    assert record["errorCode"] == "InvalidSignatureException"
    assert record["userIdentity"] == {"type": "Unknown", "accessKeyId": ACCESS_KEY_ID}
    assert signature["AccessKeyId"] == ACCESS_KEY_ID

    # AccessDenied from a key policy that does not let the account use the key.
    kms = trail.server.client("kms")
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_ID}:root"},
                "Action": ["kms:DescribeKey", "kms:GetKeyPolicy", "kms:PutKeyPolicy"],
                "Resource": "*",
            }
        ],
    }
    locked = kms.create_key(Policy=json.dumps(policy), BypassPolicyLockoutSafetyCheck=True)["KeyMetadata"]
    assert error_code(kms.encrypt, KeyId=locked["KeyId"], Plaintext=b"no") == "AccessDeniedException"
    (denied,) = [
        e
        for e in lookup(cloudtrail, "EventName", "Encrypt")
        if json.loads(e["CloudTrailEvent"])["requestParameters"]["keyId"] == locked["KeyId"]
    ]
    record = json.loads(denied["CloudTrailEvent"])
    assert record["errorCode"] == "AccessDeniedException"
    assert "kms:Encrypt" in record["errorMessage"]
    assert denied["Username"] == "root"
    assert denied["Resources"] == []  # as in AWS, a refused call names no resources

    # The aws CLI sees the same.
    listed = run_aws(
        trail.server,
        "cloudtrail",
        "lookup-events",
        "--lookup-attributes",
        f"AttributeKey=EventId,AttributeValue={denied['EventId']}",
    )
    assert [json.loads(e["CloudTrailEvent"])["errorCode"] for e in listed["Events"]] == [
        "AccessDeniedException"
    ]


def test_aws_cli_lookup_events(trail: Trail) -> None:
    listed = run_aws(
        trail.server,
        "cloudtrail",
        "lookup-events",
        "--lookup-attributes",
        "AttributeKey=EventName,AttributeValue=CreateKey",
        "--end-time",
        trail.end.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "--page-size",
        "2",
    )
    # The CLI follows NextToken itself (pages of two): every page comes back as one list.
    arns = [e["Resources"][0]["ResourceName"] for e in listed["Events"]]
    assert arns == [*reversed(trail.later_keys), trail.key_arn]
    pages = lookup(trail.server.client("cloudtrail"), "EventName", "LookupEvents")
    assert any(json.loads(e["CloudTrailEvent"])["requestParameters"].get("maxResults") == 2 for e in pages)
    first = listed["Events"][0]
    assert first["EventSource"] == "kms.amazonaws.com"
    assert first["ReadOnly"] == "false"
    assert json.loads(first["CloudTrailEvent"])["eventName"] == "CreateKey"

    paged = run_aws(
        trail.server,
        "cloudtrail",
        "lookup-events",
        "--lookup-attributes",
        f"AttributeKey=ResourceName,AttributeValue={trail.key_arn}",
        "--end-time",
        trail.end.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "--max-items",
        "2",
    )
    assert [e["EventName"] for e in paged["Events"]] == ["Decrypt", "Encrypt"]
    assert paged["NextToken"]

    boundary = trail.end - timedelta(minutes=60)  # between the first hour's calls and the later keys
    recent = run_aws(
        trail.server,
        "cloudtrail",
        "lookup-events",
        "--start-time",
        boundary.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "--end-time",
        trail.end.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "--lookup-attributes",
        "AttributeKey=EventSource,AttributeValue=kms.amazonaws.com",
    )
    assert [e["Resources"][0]["ResourceName"] for e in recent["Events"]] == list(reversed(trail.later_keys))


def test_a_rare_lookup_attribute_pages_through_a_large_trail(fresh_server: KhoaServer) -> None:
    """A lookup attribute that matches a few events among many: each page reads a bounded part of
    the trail (short or empty pages with a NextToken), and the paginator still gets every match."""
    fresh_server.start()
    sm = fresh_server.client("secretsmanager")
    arn = sm.create_secret(Name="rarely-read", SecretString="x")["ARN"]
    sm.get_secret_value(SecretId=arn)  # the first read, then a busy trail of other calls
    settings = Settings(data_dir=fresh_server.data_dir, database_url=fresh_server.database_url)
    engine = create_database_engine(settings.effective_database_url)
    now = time.time()
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(schema.audit_events),
                [
                    {
                        "event_id": str(uuid.uuid4()),
                        "account_id": ACCOUNT_ID,
                        "region": REGION,
                        "event_time": now + i * 1e-4,
                        "event_source": "kms.amazonaws.com",
                        "event_name": "DescribeKey",
                        "read_only": True,
                        "record": json.dumps({"eventName": "DescribeKey"}),
                    }
                    for i in range(25_000)
                ],
            )
    finally:
        engine.dispose()
    sm.get_secret_value(SecretId=arn)  # the second read, newest of all
    cloudtrail = fresh_server.client("cloudtrail")
    request = {"LookupAttributes": [{"AttributeKey": "ResourceName", "AttributeValue": arn}]}
    first = cloudtrail.lookup_events(**request)
    assert len(first["Events"]) < 50 and "NextToken" in first  # stopped at its budget
    events = lookup(cloudtrail, "ResourceName", arn)
    assert [e["EventName"] for e in events] == ["GetSecretValue", "GetSecretValue", "CreateSecret"]
