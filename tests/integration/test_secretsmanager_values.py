"""Secrets Manager through boto3 against a real server: CreateSecret and GetSecretValue.

String and binary values, KMS keys (default, key ID, key ARN, alias), tags, ClientRequestToken
idempotency, name rules and the 6-character ARN suffix, finding a secret by name, full ARN or partial
ARN, and reading versions by VersionId or VersionStage. Error codes follow the AWS Secrets Manager API
reference and are asserted exactly.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support.errors import error_code
from tests.support.names import secret_name
from tests.support.rotation import wait_for
from tests.support.server import ACCOUNT_ID, REGION, KhoaServer


@pytest.fixture
def unchecked(server: KhoaServer) -> Any:
    """A client that sends what it is given, so the server's own validation answers."""
    return server.client("secretsmanager", validate=False)


def token() -> str:
    return str(uuid.uuid4())


# -- CreateSecret ---------------------------------------------------------------------------------


def test_create_string_secret_and_read_it_back(sm: Any) -> None:
    name = secret_name("app")
    created = sm.create_secret(Name=name, SecretString='{"user":"svc","password":"p"}')
    assert created["Name"] == name
    assert re.fullmatch(
        rf"arn:aws:secretsmanager:{REGION}:{ACCOUNT_ID}:secret:{re.escape(name)}-[A-Za-z0-9]{{6}}",
        created["ARN"],
    )
    assert uuid.UUID(created["VersionId"])
    value = sm.get_secret_value(SecretId=name)
    assert value["SecretString"] == '{"user":"svc","password":"p"}'
    assert "SecretBinary" not in value
    assert value["ARN"] == created["ARN"]
    assert value["Name"] == name
    assert value["VersionId"] == created["VersionId"]
    assert value["VersionStages"] == ["AWSCURRENT"]
    assert abs(value["CreatedDate"] - datetime.now(UTC)) < timedelta(minutes=5)


def test_create_binary_secret(sm: Any) -> None:
    name = secret_name("bin")
    blob = bytes(range(256))
    sm.create_secret(Name=name, SecretBinary=blob)
    value = sm.get_secret_value(SecretId=name)
    assert value["SecretBinary"] == blob
    assert "SecretString" not in value


def test_create_without_a_value_has_no_version(sm: Any) -> None:
    name = secret_name("empty")
    created = sm.create_secret(Name=name, Description="filled in later")
    assert "VersionId" not in created
    assert error_code(sm.get_secret_value, SecretId=name) == "ResourceNotFoundException"
    described = sm.describe_secret(SecretId=name)
    assert "VersionIdsToStages" not in described
    # the first PutSecretValue gets AWSCURRENT even when other labels are asked for
    put = sm.put_secret_value(SecretId=name, SecretString="first", VersionStages=["blue"])
    assert sorted(put["VersionStages"]) == ["AWSCURRENT", "blue"]
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "first"


def test_string_and_binary_together_are_refused(sm: Any) -> None:
    code = error_code(sm.create_secret, Name=secret_name("test"), SecretString="a", SecretBinary=b"b")
    assert code == "InvalidParameterException"


def test_every_arn_gets_a_new_random_suffix(sm: Any) -> None:
    name = secret_name("suffix")
    first = sm.create_secret(Name=name, SecretString="one")["ARN"]
    sm.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)
    second = sm.create_secret(Name=name, SecretString="two")["ARN"]
    assert first[:-6] == second[:-6]
    assert first != second
    # the old ARN names nothing now
    assert error_code(sm.get_secret_value, SecretId=first) == "ResourceNotFoundException"


@pytest.mark.parametrize("suffix", ["", "A-Za-z0-9/_+=.@-", "x" * 500, "/path/to/my.secret@prod", "-abcdef"])
def test_valid_names(sm: Any, suffix: str) -> None:
    name = uuid.uuid4().hex[:12] + suffix  # up to 512 characters of [A-Za-z0-9/_+=.@-]
    sm.create_secret(Name=name, SecretString="v")
    assert sm.describe_secret(SecretId=name)["Name"] == name
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "v"
    sm.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)


@pytest.mark.parametrize("name", ["has space", "semi;colon", "star*", "tab\tname", "é", "colon:name"])
def test_invalid_names(sm: Any, name: str) -> None:
    assert error_code(sm.create_secret, Name=name, SecretString="v") == "ValidationException"


def test_name_length_limit(unchecked: Any) -> None:
    assert error_code(unchecked.create_secret, Name="x" * 513, SecretString="v") == "ValidationException"


def test_existing_name_is_refused(sm: Any) -> None:
    name = secret_name("dup")
    sm.create_secret(Name=name, SecretString="one")
    assert error_code(sm.create_secret, Name=name, SecretString="two") == "ResourceExistsException"
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "one"


def test_name_of_a_secret_scheduled_for_deletion_is_refused(sm: Any) -> None:
    name = secret_name("pending")
    sm.create_secret(Name=name, SecretString="one")
    sm.delete_secret(SecretId=name, RecoveryWindowInDays=7)
    assert error_code(sm.create_secret, Name=name, SecretString="two") == "InvalidRequestException"


def test_client_request_token_idempotency(sm: Any) -> None:
    name = secret_name("idem")
    version = token()
    first = sm.create_secret(Name=name, SecretString="same", ClientRequestToken=version)
    assert first["VersionId"] == version
    # a retry with the same token and the same value succeeds and changes nothing
    again = sm.create_secret(Name=name, SecretString="same", ClientRequestToken=version)
    assert again["ARN"] == first["ARN"]
    assert again["VersionId"] == version
    assert list(sm.describe_secret(SecretId=name)["VersionIdsToStages"]) == [version]
    # the same token with a different value is refused
    code = error_code(sm.create_secret, Name=name, SecretString="different", ClientRequestToken=version)
    assert code == "ResourceExistsException"
    # PutSecretValue: same token + same value is a no-op, a different value is refused
    put = sm.put_secret_value(SecretId=name, SecretString="same", ClientRequestToken=version)
    assert put["VersionId"] == version
    assert put["VersionStages"] == ["AWSCURRENT"]
    code = error_code(sm.put_secret_value, SecretId=name, SecretString="other", ClientRequestToken=version)
    assert code == "ResourceExistsException"
    code = error_code(sm.put_secret_value, SecretId=name, SecretBinary=b"same", ClientRequestToken=version)
    assert code == "ResourceExistsException"
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "same"


def test_client_request_token_length(unchecked: Any) -> None:
    code = error_code(
        unchecked.create_secret, Name=secret_name("test"), SecretString="v", ClientRequestToken="short"
    )
    assert code == "ValidationException"


def test_tags_on_create(sm: Any) -> None:
    name = secret_name("tags")
    tags = [{"Key": "env", "Value": "prod"}, {"Key": "team", "Value": ""}]
    sm.create_secret(Name=name, SecretString="v", Tags=tags)
    assert sm.describe_secret(SecretId=name)["Tags"] == tags
    reserved = [{"Key": "aws:reserved", "Value": "x"}]
    assert error_code(sm.create_secret, Name=secret_name("test"), SecretString="v", Tags=reserved) == (
        "InvalidParameterException"
    )


def test_value_size_limit(sm: Any, unchecked: Any) -> None:
    name = secret_name("big")
    sm.create_secret(Name=name, SecretString="x" * 65536)
    assert len(sm.get_secret_value(SecretId=name)["SecretString"]) == 65536
    sm.put_secret_value(SecretId=name, SecretBinary=b"\x00" * 65536)
    code = error_code(unchecked.create_secret, Name=secret_name("test"), SecretString="x" * 65537)
    assert code == "ValidationException"
    # the limit is in bytes: 21,846 three-byte characters are 65,538 bytes
    assert error_code(sm.put_secret_value, SecretId=name, SecretString="€" * 21846) == "ValidationException"
    code = error_code(unchecked.put_secret_value, SecretId=name, SecretBinary=b"\x00" * 65537)
    assert code == "ValidationException"
    code = error_code(unchecked.update_secret, SecretId=name, SecretString="x" * 65537)
    assert code == "ValidationException"
    assert error_code(unchecked.put_secret_value, SecretId=name, SecretString="") == "ValidationException"
    assert len(sm.get_secret_value(SecretId=name)["SecretBinary"]) == 65536


def test_unicode_values_round_trip(sm: Any) -> None:
    name = secret_name("unicode")
    value = "pässwörd 🔑 \u0000 end"
    sm.create_secret(Name=name, SecretString=value)
    assert sm.get_secret_value(SecretId=name)["SecretString"] == value


# -- KMS keys -------------------------------------------------------------------------------------


def test_default_key_is_the_aws_managed_key(server: KhoaServer, sm: Any) -> None:
    kms = server.client("kms")
    name = secret_name("default-key")
    sm.create_secret(Name=name, SecretString="v")
    assert "KmsKeyId" not in sm.describe_secret(SecretId=name)
    managed = kms.describe_key(KeyId="alias/aws/secretsmanager")["KeyMetadata"]
    assert managed["KeyManager"] == "AWS"
    versions = sm.list_secret_version_ids(SecretId=name)["Versions"]
    assert versions[0]["KmsKeyIds"] == [managed["Arn"]]


@pytest.mark.parametrize("form", ["KeyId", "Arn", "alias", "alias-arn"])
def test_customer_key_by_any_name(server: KhoaServer, sm: Any, form: str) -> None:
    kms = server.client("kms")
    key = kms.create_key(Description="secrets")["KeyMetadata"]
    alias = f"alias/sm-{uuid.uuid4().hex[:10]}"
    kms.create_alias(AliasName=alias, TargetKeyId=key["KeyId"])
    reference = {
        "KeyId": key["KeyId"],
        "Arn": key["Arn"],
        "alias": alias,
        "alias-arn": f"arn:aws:kms:{REGION}:{ACCOUNT_ID}:{alias}",
    }[form]
    name = secret_name("cmk")
    sm.create_secret(Name=name, SecretString="under a customer key", KmsKeyId=reference)
    assert sm.describe_secret(SecretId=name)["KmsKeyId"] == reference
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "under a customer key"
    versions = sm.list_secret_version_ids(SecretId=name)["Versions"]
    assert versions[0]["KmsKeyIds"] == [key["Arn"]]


def test_unknown_or_unsuitable_keys(server: KhoaServer, sm: Any) -> None:
    kms = server.client("kms")
    missing = str(uuid.uuid4())
    assert error_code(sm.create_secret, Name=secret_name("test"), SecretString="v", KmsKeyId=missing) == (
        "ResourceNotFoundException"
    )
    assert error_code(
        sm.create_secret, Name=secret_name("test"), SecretString="v", KmsKeyId="alias/nope"
    ) == ("ResourceNotFoundException")
    rsa = kms.create_key(KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]
    assert error_code(
        sm.create_secret, Name=secret_name("test"), SecretString="v", KmsKeyId=rsa["KeyId"]
    ) == ("EncryptionFailure")
    disabled = kms.create_key()["KeyMetadata"]
    kms.disable_key(KeyId=disabled["KeyId"])
    assert error_code(
        sm.create_secret, Name=secret_name("test"), SecretString="v", KmsKeyId=disabled["KeyId"]
    ) == ("EncryptionFailure")


# -- GetSecretValue -------------------------------------------------------------------------------


def test_find_by_name_full_arn_and_partial_arn(sm: Any) -> None:
    name = secret_name("find")
    arn = sm.create_secret(Name=name, SecretString="found")["ARN"]
    for secret_id in (name, arn, arn[:-7]):
        assert sm.get_secret_value(SecretId=secret_id)["SecretString"] == "found"
        assert sm.describe_secret(SecretId=secret_id)["ARN"] == arn
    # a wrong suffix, another region or another account in the ARN name nothing
    for secret_id in (
        arn[:-6] + "AAAAAA",
        arn.replace(REGION, "eu-west-1"),
        arn.replace(ACCOUNT_ID, "999999999999"),
        arn[:-8],
    ):
        assert error_code(sm.get_secret_value, SecretId=secret_id) == "ResourceNotFoundException"
    assert error_code(sm.get_secret_value, SecretId=secret_name("missing")) == "ResourceNotFoundException"
    assert error_code(sm.get_secret_value, SecretId="bad name!") == "ValidationException"


def test_name_that_looks_like_a_suffix(sm: Any) -> None:
    """A name ending in a hyphen and six characters is allowed; it is found by its exact name."""
    base = secret_name("look")
    sm.create_secret(Name=base, SecretString="short")
    sm.create_secret(Name=f"{base}-abcdef", SecretString="long")
    assert sm.get_secret_value(SecretId=f"{base}-abcdef")["SecretString"] == "long"
    assert sm.get_secret_value(SecretId=base)["SecretString"] == "short"


def test_read_versions_by_id_and_stage(sm: Any) -> None:
    name = secret_name("versions")
    v1 = sm.create_secret(Name=name, SecretString="one")["VersionId"]
    v2 = sm.put_secret_value(SecretId=name, SecretString="two")["VersionId"]
    v3 = sm.put_secret_value(SecretId=name, SecretString="three", VersionStages=["canary"])["VersionId"]

    assert sm.get_secret_value(SecretId=name)["SecretString"] == "two"
    previous = sm.get_secret_value(SecretId=name, VersionStage="AWSPREVIOUS")
    assert (previous["SecretString"], previous["VersionId"], previous["VersionStages"]) == (
        "one",
        v1,
        ["AWSPREVIOUS"],
    )
    assert sm.get_secret_value(SecretId=name, VersionStage="canary")["SecretString"] == "three"
    assert sm.get_secret_value(SecretId=name, VersionId=v3)["VersionStages"] == ["canary"]
    both = sm.get_secret_value(SecretId=name, VersionId=v2, VersionStage="AWSCURRENT")
    assert both["SecretString"] == "two"

    assert error_code(sm.get_secret_value, SecretId=name, VersionId=v1, VersionStage="AWSCURRENT") == (
        "InvalidRequestException"
    )
    assert error_code(sm.get_secret_value, SecretId=name, VersionId=str(uuid.uuid4())) == (
        "ResourceNotFoundException"
    )
    assert error_code(sm.get_secret_value, SecretId=name, VersionStage="AWSPENDING") == (
        "ResourceNotFoundException"
    )
    # a third AWSCURRENT move leaves v1 without labels: it can still be read by VersionId
    sm.put_secret_value(SecretId=name, SecretString="four")
    deprecated = sm.get_secret_value(SecretId=name, VersionId=v1)
    assert deprecated["SecretString"] == "one"
    assert deprecated["VersionStages"] == []


def test_secret_marked_for_deletion_can_not_be_read(sm: Any) -> None:
    name = secret_name("gone")
    sm.create_secret(Name=name, SecretString="v")
    sm.delete_secret(SecretId=name)
    assert error_code(sm.get_secret_value, SecretId=name) == "InvalidRequestException"
    assert error_code(sm.put_secret_value, SecretId=name, SecretString="w") == "InvalidRequestException"
    assert error_code(sm.update_secret, SecretId=name, Description="d") == "InvalidRequestException"
    sm.restore_secret(SecretId=name)
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "v"


def test_last_accessed_date_is_the_day(sm: Any) -> None:
    name = secret_name("accessed")
    sm.create_secret(Name=name, SecretString="v")
    assert "LastAccessedDate" not in sm.describe_secret(SecretId=name)
    sm.get_secret_value(SecretId=name)
    # written off the read's path once the trail has recorded the read: moments later
    accessed = wait_for(lambda: sm.describe_secret(SecretId=name).get("LastAccessedDate")).astimezone(UTC)
    assert (accessed.hour, accessed.minute, accessed.second, accessed.microsecond) == (0, 0, 0, 0)
    assert datetime.now(UTC) - accessed < timedelta(days=400)
    version = sm.list_secret_version_ids(SecretId=name)["Versions"][0]
    assert version["LastAccessedDate"] == accessed
