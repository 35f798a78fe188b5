"""Refused calls leave a trace: the audit trail records each AccessDenied with its error code and
AWS's message, the identity that was refused, and where it came from (CloudTrail LookupEvents, and the
server's audit_events table underneath)."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from tests.support.errors import error_response
from tests.support.iam import allow, document
from tests.support.identity import ROOT_ARN, Caller, implicit, new_user, parameter_arn, session
from tests.support.names import unique
from tests.support.server import ACCOUNT_ID, KhoaServer


def _events(server: KhoaServer, username: str) -> dict[str, dict[str, Any]]:
    """The caller's events by name, newest first wins, as CloudTrail returns them."""
    found: dict[str, dict[str, Any]] = {}
    pages = server.client("cloudtrail").get_paginator("lookup_events")
    for page in pages.paginate(LookupAttributes=[{"AttributeKey": "Username", "AttributeValue": username}]):
        for event in page["Events"]:
            found.setdefault(event["EventName"], json.loads(event["CloudTrailEvent"]))
    return found


def _denied(call: Any, **kwargs: Any) -> tuple[str, str, str]:
    response = error_response(call, **kwargs)
    return response["Error"]["Code"], response["Error"]["Message"], response["ResponseMetadata"]["RequestId"]


def test_denied_calls_are_recorded_with_their_error(server: KhoaServer, iam: Any) -> None:
    user = new_user(server, iam)
    key = server.client("kms").create_key()["KeyMetadata"]["Arn"]
    secret = server.client("secretsmanager").create_secret(Name=unique("audited"), SecretString="v")["ARN"]
    parameter = f"/audit/{unique('p')}"
    server.client("ssm").put_parameter(Name=parameter, Value="v", Type="String")
    refusals = {
        "Encrypt": _denied(user.client("kms").encrypt, KeyId=key, Plaintext=b"x"),
        "GetSecretValue": _denied(user.client("secretsmanager").get_secret_value, SecretId=secret),
        "GetParameter": _denied(user.client("ssm").get_parameter, Name=parameter),
        "ListUsers": _denied(user.client("iam").list_users),
        "AssumeRole": _denied(
            user.client("sts").assume_role, RoleArn=f"arn:aws:iam::{ACCOUNT_ID}:role/x", RoleSessionName="xx"
        ),
    }
    assert refusals["GetParameter"][1] == implicit(user.arn, "ssm:GetParameter", parameter_arn(parameter))
    events = _events(server, user.name)
    for name, (code, message, request_id) in refusals.items():
        record = events[name]
        assert (record["errorCode"], record["errorMessage"]) == (code, message), name
        assert record["requestID"] == request_id
        assert record["userIdentity"]["type"] == "IAMUser"
        assert record["userIdentity"]["arn"] == user.arn
        assert record["userIdentity"]["accessKeyId"] == user.access_key_id
        assert record["recipientAccountId"] == ACCOUNT_ID
        assert "responseElements" not in record or record["responseElements"] is None
    assert events["GetSecretValue"]["requestParameters"] == {"secretId": secret}

    # The same rows, in the server's own database.
    with sqlite3.connect(server.data_dir / "khoa.db") as db:
        rows = db.execute(
            "SELECT event_name, error_code FROM audit_events WHERE username = ? AND error_code IS NOT NULL",
            (user.name,),
        ).fetchall()
    assert {name: code for name, code in rows} == {name: code for name, (code, _, _) in refusals.items()}


def test_a_role_session_is_recorded_as_the_assumed_role(server: KhoaServer, iam: Any) -> None:
    role = unique("audited-role")
    arn = iam.create_role(
        RoleName=role,
        AssumeRolePolicyDocument=document(
            {"Effect": "Allow", "Principal": {"AWS": ROOT_ARN}, "Action": "sts:AssumeRole"}
        ),
    )["Role"]["Arn"]
    iam.put_role_policy(RoleName=role, PolicyName="list", PolicyDocument=document(allow("kms:ListKeys")))
    caller = new_user(server, iam, allow("sts:AssumeRole", arn))
    sessioned: Caller = session(caller, arn, "audited")
    sessioned.client("kms").list_keys()
    code, message, request_id = _denied(sessioned.client("kms").list_aliases)
    assert code == "AccessDeniedException"
    records = [
        json.loads(e["CloudTrailEvent"])
        for e in server.client("cloudtrail").lookup_events(
            LookupAttributes=[{"AttributeKey": "AccessKeyId", "AttributeValue": sessioned.access_key_id}]
        )["Events"]
    ]
    by_name = {r["eventName"]: r for r in records}
    assert set(by_name) >= {"ListKeys", "ListAliases"}
    denied = by_name["ListAliases"]
    assert (denied["errorCode"], denied["errorMessage"], denied["requestID"]) == (code, message, request_id)
    identity = denied["userIdentity"]
    assert identity["type"] == "AssumedRole"
    assert identity["arn"] == sessioned.arn
    assert identity["sessionContext"]["sessionIssuer"]["arn"] == arn
    assert "errorCode" not in by_name["ListKeys"]


def _by_request(
    caller: Caller | KhoaServer, request_ids: set[str], key: str, value: str
) -> dict[str, dict[str, Any]]:
    """The records of ``request_ids`` among the events with ``key`` ``value`` (a LookupAttribute) in
    the trail of ``caller``'s account, by request ID."""
    found: dict[str, dict[str, Any]] = {}
    pages = caller.client("cloudtrail").get_paginator("lookup_events")
    for page in pages.paginate(LookupAttributes=[{"AttributeKey": key, "AttributeValue": value}]):
        for event in page["Events"]:
            record = json.loads(event["CloudTrailEvent"])
            if record.get("requestID") in request_ids:
                found[record["requestID"]] = record
    return found


def test_a_call_on_another_accounts_resource_is_in_both_trails(
    server: KhoaServer, iam: Any, account_b: Caller
) -> None:
    """CloudTrail records a call on another account's key, secret or role in the caller's trail and in
    the owner's, joined by one sharedEventID: the owner sees who used what it owns (KMS Developer
    Guide, "Logging AWS KMS API calls with AWS CloudTrail": cross-account operations are logged in
    both accounts)."""
    b_account = account_b.account_id
    user = new_user(server, account_b.client("iam"), allow(["kms:*", "secretsmanager:*", "sts:AssumeRole"]))
    b_root = f"arn:aws:iam::{b_account}:root"
    shared_with_b = {"Effect": "Allow", "Principal": {"AWS": b_root}, "Resource": "*"}
    root_statement = {"Effect": "Allow", "Principal": {"AWS": ROOT_ARN}, "Action": "kms:*", "Resource": "*"}
    key = server.client("kms").create_key(
        Policy=json.dumps(
            {"Version": "2012-10-17", "Statement": [root_statement, {**shared_with_b, "Action": "kms:*"}]}
        )
    )["KeyMetadata"]["Arn"]
    sm = server.client("secretsmanager")
    secret = sm.create_secret(Name=unique("shared"), SecretString="v", KmsKeyId=key)["ARN"]
    sm.put_resource_policy(
        SecretId=secret,
        ResourcePolicy=document({**shared_with_b, "Action": "secretsmanager:GetSecretValue"}),
    )
    role = iam.create_role(
        RoleName=unique("shared"),
        AssumeRolePolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Principal": {"AWS": b_root}, "Action": "sts:AssumeRole"}],
            }
        ),
    )["Role"]["Arn"]
    calls = {
        "Encrypt": user.client("kms").encrypt(KeyId=key, Plaintext=b"x"),
        "GetSecretValue": user.client("secretsmanager").get_secret_value(SecretId=secret),
        "AssumeRole": user.client("sts").assume_role(RoleArn=role, RoleSessionName="shared"),
    }
    ids = {name: answer["ResponseMetadata"]["RequestId"] for name, answer in calls.items()}
    own = _by_request(account_b, set(ids.values()), "Username", user.name)
    owner = _by_request(server, set(ids.values()), "Username", user.name)
    for name, request_id in ids.items():
        mine, theirs = own[request_id], owner[request_id]
        assert mine["eventName"] == theirs["eventName"] == name
        assert mine["recipientAccountId"] == b_account
        assert theirs["recipientAccountId"] == ACCOUNT_ID
        assert theirs["userIdentity"]["accountId"] == b_account
        assert theirs["userIdentity"]["arn"] == user.arn
        assert mine["sharedEventID"] == theirs["sharedEventID"]
        assert mine["eventID"] != theirs["eventID"]
    # A call within one account stays in its own trail, without a sharedEventID.
    alone = server.client("kms").encrypt(KeyId=key, Plaintext=b"x")["ResponseMetadata"]["RequestId"]
    assert "sharedEventID" not in _by_request(server, {alone}, "ResourceName", key)[alone]


def test_a_refused_signature_is_recorded_in_the_key_owners_trail(
    server: KhoaServer, account_b: Caller
) -> None:
    """A call whose signature fails names an access key: its owner's trail records the refusal (who
    is probing its key), never another tenant's. A key of no account stays in the installation's."""
    user = new_user(server, account_b.client("iam"), allow("secretsmanager:*"))
    wrong = server.client(
        "secretsmanager",
        aws_access_key_id=user.access_key_id,
        aws_secret_access_key="wrong-secret-0000000000000000000000000000",
    )
    refused = error_response(wrong.get_secret_value, SecretId="prod/db")
    assert refused["Error"]["Code"] == "InvalidSignatureException"
    request_id = refused["ResponseMetadata"]["RequestId"]
    own = _by_request(account_b, {request_id}, "AccessKeyId", user.access_key_id)
    assert own[request_id]["errorCode"] == "InvalidSignatureException"
    assert own[request_id]["recipientAccountId"] == account_b.account_id
    assert _by_request(server, {request_id}, "AccessKeyId", user.access_key_id) == {}
    unknown = "AKIAKHOANOSUCHKEY999"
    stranger = server.client("secretsmanager", aws_access_key_id=unknown, aws_secret_access_key="x" * 40)
    refused = error_response(stranger.get_secret_value, SecretId="prod/db")
    request_id = refused["ResponseMetadata"]["RequestId"]
    assert (
        _by_request(server, {request_id}, "AccessKeyId", unknown)[request_id]["recipientAccountId"]
        == ACCOUNT_ID
    )
