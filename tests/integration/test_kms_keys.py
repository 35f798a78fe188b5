"""Key lifecycle through boto3 against a real server: CreateKey for every key spec, DescribeKey,
ListKeys, UpdateKeyDescription, EnableKey/DisableKey, ScheduleKeyDeletion/CancelKeyDeletion, key
policies at creation, and how keys are named (key id, key ARN, alias name, alias ARN).

Expected behaviour follows the AWS KMS API reference; error codes and HTTP statuses are asserted
exactly.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support.errors import expect_error
from tests.support.server import ACCOUNT_ID, REGION, KhoaServer

RSA_SIGNING = [
    "RSASSA_PKCS1_V1_5_SHA_256",
    "RSASSA_PKCS1_V1_5_SHA_384",
    "RSASSA_PKCS1_V1_5_SHA_512",
    "RSASSA_PSS_SHA_256",
    "RSASSA_PSS_SHA_384",
    "RSASSA_PSS_SHA_512",
]
RSA_ENCRYPTION = ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"]
ALGORITHM_FIELDS = ("EncryptionAlgorithms", "SigningAlgorithms", "MacAlgorithms", "KeyAgreementAlgorithms")

# (KeySpec, KeyUsage, the algorithm lists DescribeKey must report) for every spec Khoa offers.
KEY_TYPES: list[tuple[str, str, dict[str, list[str]]]] = [
    ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT", {"EncryptionAlgorithms": ["SYMMETRIC_DEFAULT"]}),
    ("RSA_2048", "ENCRYPT_DECRYPT", {"EncryptionAlgorithms": RSA_ENCRYPTION}),
    ("RSA_3072", "ENCRYPT_DECRYPT", {"EncryptionAlgorithms": RSA_ENCRYPTION}),
    ("RSA_4096", "ENCRYPT_DECRYPT", {"EncryptionAlgorithms": RSA_ENCRYPTION}),
    ("RSA_2048", "SIGN_VERIFY", {"SigningAlgorithms": RSA_SIGNING}),
    ("RSA_3072", "SIGN_VERIFY", {"SigningAlgorithms": RSA_SIGNING}),
    ("RSA_4096", "SIGN_VERIFY", {"SigningAlgorithms": RSA_SIGNING}),
    ("ECC_NIST_P256", "SIGN_VERIFY", {"SigningAlgorithms": ["ECDSA_SHA_256"]}),
    ("ECC_NIST_P384", "SIGN_VERIFY", {"SigningAlgorithms": ["ECDSA_SHA_384"]}),
    ("ECC_NIST_P521", "SIGN_VERIFY", {"SigningAlgorithms": ["ECDSA_SHA_512"]}),
    ("ECC_SECG_P256K1", "SIGN_VERIFY", {"SigningAlgorithms": ["ECDSA_SHA_256"]}),
    ("ECC_NIST_P256", "KEY_AGREEMENT", {"KeyAgreementAlgorithms": ["ECDH"]}),
    ("ECC_NIST_P384", "KEY_AGREEMENT", {"KeyAgreementAlgorithms": ["ECDH"]}),
    ("ECC_NIST_P521", "KEY_AGREEMENT", {"KeyAgreementAlgorithms": ["ECDH"]}),
    ("HMAC_224", "GENERATE_VERIFY_MAC", {"MacAlgorithms": ["HMAC_SHA_224"]}),
    ("HMAC_256", "GENERATE_VERIFY_MAC", {"MacAlgorithms": ["HMAC_SHA_256"]}),
    ("HMAC_384", "GENERATE_VERIFY_MAC", {"MacAlgorithms": ["HMAC_SHA_384"]}),
    ("HMAC_512", "GENERATE_VERIFY_MAC", {"MacAlgorithms": ["HMAC_SHA_512"]}),
]


def key_arn(key_id: str, region: str = REGION) -> str:
    return f"arn:aws:kms:{region}:{ACCOUNT_ID}:key/{key_id}"


def alias_name() -> str:
    return f"alias/keys-test-{uuid.uuid4().hex[:12]}"


# -- CreateKey and DescribeKey -------------------------------------------------------------------


def test_create_key_defaults(kms: Any) -> None:
    before = datetime.now(UTC)
    response = kms.create_key()
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    meta = response["KeyMetadata"]
    key_id = meta["KeyId"]
    assert str(uuid.UUID(key_id)) == key_id
    assert meta["Arn"] == key_arn(key_id)
    assert meta["AWSAccountId"] == ACCOUNT_ID
    assert meta["Enabled"] is True
    assert meta["KeyState"] == "Enabled"
    assert meta["KeyUsage"] == "ENCRYPT_DECRYPT"
    assert meta["KeySpec"] == meta["CustomerMasterKeySpec"] == "SYMMETRIC_DEFAULT"
    assert meta["EncryptionAlgorithms"] == ["SYMMETRIC_DEFAULT"]
    assert meta["Origin"] == "AWS_KMS"
    assert meta["KeyManager"] == "CUSTOMER"
    assert meta["Description"] == ""
    assert meta["MultiRegion"] is False
    assert isinstance(meta["CreationDate"], datetime)
    # The session server runs on a test clock that starts at the wall clock and only moves forward.
    assert meta["CreationDate"] >= before - timedelta(seconds=5)
    for absent in ("DeletionDate", "PendingDeletionWindowInDays", "ValidTo", "ExpirationModel"):
        assert absent not in meta
    for absent in ("SigningAlgorithms", "MacAlgorithms", "KeyAgreementAlgorithms"):
        assert absent not in meta


@pytest.mark.parametrize(
    ("spec", "usage", "algorithms"),
    KEY_TYPES,
    ids=[f"{spec}-{usage}" for spec, usage, _ in KEY_TYPES],
)
def test_create_key_every_spec(kms: Any, spec: str, usage: str, algorithms: dict[str, list[str]]) -> None:
    created = kms.create_key(KeySpec=spec, KeyUsage=usage, Description=f"{spec} {usage}")["KeyMetadata"]
    assert created["KeySpec"] == spec
    assert created["CustomerMasterKeySpec"] == spec
    assert created["KeyUsage"] == usage
    assert created["KeyState"] == "Enabled"
    assert created["Enabled"] is True
    assert created["Origin"] == "AWS_KMS"
    assert created["Description"] == f"{spec} {usage}"
    for field in ALGORITHM_FIELDS:
        if field in algorithms:
            assert created[field] == algorithms[field], field
        else:
            assert field not in created, field
    # Only symmetric encryption keys name their current key material.
    if spec == "SYMMETRIC_DEFAULT":
        assert len(created["CurrentKeyMaterialId"]) == 64
        int(created["CurrentKeyMaterialId"], 16)
    else:
        assert "CurrentKeyMaterialId" not in created
    described = kms.describe_key(KeyId=created["KeyId"])["KeyMetadata"]
    assert described == created


def test_create_key_with_deprecated_customer_master_key_spec(kms: Any) -> None:
    meta = kms.create_key(CustomerMasterKeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    assert meta["KeySpec"] == meta["CustomerMasterKeySpec"] == "ECC_NIST_P256"
    assert meta["SigningAlgorithms"] == ["ECDSA_SHA_256"]
    expect_error(
        "ValidationException",
        kms.create_key,
        KeySpec="ECC_NIST_P256",
        CustomerMasterKeySpec="ECC_NIST_P256",
        KeyUsage="SIGN_VERIFY",
    )


@pytest.mark.parametrize(
    ("spec", "usage"),
    [
        ("SYMMETRIC_DEFAULT", "SIGN_VERIFY"),
        ("SYMMETRIC_DEFAULT", "GENERATE_VERIFY_MAC"),
        ("SYMMETRIC_DEFAULT", "KEY_AGREEMENT"),
        ("RSA_2048", "GENERATE_VERIFY_MAC"),
        ("RSA_2048", "KEY_AGREEMENT"),
        ("ECC_NIST_P256", "ENCRYPT_DECRYPT"),
        ("ECC_NIST_P384", "GENERATE_VERIFY_MAC"),
        ("ECC_SECG_P256K1", "KEY_AGREEMENT"),
        ("ECC_SECG_P256K1", "ENCRYPT_DECRYPT"),
        ("HMAC_256", "ENCRYPT_DECRYPT"),
        ("HMAC_512", "SIGN_VERIFY"),
    ],
)
def test_create_key_incompatible_usage(kms: Any, spec: str, usage: str) -> None:
    expect_error("ValidationException", kms.create_key, KeySpec=spec, KeyUsage=usage)


@pytest.mark.parametrize("spec", ["RSA_2048", "ECC_NIST_P256", "ECC_SECG_P256K1", "HMAC_256"])
def test_create_key_usage_required_except_for_symmetric(kms: Any, spec: str) -> None:
    error = expect_error("ValidationException", kms.create_key, KeySpec=spec)
    assert error["Message"] == (
        "You must specify a KeyUsage value for all KMS keys except for symmetric encryption keys."
    )


@pytest.mark.parametrize(
    ("member", "value", "path"),
    [
        ("KeySpec", "RSA_1024", "keySpec"),
        ("KeyUsage", "WRAP_UNWRAP", "keyUsage"),
        ("Origin", "HSM", "origin"),
    ],
)
def test_create_key_enum_values_are_validated(kms: Any, member: str, value: str, path: str) -> None:
    error = expect_error("ValidationException", kms.create_key, **{member: value})
    assert (
        f"Value '{value}' at '{path}' failed to satisfy constraint: Member must satisfy enum value set"
        in (error["Message"])
    )


def test_create_key_external_origin_is_pending_import(kms: Any) -> None:
    meta = kms.create_key(Origin="EXTERNAL", Description="byok")["KeyMetadata"]
    assert meta["Origin"] == "EXTERNAL"
    assert meta["KeyState"] == "PendingImport"
    assert meta["Enabled"] is False
    assert meta["KeySpec"] == "SYMMETRIC_DEFAULT"
    assert meta["EncryptionAlgorithms"] == ["SYMMETRIC_DEFAULT"]
    # As in AWS: no expiration model and no key material until material is imported.
    assert "ExpirationModel" not in meta
    assert "CurrentKeyMaterialId" not in meta
    assert kms.describe_key(KeyId=meta["KeyId"])["KeyMetadata"] == meta

    error = expect_error("KMSInvalidStateException", kms.encrypt, KeyId=meta["KeyId"], Plaintext=b"x")
    assert error["Message"] == f"{meta['Arn']} is pending import."
    expect_error("KMSInvalidStateException", kms.generate_data_key, KeyId=meta["KeyId"], KeySpec="AES_256")
    expect_error("KMSInvalidStateException", kms.enable_key, KeyId=meta["KeyId"])
    expect_error("KMSInvalidStateException", kms.disable_key, KeyId=meta["KeyId"])

    # A key still waiting for its material can be scheduled for deletion; cancelling brings it
    # back to PendingImport (it has nothing to be Disabled with).
    kms.schedule_key_deletion(KeyId=meta["KeyId"], PendingWindowInDays=7)
    assert kms.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]["KeyState"] == "PendingDeletion"
    kms.cancel_key_deletion(KeyId=meta["KeyId"])
    assert kms.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]["KeyState"] == "PendingImport"


def test_create_key_external_asymmetric(kms: Any) -> None:
    meta = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY", Origin="EXTERNAL")["KeyMetadata"]
    assert meta["KeyState"] == "PendingImport"
    assert meta["SigningAlgorithms"] == ["ECDSA_SHA_256"]
    expect_error("KMSInvalidStateException", kms.get_public_key, KeyId=meta["KeyId"])
    expect_error(
        "KMSInvalidStateException",
        kms.sign,
        KeyId=meta["KeyId"],
        Message=b"m",
        SigningAlgorithm="ECDSA_SHA_256",
    )


def test_create_key_with_tags(kms: Any) -> None:
    tags = [{"TagKey": "team", "TagValue": "payments"}, {"TagKey": "env", "TagValue": ""}]
    meta = kms.create_key(Tags=tags)["KeyMetadata"]
    listed = kms.list_resource_tags(KeyId=meta["KeyId"])["Tags"]
    assert sorted(listed, key=lambda t: t["TagKey"]) == sorted(tags, key=lambda t: t["TagKey"])


@pytest.mark.parametrize("tag_key", ["aws:reserved", "AWS:Reserved"])
def test_create_key_reserved_tag_prefix(kms: Any, tag_key: str) -> None:
    expect_error("TagException", kms.create_key, Tags=[{"TagKey": tag_key, "TagValue": "v"}])


def test_create_key_description_and_update(kms: Any) -> None:
    meta = kms.create_key(Description="first")["KeyMetadata"]
    assert meta["Description"] == "first"
    assert (
        kms.update_key_description(KeyId=meta["KeyId"], Description="second")["ResponseMetadata"][
            "HTTPStatusCode"
        ]
        == 200
    )
    assert kms.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]["Description"] == "second"
    kms.update_key_description(KeyId=meta["Arn"], Description="")
    assert kms.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]["Description"] == ""
    # A disabled key's description can still change.
    kms.disable_key(KeyId=meta["KeyId"])
    kms.update_key_description(KeyId=meta["KeyId"], Description="disabled")
    assert kms.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]["Description"] == "disabled"


def test_update_key_description_errors(kms: Any) -> None:
    meta = kms.create_key()["KeyMetadata"]
    alias = alias_name()
    kms.create_alias(AliasName=alias, TargetKeyId=meta["KeyId"])
    # UpdateKeyDescription takes a key id or key ARN only.
    expect_error("NotFoundException", kms.update_key_description, KeyId=alias, Description="d")
    expect_error("NotFoundException", kms.update_key_description, KeyId=str(uuid.uuid4()), Description="d")
    expect_error(
        "ValidationException", kms.update_key_description, KeyId=meta["KeyId"], Description="d" * 8193
    )
    kms.schedule_key_deletion(KeyId=meta["KeyId"], PendingWindowInDays=7)
    expect_error("KMSInvalidStateException", kms.update_key_description, KeyId=meta["KeyId"], Description="d")


# -- key policies at creation --------------------------------------------------------------------

DEFAULT_POLICY_TEXT = (
    "{\n"
    '  "Version" : "2012-10-17",\n'
    '  "Id" : "key-default-1",\n'
    '  "Statement" : [ {\n'
    '    "Sid" : "Enable IAM User Permissions",\n'
    '    "Effect" : "Allow",\n'
    '    "Principal" : {\n'
    f'      "AWS" : "arn:aws:iam::{ACCOUNT_ID}:root"\n'
    "    },\n"
    '    "Action" : "kms:*",\n'
    '    "Resource" : "*"\n'
    "  } ]\n"
    "}"
)


def test_default_key_policy_as_aws_writes_it(kms: Any) -> None:
    meta = kms.create_key()["KeyMetadata"]
    policy = kms.get_key_policy(KeyId=meta["KeyId"], PolicyName="default")["Policy"]
    assert policy == DEFAULT_POLICY_TEXT
    assert json.loads(policy)["Statement"][0]["Principal"] == {"AWS": f"arn:aws:iam::{ACCOUNT_ID}:root"}
    assert kms.list_key_policies(KeyId=meta["KeyId"])["PolicyNames"] == ["default"]


def test_create_key_with_policy_keeps_it_verbatim(kms: Any) -> None:
    policy = json.dumps(
        {
            "Version": "2012-10-17",
            "Id": "custom-policy",
            "Statement": [
                {
                    "Sid": "Root",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_ID}:root"},
                    "Action": "kms:*",
                    "Resource": "*",
                }
            ],
        },
        indent=4,
    )
    meta = kms.create_key(Policy=policy)["KeyMetadata"]
    assert kms.get_key_policy(KeyId=meta["KeyId"])["Policy"] == policy


@pytest.mark.parametrize(
    "policy",
    [
        "this is not json",
        "[]",
        '{"Version": "2012-10-17"}',
        '{"Version": "2012-10-17", "Statement": []}',
        '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]}',
        '{"Version": "2012-10-17", "Statement": [{"Effect": "Maybe", "Principal": "*", "Action": "kms:*",'
        ' "Resource": "*"}]}',
        '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*", "Resource": "*"}]}',
        '{"Version": "2099-01-01", "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "kms:*",'
        ' "Resource": "*"}]}',
    ],
    ids=[
        "not-json",
        "array",
        "no-statement",
        "empty-statement",
        "no-principal",
        "bad-effect",
        "no-action",
        "bad-version",
    ],
)
def test_create_key_malformed_policy(kms: Any, policy: str) -> None:
    expect_error("MalformedPolicyDocumentException", kms.create_key, Policy=policy)


# -- naming keys ---------------------------------------------------------------------------------


def test_describe_key_by_every_identifier(kms: Any) -> None:
    meta = kms.create_key(Description="named")["KeyMetadata"]
    alias = alias_name()
    kms.create_alias(AliasName=alias, TargetKeyId=meta["KeyId"])
    alias_arn = f"arn:aws:kms:{REGION}:{ACCOUNT_ID}:{alias}"
    for ref in (meta["KeyId"], meta["Arn"], alias, alias_arn):
        assert kms.describe_key(KeyId=ref)["KeyMetadata"] == meta, ref


@pytest.mark.parametrize(
    "ref",
    [
        "not-a-key",
        "134f2428cec14b25a1ae9048164dba47",
        "alias/does-not-exist-anywhere",
        f"arn:aws:kms:{REGION}:{ACCOUNT_ID}:alias/does-not-exist-anywhere",
        f"arn:aws:kms:{REGION}:{ACCOUNT_ID}:key/not-a-uuid",
        f"arn:aws:kms:{REGION}:{ACCOUNT_ID}:something/else",
    ],
)
def test_describe_key_bad_identifiers(kms: Any, ref: str) -> None:
    expect_error("NotFoundException", kms.describe_key, KeyId=ref)


def test_describe_key_unknown_key_id(kms: Any) -> None:
    missing = str(uuid.uuid4())
    error = expect_error("NotFoundException", kms.describe_key, KeyId=missing)
    assert error["Message"] == f"Key '{key_arn(missing)}' does not exist"
    error = expect_error("NotFoundException", kms.describe_key, KeyId=key_arn(missing))
    assert error["Message"] == f"Key '{key_arn(missing)}' does not exist"
    error = expect_error("NotFoundException", kms.describe_key, KeyId="not-a-key")
    assert error["Message"] == "Invalid keyId 'not-a-key'"


def test_key_is_only_visible_in_its_region(server: KhoaServer, kms: Any) -> None:
    meta = kms.create_key()["KeyMetadata"]
    other = server.client("kms", region="eu-west-1")
    expect_error("NotFoundException", other.describe_key, KeyId=meta["KeyId"])
    expect_error("NotFoundException", other.describe_key, KeyId=meta["Arn"])
    expect_error("NotFoundException", other.encrypt, KeyId=meta["Arn"], Plaintext=b"x")
    # A key ARN naming another region is not found from this one either.
    elsewhere = other.create_key()["KeyMetadata"]
    assert elsewhere["Arn"] == key_arn(elsewhere["KeyId"], "eu-west-1")
    expect_error("NotFoundException", kms.describe_key, KeyId=elsewhere["Arn"])
    assert elsewhere["KeyId"] not in list_all_key_ids(kms)


# -- ListKeys ------------------------------------------------------------------------------------


def list_all_key_ids(kms: Any, limit: int | None = None) -> list[str]:
    ids: list[str] = []
    kwargs: dict[str, Any] = {"Limit": limit} if limit else {}
    while True:
        page = kms.list_keys(**kwargs)
        for entry in page["Keys"]:
            assert set(entry) == {"KeyId", "KeyArn"}
            assert entry["KeyArn"] == key_arn(entry["KeyId"])
        ids.extend(entry["KeyId"] for entry in page["Keys"])
        if limit:
            assert len(page["Keys"]) <= limit
        if not page["Truncated"]:
            assert "NextMarker" not in page
            return ids
        assert page["NextMarker"]
        kwargs["Marker"] = page["NextMarker"]


def test_list_keys_paging(kms: Any) -> None:
    created = {kms.create_key()["KeyMetadata"]["KeyId"] for _ in range(5)}
    paged = list_all_key_ids(kms, limit=2)
    assert len(paged) == len(set(paged)), "a key appeared on two pages"
    assert created <= set(paged)
    assert set(paged) == set(list_all_key_ids(kms))

    first = kms.list_keys(Limit=1)
    assert len(first["Keys"]) == 1
    assert first["Truncated"] is True
    second = kms.list_keys(Limit=1, Marker=first["NextMarker"])
    assert second["Keys"] != first["Keys"]


def test_list_keys_limit_and_marker_validation(server: KhoaServer, kms: Any) -> None:
    raw = server.client("kms", validate=False)
    expect_error("ValidationException", raw.list_keys, Limit=0)
    expect_error("ValidationException", kms.list_keys, Limit=1001)
    assert len(kms.list_keys(Limit=1000)["Keys"]) >= 1
    expect_error("InvalidMarkerException", kms.list_keys, Marker="not-a-marker")


# -- EnableKey / DisableKey ----------------------------------------------------------------------


def test_disable_and_enable_key(kms: Any) -> None:
    meta = kms.create_key()["KeyMetadata"]
    blob = kms.encrypt(KeyId=meta["KeyId"], Plaintext=b"before")["CiphertextBlob"]

    assert kms.disable_key(KeyId=meta["KeyId"])["ResponseMetadata"]["HTTPStatusCode"] == 200
    described = kms.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]
    assert described["KeyState"] == "Disabled"
    assert described["Enabled"] is False
    kms.disable_key(KeyId=meta["Arn"])  # disabling twice is fine

    error = expect_error("DisabledException", kms.encrypt, KeyId=meta["KeyId"], Plaintext=b"x")
    assert error["Message"] == f"{meta['Arn']} is disabled."
    expect_error("DisabledException", kms.decrypt, CiphertextBlob=blob)
    expect_error("DisabledException", kms.decrypt, CiphertextBlob=blob, KeyId=meta["KeyId"])
    expect_error("DisabledException", kms.generate_data_key, KeyId=meta["KeyId"], NumberOfBytes=32)
    expect_error(
        "DisabledException", kms.generate_data_key_without_plaintext, KeyId=meta["KeyId"], KeySpec="AES_128"
    )
    expect_error(
        "DisabledException", kms.generate_data_key_pair, KeyId=meta["KeyId"], KeyPairSpec="ECC_NIST_P256"
    )
    expect_error("DisabledException", kms.re_encrypt, CiphertextBlob=blob, DestinationKeyId=meta["KeyId"])

    kms.enable_key(KeyId=meta["Arn"])
    kms.enable_key(KeyId=meta["KeyId"])  # enabling twice is fine
    described = kms.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]
    assert described["KeyState"] == "Enabled"
    assert described["Enabled"] is True
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"before"


def test_disabled_asymmetric_and_hmac_keys(kms: Any) -> None:
    signing = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    mac = kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]
    agreement = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="KEY_AGREEMENT")["KeyMetadata"]
    peer = kms.get_public_key(KeyId=agreement["KeyId"])["PublicKey"]
    for meta in (signing, mac, agreement):
        kms.disable_key(KeyId=meta["KeyId"])
    expect_error(
        "DisabledException", kms.sign, KeyId=signing["KeyId"], Message=b"m", SigningAlgorithm="ECDSA_SHA_256"
    )
    expect_error("DisabledException", kms.get_public_key, KeyId=signing["KeyId"])
    expect_error(
        "DisabledException", kms.generate_mac, KeyId=mac["KeyId"], Message=b"m", MacAlgorithm="HMAC_SHA_256"
    )
    expect_error(
        "DisabledException",
        kms.derive_shared_secret,
        KeyId=agreement["KeyId"],
        KeyAgreementAlgorithm="ECDH",
        PublicKey=peer,
    )


@pytest.mark.parametrize(
    "operation", ["enable_key", "disable_key", "schedule_key_deletion", "cancel_key_deletion"]
)
def test_key_management_takes_key_ids_only(kms: Any, operation: str) -> None:
    meta = kms.create_key()["KeyMetadata"]
    alias = alias_name()
    kms.create_alias(AliasName=alias, TargetKeyId=meta["KeyId"])
    call = getattr(kms, operation)
    expect_error("NotFoundException", call, KeyId=alias)
    expect_error("NotFoundException", call, KeyId=f"arn:aws:kms:{REGION}:{ACCOUNT_ID}:{alias}")
    expect_error("NotFoundException", call, KeyId=str(uuid.uuid4()))
    expect_error("NotFoundException", call, KeyId="nonsense")
    assert kms.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]["KeyState"] == "Enabled"


# -- ScheduleKeyDeletion / CancelKeyDeletion -----------------------------------------------------


def test_schedule_key_deletion_default_window(kms: Any) -> None:
    meta = kms.create_key()["KeyMetadata"]
    response = kms.schedule_key_deletion(KeyId=meta["KeyId"])
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert response["KeyId"] == meta["Arn"]
    assert response["KeyState"] == "PendingDeletion"
    assert response["PendingWindowInDays"] == 30
    window = response["DeletionDate"] - meta["CreationDate"]
    assert timedelta(days=30) <= window < timedelta(days=30, minutes=5)

    described = kms.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]
    assert described["KeyState"] == "PendingDeletion"
    assert described["Enabled"] is False
    assert described["DeletionDate"] == response["DeletionDate"]
    assert described["PendingDeletionWindowInDays"] == 30


@pytest.mark.parametrize("days", [7, 30])
def test_schedule_key_deletion_window_bounds(kms: Any, days: int) -> None:
    meta = kms.create_key()["KeyMetadata"]
    response = kms.schedule_key_deletion(KeyId=meta["Arn"], PendingWindowInDays=days)
    assert response["PendingWindowInDays"] == days
    window = response["DeletionDate"] - meta["CreationDate"]
    assert timedelta(days=days) <= window < timedelta(days=days, minutes=5)


@pytest.mark.parametrize("days", [1, 6, 31, 365])
def test_schedule_key_deletion_window_out_of_range(kms: Any, days: int) -> None:
    meta = kms.create_key()["KeyMetadata"]
    error = expect_error(
        "ValidationException", kms.schedule_key_deletion, KeyId=meta["KeyId"], PendingWindowInDays=days
    )
    assert "pendingWindowInDays" in error["Message"]
    assert kms.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]["KeyState"] == "Enabled"


@pytest.mark.parametrize("days", [0, -1, 366])
def test_schedule_key_deletion_window_outside_the_model(server: KhoaServer, kms: Any, days: int) -> None:
    meta = kms.create_key()["KeyMetadata"]
    raw = server.client("kms", validate=False)
    expect_error(
        "ValidationException", raw.schedule_key_deletion, KeyId=meta["KeyId"], PendingWindowInDays=days
    )


def test_key_pending_deletion_refuses_use(kms: Any) -> None:
    meta = kms.create_key()["KeyMetadata"]
    blob = kms.encrypt(KeyId=meta["KeyId"], Plaintext=b"kept")["CiphertextBlob"]
    kms.schedule_key_deletion(KeyId=meta["KeyId"], PendingWindowInDays=7)

    error = expect_error("KMSInvalidStateException", kms.encrypt, KeyId=meta["KeyId"], Plaintext=b"x")
    assert error["Message"] == f"{meta['Arn']} is pending deletion."
    expect_error("KMSInvalidStateException", kms.decrypt, CiphertextBlob=blob)
    expect_error("KMSInvalidStateException", kms.generate_data_key, KeyId=meta["KeyId"], KeySpec="AES_256")
    expect_error(
        "KMSInvalidStateException", kms.re_encrypt, CiphertextBlob=blob, DestinationKeyId=meta["KeyId"]
    )
    expect_error("KMSInvalidStateException", kms.enable_key, KeyId=meta["KeyId"])
    expect_error("KMSInvalidStateException", kms.disable_key, KeyId=meta["KeyId"])
    expect_error("KMSInvalidStateException", kms.schedule_key_deletion, KeyId=meta["KeyId"])
    expect_error(
        "KMSInvalidStateException", kms.create_alias, AliasName=alias_name(), TargetKeyId=meta["KeyId"]
    )
    # Reading it is still allowed.
    assert kms.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]["KeyState"] == "PendingDeletion"
    assert meta["KeyId"] in list_all_key_ids(kms)

    cancelled = kms.cancel_key_deletion(KeyId=meta["Arn"])
    assert cancelled["KeyId"] == meta["Arn"]
    described = kms.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]
    assert described["KeyState"] == "Disabled"
    assert described["Enabled"] is False
    assert "DeletionDate" not in described
    assert "PendingDeletionWindowInDays" not in described
    expect_error("DisabledException", kms.decrypt, CiphertextBlob=blob)
    kms.enable_key(KeyId=meta["KeyId"])
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"kept"


def test_asymmetric_key_pending_deletion(kms: Any) -> None:
    meta = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    kms.schedule_key_deletion(KeyId=meta["KeyId"], PendingWindowInDays=7)
    expect_error("KMSInvalidStateException", kms.get_public_key, KeyId=meta["KeyId"])
    expect_error(
        "KMSInvalidStateException",
        kms.sign,
        KeyId=meta["KeyId"],
        Message=b"m",
        SigningAlgorithm="ECDSA_SHA_256",
    )


def test_cancel_key_deletion_errors(kms: Any) -> None:
    meta = kms.create_key()["KeyMetadata"]
    error = expect_error("KMSInvalidStateException", kms.cancel_key_deletion, KeyId=meta["KeyId"])
    assert meta["Arn"] in error["Message"]
    expect_error("NotFoundException", kms.cancel_key_deletion, KeyId=str(uuid.uuid4()))
    kms.disable_key(KeyId=meta["KeyId"])
    expect_error("KMSInvalidStateException", kms.cancel_key_deletion, KeyId=meta["KeyId"])
    # A disabled key can be scheduled for deletion and comes back disabled.
    kms.schedule_key_deletion(KeyId=meta["KeyId"], PendingWindowInDays=7)
    kms.cancel_key_deletion(KeyId=meta["KeyId"])
    assert kms.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]["KeyState"] == "Disabled"


def test_key_is_destroyed_when_the_window_ends(fresh_server: KhoaServer) -> None:
    fresh_server.start()
    kms = fresh_server.client("kms")
    doomed = kms.create_key()["KeyMetadata"]
    kept = kms.create_key()["KeyMetadata"]
    kms.schedule_key_deletion(KeyId=doomed["KeyId"], PendingWindowInDays=7)

    fresh_server.advance_clock(timedelta(days=6).total_seconds())
    fresh_server.run_jobs()
    assert kms.describe_key(KeyId=doomed["KeyId"])["KeyMetadata"]["KeyState"] == "PendingDeletion"

    fresh_server.advance_clock(timedelta(days=1, hours=1).total_seconds())
    fresh_server.run_jobs()
    expect_error("NotFoundException", kms.describe_key, KeyId=doomed["KeyId"])
    expect_error("NotFoundException", kms.cancel_key_deletion, KeyId=doomed["KeyId"])
    ids = list_all_key_ids(kms)
    assert doomed["KeyId"] not in ids
    assert kept["KeyId"] in ids
    assert kms.describe_key(KeyId=kept["KeyId"])["KeyMetadata"]["KeyState"] == "Enabled"


def test_get_key_last_usage_follows_the_audit_trail(kms) -> None:  # type: ignore[no-untyped-def]
    key = kms.create_key(Description="usage")["KeyMetadata"]
    unused = kms.get_key_last_usage(KeyId=key["KeyId"])
    assert "KeyLastUsage" not in unused
    assert unused["KeyCreationDate"] == unused["TrackingStartDate"]
    kms.encrypt(KeyId=key["KeyId"], Plaintext=b"x")
    used = kms.get_key_last_usage(KeyId=key["Arn"])
    assert used["KeyLastUsage"]["Operation"] == "Encrypt"
    assert used["KeyLastUsage"]["CloudTrailEventId"]
    assert used["KeyLastUsage"]["KmsRequestId"]
