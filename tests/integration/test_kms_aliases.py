"""Aliases through boto3 against a real server: CreateAlias, UpdateAlias, DeleteAlias, ListAliases,
and using alias names and alias ARNs wherever AWS KMS accepts them.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import pytest

from tests.support.errors import expect_error
from tests.support.server import ACCOUNT_ID, REGION, KhoaServer

ALIAS_DOCS = "Please see https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html"


def new_alias() -> str:
    return f"alias/test-{uuid.uuid4().hex[:12]}"


def alias_arn(name: str, region: str = REGION) -> str:
    return f"arn:aws:kms:{region}:{ACCOUNT_ID}:{name}"


def all_aliases(kms: Any, **kwargs: Any) -> list[dict[str, Any]]:
    aliases: list[dict[str, Any]] = []
    while True:
        page = kms.list_aliases(**kwargs)
        aliases.extend(page["Aliases"])
        if not page["Truncated"]:
            assert "NextMarker" not in page
            return aliases
        kwargs["Marker"] = page["NextMarker"]


def find_alias(kms: Any, name: str) -> dict[str, Any] | None:
    return next((a for a in all_aliases(kms) if a["AliasName"] == name), None)


@pytest.fixture
def key(kms: Any) -> dict[str, Any]:
    meta: dict[str, Any] = kms.create_key(Description="alias target")["KeyMetadata"]
    return meta


# -- CreateAlias ---------------------------------------------------------------------------------


def test_create_alias_and_use_it(kms: Any, key: dict[str, Any]) -> None:
    name = new_alias()
    response = kms.create_alias(AliasName=name, TargetKeyId=key["KeyId"])
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200

    listed = find_alias(kms, name)
    assert listed is not None
    assert listed["AliasArn"] == alias_arn(name)
    assert listed["TargetKeyId"] == key["KeyId"]
    assert isinstance(listed["CreationDate"], datetime)
    assert isinstance(listed["LastUpdatedDate"], datetime)

    for ref in (name, alias_arn(name)):
        assert kms.describe_key(KeyId=ref)["KeyMetadata"]["KeyId"] == key["KeyId"]
        encrypted = kms.encrypt(KeyId=ref, Plaintext=b"via alias")
        assert encrypted["KeyId"] == key["Arn"]
        assert kms.decrypt(CiphertextBlob=encrypted["CiphertextBlob"], KeyId=ref)["Plaintext"] == b"via alias"


def test_create_alias_with_key_arn(kms: Any, key: dict[str, Any]) -> None:
    name = new_alias()
    kms.create_alias(AliasName=name, TargetKeyId=key["Arn"])
    listed = find_alias(kms, name)
    assert listed is not None
    assert listed["TargetKeyId"] == key["KeyId"]


def test_a_key_can_have_several_aliases(kms: Any, key: dict[str, Any]) -> None:
    names = sorted(new_alias() for _ in range(3))
    for name in names:
        kms.create_alias(AliasName=name, TargetKeyId=key["KeyId"])
    listed = all_aliases(kms, KeyId=key["KeyId"])
    assert [a["AliasName"] for a in listed] == names
    assert {a["TargetKeyId"] for a in listed} == {key["KeyId"]}


@pytest.mark.parametrize("name", ["my-key", "aliasmy-key", "Alias/my-key", "keys/alias/x"])
def test_create_alias_needs_the_prefix(kms: Any, key: dict[str, Any], name: str) -> None:
    error = expect_error("ValidationException", kms.create_alias, AliasName=name, TargetKeyId=key["KeyId"])
    assert error["Message"] == f'Alias must start with the prefix "alias/". {ALIAS_DOCS}'


@pytest.mark.parametrize("name", ["alias/aws/mine", "alias/aws/ebs", "alias/aws/s3"])
def test_create_alias_reserved_prefix(kms: Any, key: dict[str, Any], name: str) -> None:
    expect_error("NotAuthorizedException", kms.create_alias, AliasName=name, TargetKeyId=key["KeyId"])


@pytest.mark.parametrize("name", ["alias/has space", "alias/bang!", "alias/dollar$", "alias/colon:name"])
def test_create_alias_invalid_characters(kms: Any, key: dict[str, Any], name: str) -> None:
    expect_error("ValidationException", kms.create_alias, AliasName=name, TargetKeyId=key["KeyId"])


def test_create_alias_name_too_long(kms: Any, key: dict[str, Any]) -> None:
    expect_error(
        "ValidationException", kms.create_alias, AliasName="alias/" + "a" * 251, TargetKeyId=key["KeyId"]
    )
    longest = "alias/" + uuid.uuid4().hex + "a" * (250 - 32)
    assert len(longest) == 256
    kms.create_alias(AliasName=longest, TargetKeyId=key["KeyId"])


def test_create_alias_duplicate(kms: Any, key: dict[str, Any]) -> None:
    name = new_alias()
    kms.create_alias(AliasName=name, TargetKeyId=key["KeyId"])
    other = kms.create_key()["KeyMetadata"]
    error = expect_error(
        "AlreadyExistsException", kms.create_alias, AliasName=name, TargetKeyId=other["KeyId"]
    )
    assert error["Message"] == f"An alias with the name {alias_arn(name)} already exists"
    # The existing alias is untouched.
    assert kms.describe_key(KeyId=name)["KeyMetadata"]["KeyId"] == key["KeyId"]


def test_create_alias_target_must_exist(kms: Any) -> None:
    expect_error("NotFoundException", kms.create_alias, AliasName=new_alias(), TargetKeyId=str(uuid.uuid4()))
    expect_error("NotFoundException", kms.create_alias, AliasName=new_alias(), TargetKeyId="not-a-key")


def test_create_alias_target_cannot_be_an_alias(kms: Any, key: dict[str, Any]) -> None:
    existing = new_alias()
    kms.create_alias(AliasName=existing, TargetKeyId=key["KeyId"])
    for target in (existing, alias_arn(existing)):
        error = expect_error(
            "ValidationException", kms.create_alias, AliasName=new_alias(), TargetKeyId=target
        )
        assert error["Message"] == "Aliases must refer to keys. Not aliases"


def test_create_alias_target_pending_deletion(kms: Any, key: dict[str, Any]) -> None:
    kms.schedule_key_deletion(KeyId=key["KeyId"], PendingWindowInDays=7)
    expect_error(
        "KMSInvalidStateException", kms.create_alias, AliasName=new_alias(), TargetKeyId=key["KeyId"]
    )


def test_alias_to_a_disabled_key(kms: Any, key: dict[str, Any]) -> None:
    kms.disable_key(KeyId=key["KeyId"])
    name = new_alias()
    kms.create_alias(AliasName=name, TargetKeyId=key["KeyId"])
    expect_error("DisabledException", kms.encrypt, KeyId=name, Plaintext=b"x")


def test_aliases_are_per_region(server: KhoaServer, kms: Any, key: dict[str, Any]) -> None:
    name = new_alias()
    kms.create_alias(AliasName=name, TargetKeyId=key["KeyId"])
    other = server.client("kms", region="eu-west-1")
    expect_error("NotFoundException", other.describe_key, KeyId=name)
    assert all(a["AliasName"] != name for a in all_aliases(other))
    # The same name is free in another region.
    elsewhere = other.create_key()["KeyMetadata"]
    other.create_alias(AliasName=name, TargetKeyId=elsewhere["KeyId"])
    assert other.describe_key(KeyId=name)["KeyMetadata"]["KeyId"] == elsewhere["KeyId"]
    assert kms.describe_key(KeyId=name)["KeyMetadata"]["KeyId"] == key["KeyId"]
    # An alias ARN of another region does not resolve here.
    expect_error("NotFoundException", kms.describe_key, KeyId=alias_arn(name, "eu-west-1"))


# -- UpdateAlias ---------------------------------------------------------------------------------


def test_update_alias_moves_it(kms: Any, key: dict[str, Any]) -> None:
    name = new_alias()
    kms.create_alias(AliasName=name, TargetKeyId=key["KeyId"])
    before = find_alias(kms, name)
    assert before is not None
    blob = kms.encrypt(KeyId=name, Plaintext=b"old")["CiphertextBlob"]

    new_key = kms.create_key()["KeyMetadata"]
    response = kms.update_alias(AliasName=name, TargetKeyId=new_key["Arn"])
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200

    after = find_alias(kms, name)
    assert after is not None
    assert after["TargetKeyId"] == new_key["KeyId"]
    assert after["CreationDate"] == before["CreationDate"]
    assert after["LastUpdatedDate"] >= before["LastUpdatedDate"]
    assert kms.encrypt(KeyId=name, Plaintext=b"new")["KeyId"] == new_key["Arn"]
    # Ciphertext made through the alias still names the old key.
    assert kms.decrypt(CiphertextBlob=blob)["KeyId"] == key["Arn"]
    expect_error("IncorrectKeyException", kms.decrypt, CiphertextBlob=blob, KeyId=name)
    assert all(a["AliasName"] != name for a in all_aliases(kms, KeyId=key["KeyId"]))


def test_update_alias_errors(kms: Any, key: dict[str, Any]) -> None:
    missing = new_alias()
    error = expect_error("NotFoundException", kms.update_alias, AliasName=missing, TargetKeyId=key["KeyId"])
    assert error["Message"] == f"Alias {alias_arn(missing)} is not found."

    name = new_alias()
    kms.create_alias(AliasName=name, TargetKeyId=key["KeyId"])
    expect_error("NotFoundException", kms.update_alias, AliasName=name, TargetKeyId=str(uuid.uuid4()))
    expect_error("ValidationException", kms.update_alias, AliasName="no-prefix", TargetKeyId=key["KeyId"])
    expect_error(
        "NotAuthorizedException", kms.update_alias, AliasName="alias/aws/ebs", TargetKeyId=key["KeyId"]
    )
    other_alias = new_alias()
    kms.create_alias(AliasName=other_alias, TargetKeyId=kms.create_key()["KeyMetadata"]["KeyId"])
    expect_error("ValidationException", kms.update_alias, AliasName=name, TargetKeyId=other_alias)

    doomed = kms.create_key()["KeyMetadata"]
    kms.schedule_key_deletion(KeyId=doomed["KeyId"], PendingWindowInDays=7)
    expect_error("KMSInvalidStateException", kms.update_alias, AliasName=name, TargetKeyId=doomed["KeyId"])
    assert kms.describe_key(KeyId=name)["KeyMetadata"]["KeyId"] == key["KeyId"]


@pytest.mark.parametrize(
    ("current", "target"),
    [
        ({}, {"KeySpec": "RSA_2048", "KeyUsage": "ENCRYPT_DECRYPT"}),
        ({}, {"KeySpec": "HMAC_256", "KeyUsage": "GENERATE_VERIFY_MAC"}),
        (
            {"KeySpec": "RSA_2048", "KeyUsage": "ENCRYPT_DECRYPT"},
            {"KeySpec": "RSA_2048", "KeyUsage": "SIGN_VERIFY"},
        ),
        (
            {"KeySpec": "ECC_NIST_P256", "KeyUsage": "SIGN_VERIFY"},
            {"KeySpec": "ECC_NIST_P256", "KeyUsage": "KEY_AGREEMENT"},
        ),
        ({"KeySpec": "HMAC_256", "KeyUsage": "GENERATE_VERIFY_MAC"}, {}),
        ({"KeySpec": "ECC_NIST_P256", "KeyUsage": "SIGN_VERIFY"}, {}),
    ],
    ids=[
        "symmetric-to-rsa",
        "symmetric-to-hmac",
        "rsa-encrypt-to-rsa-sign",
        "ecc-sign-to-ecc-agreement",
        "hmac-to-symmetric",
        "ecc-sign-to-symmetric",
    ],
)
def test_update_alias_refuses_a_different_key_type(
    kms: Any, current: dict[str, str], target: dict[str, str]
) -> None:
    current_key = kms.create_key(**current)["KeyMetadata"]
    target_key = kms.create_key(**target)["KeyMetadata"]
    name = new_alias()
    kms.create_alias(AliasName=name, TargetKeyId=current_key["KeyId"])
    expect_error("ValidationException", kms.update_alias, AliasName=name, TargetKeyId=target_key["KeyId"])
    assert kms.describe_key(KeyId=name)["KeyMetadata"]["KeyId"] == current_key["KeyId"]


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (
            {"KeySpec": "RSA_2048", "KeyUsage": "SIGN_VERIFY"},
            {"KeySpec": "ECC_NIST_P256", "KeyUsage": "SIGN_VERIFY"},
        ),
        (
            {"KeySpec": "RSA_2048", "KeyUsage": "ENCRYPT_DECRYPT"},
            {"KeySpec": "RSA_3072", "KeyUsage": "ENCRYPT_DECRYPT"},
        ),
        (
            {"KeySpec": "HMAC_256", "KeyUsage": "GENERATE_VERIFY_MAC"},
            {"KeySpec": "HMAC_256", "KeyUsage": "GENERATE_VERIFY_MAC"},
        ),
    ],
    ids=["rsa-sign-to-ecc-sign", "rsa-encrypt-to-rsa-encrypt", "hmac-to-hmac"],
)
def test_update_alias_to_the_same_key_type(kms: Any, current: dict[str, str], target: dict[str, str]) -> None:
    current_key = kms.create_key(**current)["KeyMetadata"]
    target_key = kms.create_key(**target)["KeyMetadata"]
    name = new_alias()
    kms.create_alias(AliasName=name, TargetKeyId=current_key["KeyId"])
    kms.update_alias(AliasName=name, TargetKeyId=target_key["KeyId"])
    assert kms.describe_key(KeyId=name)["KeyMetadata"]["KeyId"] == target_key["KeyId"]


# -- DeleteAlias ---------------------------------------------------------------------------------


def test_delete_alias(kms: Any, key: dict[str, Any]) -> None:
    name = new_alias()
    kms.create_alias(AliasName=name, TargetKeyId=key["KeyId"])
    response = kms.delete_alias(AliasName=name)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert find_alias(kms, name) is None
    error = expect_error("NotFoundException", kms.describe_key, KeyId=name)
    assert error["Message"] == f"Alias {alias_arn(name)} is not found."
    expect_error("NotFoundException", kms.encrypt, KeyId=alias_arn(name), Plaintext=b"x")
    # The key itself is untouched, and the name can be used again.
    assert kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]["KeyState"] == "Enabled"
    kms.create_alias(AliasName=name, TargetKeyId=key["KeyId"])
    assert kms.describe_key(KeyId=name)["KeyMetadata"]["KeyId"] == key["KeyId"]


def test_delete_alias_errors(kms: Any) -> None:
    missing = new_alias()
    error = expect_error("NotFoundException", kms.delete_alias, AliasName=missing)
    assert error["Message"] == f"Alias {alias_arn(missing)} is not found."
    expect_error("ValidationException", kms.delete_alias, AliasName="no-prefix")
    expect_error("NotAuthorizedException", kms.delete_alias, AliasName="alias/aws/ebs")


def test_delete_alias_of_a_key_pending_deletion(kms: Any, key: dict[str, Any]) -> None:
    name = new_alias()
    kms.create_alias(AliasName=name, TargetKeyId=key["KeyId"])
    kms.schedule_key_deletion(KeyId=key["KeyId"], PendingWindowInDays=7)
    # The alias stays listed while the key waits for deletion, and can be deleted.
    listed = find_alias(kms, name)
    assert listed is not None
    assert listed["TargetKeyId"] == key["KeyId"]
    kms.delete_alias(AliasName=name)
    assert find_alias(kms, name) is None


# -- ListAliases ---------------------------------------------------------------------------------


def test_list_aliases_key_filter_and_paging(kms: Any, key: dict[str, Any]) -> None:
    names = sorted(new_alias() for _ in range(5))
    for name in names:
        kms.create_alias(AliasName=name, TargetKeyId=key["KeyId"])
    unrelated = new_alias()
    kms.create_alias(AliasName=unrelated, TargetKeyId=kms.create_key()["KeyMetadata"]["KeyId"])

    for ref in (key["KeyId"], key["Arn"]):
        first = kms.list_aliases(KeyId=ref, Limit=2)
        assert [a["AliasName"] for a in first["Aliases"]] == names[:2]
        assert first["Truncated"] is True
        second = kms.list_aliases(KeyId=ref, Limit=2, Marker=first["NextMarker"])
        assert [a["AliasName"] for a in second["Aliases"]] == names[2:4]
        third = kms.list_aliases(KeyId=ref, Limit=2, Marker=second["NextMarker"])
        assert [a["AliasName"] for a in third["Aliases"]] == names[4:]
        assert third["Truncated"] is False
        assert "NextMarker" not in third
        assert [a["AliasName"] for a in all_aliases(kms, KeyId=ref, Limit=1)] == names

    everything = [a["AliasName"] for a in all_aliases(kms, Limit=3)]
    assert len(everything) == len(set(everything))
    assert set(names) | {unrelated} <= set(everything)
    assert everything == [a["AliasName"] for a in all_aliases(kms)]


def test_list_aliases_of_a_key_without_aliases(kms: Any, key: dict[str, Any]) -> None:
    response = kms.list_aliases(KeyId=key["KeyId"])
    assert response["Aliases"] == []
    assert response["Truncated"] is False


def test_list_aliases_errors(server: KhoaServer, kms: Any) -> None:
    expect_error("NotFoundException", kms.list_aliases, KeyId=str(uuid.uuid4()))
    expect_error("NotFoundException", kms.list_aliases, KeyId="not-a-key")
    expect_error("InvalidMarkerException", kms.list_aliases, Marker="garbage")
    expect_error("ValidationException", kms.list_aliases, Limit=1001)
    expect_error("ValidationException", server.client("kms", validate=False).list_aliases, Limit=0)
