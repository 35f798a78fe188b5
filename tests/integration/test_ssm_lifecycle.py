"""Parameter policies and expiration, Secrets Manager references, and SecureStrings at rest."""

from __future__ import annotations

import base64
import json
import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.support.errors import caught_code
from tests.support.names import parameter_name
from tests.support.server import KhoaServer


def expiration(moment: datetime) -> dict[str, Any]:
    stamp = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return {"Type": "Expiration", "Version": "1.0", "Attributes": {"Timestamp": stamp}}


EXPIRATION_NOTICE = {
    "Type": "ExpirationNotification",
    "Version": "1.0",
    "Attributes": {"Before": "15", "Unit": "Days"},
}
NO_CHANGE_NOTICE = {
    "Type": "NoChangeNotification",
    "Version": "1.0",
    "Attributes": {"After": "20", "Unit": "Hours"},
}


# -- policies ----------------------------------------------------------------------------------------


def test_policies_are_stored_and_described(ssm: Any) -> None:
    name = parameter_name("lc")
    document = [expiration(datetime.now(UTC) + timedelta(days=300)), EXPIRATION_NOTICE, NO_CHANGE_NOTICE]
    put = ssm.put_parameter(
        Name=name, Value="x", Type="String", Tier="Advanced", Policies=json.dumps(document)
    )
    assert put["Tier"] == "Advanced"
    (entry,) = ssm.describe_parameters(ParameterFilters=[{"Key": "Name", "Values": [name]}])["Parameters"]
    assert [p["PolicyType"] for p in entry["Policies"]] == [
        "Expiration",
        "ExpirationNotification",
        "NoChangeNotification",
    ]
    assert {p["PolicyStatus"] for p in entry["Policies"]} == {"Pending"}
    assert [json.loads(p["PolicyText"]) for p in entry["Policies"]] == document
    # An update without Policies keeps them (AWS: updating a parameter doesn't change its expiration).
    ssm.put_parameter(Name=name, Value="y", Overwrite=True)
    (entry,) = ssm.describe_parameters(ParameterFilters=[{"Key": "Name", "Values": [name]}])["Parameters"]
    assert len(entry["Policies"]) == 3
    # An empty policy list removes them.
    ssm.put_parameter(Name=name, Value="z", Overwrite=True, Policies="[]")
    (entry,) = ssm.describe_parameters(ParameterFilters=[{"Key": "Name", "Values": [name]}])["Parameters"]
    assert entry["Policies"] == []


def test_policies_need_the_advanced_tier(ssm: Any) -> None:
    document = json.dumps([NO_CHANGE_NOTICE])
    with pytest.raises(ClientError) as exc:
        ssm.put_parameter(
            Name=parameter_name("lc"), Value="x", Type="String", Tier="Standard", Policies=document
        )
    assert caught_code(exc) == "IncompatiblePolicyException"
    # With no tier given (Standard by default) too; Intelligent-Tiering picks Advanced.
    with pytest.raises(ClientError) as exc:
        ssm.put_parameter(Name=parameter_name("lc"), Value="x", Type="String", Policies=document)
    assert caught_code(exc) == "IncompatiblePolicyException"
    put = ssm.put_parameter(
        Name=parameter_name("lc"), Value="x", Type="String", Tier="Intelligent-Tiering", Policies=document
    )
    assert put["Tier"] == "Advanced"


@pytest.mark.parametrize(
    ("document", "code"),
    [
        ("not json", "InvalidPolicyTypeException"),
        ('[{"Type": "SelfDestruct", "Version": "1.0", "Attributes": {}}]', "InvalidPolicyTypeException"),
        ('[{"Type": "Expiration", "Version": "1.0"}]', "InvalidPolicyAttributeException"),
        (
            '[{"Type": "Expiration", "Version": "1.0", "Attributes": {"Timestamp": "soon"}}]',
            "InvalidPolicyAttributeException",
        ),
        (
            '[{"Type": "ExpirationNotification", "Version": "1.0", '
            '"Attributes": {"Before": "x", "Unit": "Days"}}]',
            "InvalidPolicyAttributeException",
        ),
        (
            '[{"Type": "NoChangeNotification", "Version": "1.0", '
            '"Attributes": {"After": "3", "Unit": "Weeks"}}]',
            "InvalidPolicyAttributeException",
        ),
        (json.dumps([NO_CHANGE_NOTICE, NO_CHANGE_NOTICE]), "IncompatiblePolicyException"),
    ],
)
def test_policy_validation(ssm: Any, document: str, code: str) -> None:
    with pytest.raises(ClientError) as exc:
        ssm.put_parameter(
            Name=parameter_name("lc"), Value="x", Type="String", Tier="Advanced", Policies=document
        )
    assert caught_code(exc) == code


def test_expiration_deletes_the_parameter_when_due(fresh_server: KhoaServer) -> None:
    server = fresh_server.start()
    ssm = server.client("ssm")
    now = datetime.now(UTC)
    doomed, later, plain = "/exp/doomed", "/exp/later", "/exp/plain"
    ssm.put_parameter(
        Name=doomed,
        Value="x",
        Type="SecureString",
        Tier="Advanced",
        Policies=json.dumps([expiration(now + timedelta(hours=1))]),
        Tags=[{"Key": "k", "Value": "v"}],
    )
    ssm.label_parameter_version(Name=doomed, Labels=["l"])
    ssm.put_parameter(
        Name=later,
        Value="x",
        Type="String",
        Tier="Advanced",
        Policies=json.dumps([expiration(now + timedelta(days=2))]),
    )
    ssm.put_parameter(Name=plain, Value="x", Type="String")
    server.run_jobs()
    assert len(ssm.get_parameters(Names=[doomed, later, plain])["Parameters"]) == 3

    server.advance_clock(2 * 3600)
    # Due but not yet swept: the policy reports Finished once its time has passed.
    (entry,) = ssm.describe_parameters(ParameterFilters=[{"Key": "Name", "Values": [doomed]}])["Parameters"]
    assert entry["Policies"][0]["PolicyStatus"] == "Finished"
    assert server.run_jobs() >= 1
    result = ssm.get_parameters(Names=[doomed, later, plain])
    assert sorted(p["Name"] for p in result["Parameters"]) == [later, plain]
    assert result["InvalidParameters"] == [doomed]
    with pytest.raises(ClientError) as exc:
        ssm.get_parameter_history(Name=doomed)
    assert caught_code(exc) == "ParameterNotFound"
    # The name is free again.
    assert ssm.put_parameter(Name=doomed, Value="new", Type="String")["Version"] == 1

    server.advance_clock(2 * 86400)
    server.run_jobs()
    assert ssm.get_parameters(Names=[later])["InvalidParameters"] == [later]


# -- Secrets Manager references ----------------------------------------------------------------------


def test_secrets_manager_reference(server: KhoaServer, ssm: Any) -> None:
    sm = server.client("secretsmanager")
    secret_name = f"ref/{uuid.uuid4().hex[:10]}"
    created = sm.create_secret(Name=secret_name, SecretString="first-value")
    second = sm.put_secret_value(SecretId=secret_name, SecretString="second-value")
    reference = f"/aws/reference/secretsmanager/{secret_name}"

    parameter = ssm.get_parameter(Name=reference, WithDecryption=True)["Parameter"]
    assert parameter["Name"] == reference
    assert parameter["Type"] == "SecureString"
    assert parameter["Value"] == "second-value"
    assert parameter["Version"] == 0
    assert parameter["ARN"] == created["ARN"]
    source = json.loads(parameter["SourceResult"])
    assert source["ARN"] == created["ARN"]
    assert source["Name"] == secret_name
    assert source["VersionId"] == second["VersionId"]
    assert source["VersionStages"] == ["AWSCURRENT"]

    previous = ssm.get_parameter(Name=f"{reference}:AWSPREVIOUS", WithDecryption=True)["Parameter"]
    assert previous["Value"] == "first-value"
    assert previous["Selector"] == ":AWSPREVIOUS"
    by_version = ssm.get_parameter(Name=f"{reference}:{created['VersionId']}", WithDecryption=True)[
        "Parameter"
    ]
    assert by_version["Value"] == "first-value"
    by_arn = ssm.get_parameter(Name=f"/aws/reference/secretsmanager/{created['ARN']}", WithDecryption=True)
    assert by_arn["Parameter"]["Value"] == "second-value"

    both = ssm.get_parameters(
        Names=[reference, "/aws/reference/secretsmanager/no-such-secret"], WithDecryption=True
    )
    assert [p["Value"] for p in both["Parameters"]] == ["second-value"]
    assert both["InvalidParameters"] == ["/aws/reference/secretsmanager/no-such-secret"]

    with pytest.raises(ClientError) as exc:
        ssm.get_parameter(Name=reference)
    assert caught_code(exc) == "ValidationException"
    with pytest.raises(ClientError) as exc:
        ssm.get_parameter(Name="/aws/reference/secretsmanager/no-such-secret", WithDecryption=True)
    assert caught_code(exc) == "ParameterNotFound"


# -- at rest -----------------------------------------------------------------------------------------


def _files(data_dir: Path) -> list[Path]:
    return [p for p in sorted(data_dir.rglob("*")) if p.is_file() and p.name != "root.key"]


def _leaks(paths: list[Path], secrets: dict[str, bytes]) -> list[str]:
    found = []
    for path in paths:
        content = path.read_bytes()
        for label, secret in secrets.items():
            forms = (
                secret,
                secret.hex().encode(),
                base64.b64encode(secret),
                secret.decode().encode("utf-16-le"),
            )
            if any(form in content for form in forms):
                found.append(f"{label} in {path.name}")  # names only, never the secret
    return found


def test_secure_strings_never_stored_in_plaintext(fresh_server: KhoaServer) -> None:
    server = fresh_server.start()
    ssm = server.client("ssm")
    kms = server.client("kms")
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    secrets: dict[str, bytes] = {}
    for i, (tier, key) in enumerate((("Standard", None), ("Standard", key_id), ("Advanced", None))):
        marker = f"KHOA-SSM-MARKER-{i}-{os.urandom(12).hex()}"
        secrets[f"secure string {i}"] = marker.encode()
        kwargs: dict[str, Any] = {"KeyId": key} if key else {}
        name = f"/at-rest/p{i}"
        ssm.put_parameter(Name=name, Value=marker, Type="SecureString", Tier=tier, **kwargs)
        ssm.put_parameter(Name=name, Value=marker + "-v2", Overwrite=True)
        secrets[f"secure string {i} v2"] = (marker + "-v2").encode()
        assert ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"] == marker + "-v2"
    plain_marker = f"KHOA-SSM-PLAIN-{os.urandom(8).hex()}"
    ssm.put_parameter(Name="/at-rest/plain", Value=plain_marker, Type="String")

    data_dir = fresh_server.data_dir
    # The test can see a plain String, so it is reading the right files.
    assert _leaks(_files(data_dir), {"plain": plain_marker.encode()}) != []
    assert _leaks([*_files(data_dir), fresh_server.log_path], secrets) == []
    server.stop()
    assert _leaks([*_files(data_dir), fresh_server.log_path], secrets) == []
