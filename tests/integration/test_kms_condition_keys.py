"""KMS condition keys through boto3: every key AWS defines for the operations Khoa serves is in the
request context, so a conditional Deny on it stops the request (and changes nothing), a request it
does not match still succeeds, and a parameter with a default has its key when the request omits
it (conditions-kms: "works even when the parameter doesn't appear in the request"). Also: an SCP
on aws:ResourceTag or kms:ResourceAliases stops a member account's root user.

IAM users of the shared server for the policies; one private server for the organization (an
organization is installation-wide, so it must not meet the shared server's other tests)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.support.iam import allow, deny
from tests.support.identity import ROOT_ARN, Caller, create_account, new_user
from tests.support.server import KhoaServer

SCP = "SERVICE_CONTROL_POLICY"


def denied(call: Any, /, **kwargs: Any) -> str:
    """Call, expect AccessDeniedException; its message."""
    with pytest.raises(ClientError) as caught:
        call(**kwargs)
    error = caught.value.response["Error"]
    assert error["Code"] == "AccessDeniedException", error
    return str(error.get("Message", ""))


def kms_user(server: KhoaServer, iam: Any, *statements: dict[str, Any]) -> Any:
    """The KMS client of a new IAM user with exactly ``statements`` (the default key policy delegates
    to the account's IAM policies)."""
    return new_user(server, iam, *statements).client("kms")


def allowed_all_but(server: KhoaServer, iam: Any, *denials: dict[str, Any]) -> Any:
    return kms_user(server, iam, allow("kms:*"), *denials)


def key_count(kms: Any) -> int:
    return sum(len(page["Keys"]) for page in kms.get_paginator("list_keys").paginate())


def state(kms: Any, key_id: str) -> str:
    return str(kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"])


def new_key(kms: Any, **kwargs: Any) -> str:
    return str(kms.create_key(**kwargs)["KeyMetadata"]["KeyId"])


# -- keys of request parameters -----------------------------------------------------------------


def test_bypass_policy_lockout_safety_check(server: KhoaServer, kms: Any, iam: Any) -> None:
    key = new_key(kms)
    policy = kms.get_key_policy(KeyId=key, PolicyName="default")["Policy"]
    bypass = {"Bool": {"kms:BypassPolicyLockoutSafetyCheck": "true"}}
    user = allowed_all_but(server, iam, deny(["kms:PutKeyPolicy", "kms:CreateKey"], Condition=bypass))
    looser = json.dumps({**json.loads(policy), "Id": "changed"})

    denied(
        user.put_key_policy,
        KeyId=key,
        PolicyName="default",
        Policy=looser,
        BypassPolicyLockoutSafetyCheck=True,
    )
    assert kms.get_key_policy(KeyId=key, PolicyName="default")["Policy"] == policy
    before = key_count(kms)
    denied(user.create_key, Policy=policy, BypassPolicyLockoutSafetyCheck=True)
    assert key_count(kms) == before

    # Without the bypass (omitted, or false) the Deny does not match.
    user.put_key_policy(KeyId=key, PolicyName="default", Policy=looser)
    assert json.loads(kms.get_key_policy(KeyId=key, PolicyName="default")["Policy"])["Id"] == "changed"
    user.create_key(Policy=policy, BypassPolicyLockoutSafetyCheck=False)
    user.create_key()
    assert key_count(kms) == before + 2


def test_untag_resource_tag_keys(server: KhoaServer, kms: Any, iam: Any) -> None:
    key = new_key(kms, Tags=[{"TagKey": "Owner", "TagValue": "sec"}, {"TagKey": "Other", "TagValue": "x"}])
    condition = {"ForAnyValue:StringEquals": {"aws:TagKeys": ["Owner"]}}
    user = allowed_all_but(server, iam, deny("kms:UntagResource", Condition=condition))

    denied(user.untag_resource, KeyId=key, TagKeys=["Other", "Owner"])
    tags = {t["TagKey"]: t["TagValue"] for t in kms.list_resource_tags(KeyId=key)["Tags"]}
    assert tags == {"Owner": "sec", "Other": "x"}

    user.untag_resource(KeyId=key, TagKeys=["Other"])
    assert kms.list_resource_tags(KeyId=key)["Tags"] == [{"TagKey": "Owner", "TagValue": "sec"}]


def test_reencrypt_on_same_key(server: KhoaServer, kms: Any, iam: Any) -> None:
    key, other = new_key(kms), new_key(kms)
    blob = kms.encrypt(KeyId=key, Plaintext=b"secret")["CiphertextBlob"]
    same = {"Bool": {"kms:ReEncryptOnSameKey": "true"}}
    user = allowed_all_but(server, iam, deny("kms:ReEncrypt*", Condition=same))
    denied(user.re_encrypt, CiphertextBlob=blob, DestinationKeyId=key)
    denied(user.re_encrypt, CiphertextBlob=blob, SourceKeyId=key, DestinationKeyId=key)
    moved = user.re_encrypt(CiphertextBlob=blob, DestinationKeyId=other)
    assert moved["KeyId"].endswith(other)

    # The opposite rule: re-encryption only onto the same key.
    only_same = kms_user(
        server,
        iam,
        allow("kms:ReEncrypt*", Condition=same),
    )
    assert only_same.re_encrypt(CiphertextBlob=blob, DestinationKeyId=key)["KeyId"].endswith(key)
    denied(only_same.re_encrypt, CiphertextBlob=blob, DestinationKeyId=other)


def test_encryption_context_keys_differing_only_in_case_are_each_checked(
    server: KhoaServer, kms: Any, iam: Any
) -> None:
    """Context keys are case-sensitive and condition key names are not: {"app": "payroll", "APP": "x"}
    must not hide "payroll" from a Deny on kms:EncryptionContext:app."""
    key = new_key(kms)
    user = allowed_all_but(
        server, iam, deny("kms:Encrypt", Condition={"StringEquals": {"kms:EncryptionContext:app": "payroll"}})
    )
    denied(user.encrypt, KeyId=key, Plaintext=b"x", EncryptionContext={"app": "payroll"})
    denied(user.encrypt, KeyId=key, Plaintext=b"x", EncryptionContext={"app": "payroll", "APP": "x"})
    denied(user.encrypt, KeyId=key, Plaintext=b"x", EncryptionContext={"APP": "x", "app": "payroll"})
    user.encrypt(KeyId=key, Plaintext=b"x", EncryptionContext={"app": "ledger", "APP": "x"})


def test_data_key_pair_spec(server: KhoaServer, kms: Any, iam: Any) -> None:
    key = new_key(kms)
    rsa_pairs = {"StringEquals": {"kms:DataKeyPairSpec": "RSA_2048"}}
    user = allowed_all_but(server, iam, deny("kms:GenerateDataKeyPair*", Condition=rsa_pairs))
    denied(user.generate_data_key_pair, KeyId=key, KeyPairSpec="RSA_2048")
    denied(user.generate_data_key_pair_without_plaintext, KeyId=key, KeyPairSpec="RSA_2048")
    pair = user.generate_data_key_pair_without_plaintext(KeyId=key, KeyPairSpec="ECC_NIST_P256")
    assert pair["KeyPairSpec"] == "ECC_NIST_P256"


def test_message_type_and_its_default(server: KhoaServer, kms: Any, iam: Any) -> None:
    key = new_key(kms, KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")
    digest = b"0" * 32
    algorithm = "ECDSA_SHA_256"
    no_digests = allowed_all_but(
        server,
        iam,
        deny(["kms:Sign", "kms:Verify"], Condition={"StringEquals": {"kms:MessageType": "DIGEST"}}),
    )
    denied(no_digests.sign, KeyId=key, Message=digest, MessageType="DIGEST", SigningAlgorithm=algorithm)
    signature = no_digests.sign(KeyId=key, Message=b"message", SigningAlgorithm=algorithm)["Signature"]
    assert no_digests.verify(KeyId=key, Message=b"message", Signature=signature, SigningAlgorithm=algorithm)[
        "SignatureValid"
    ]

    # MessageType omitted is RAW: a Deny on RAW matches it.
    no_raw = allowed_all_but(
        server, iam, deny("kms:Sign", Condition={"StringEquals": {"kms:MessageType": "RAW"}})
    )
    denied(no_raw.sign, KeyId=key, Message=b"message", SigningAlgorithm=algorithm)
    no_raw.sign(KeyId=key, Message=digest, MessageType="DIGEST", SigningAlgorithm=algorithm)


def test_rotation_period_in_days_and_its_default(server: KhoaServer, kms: Any, iam: Any) -> None:
    key = new_key(kms)
    short = {"NumericLessThan": {"kms:RotationPeriodInDays": "180"}}
    user = allowed_all_but(server, iam, deny("kms:EnableKeyRotation", Condition=short))
    denied(user.enable_key_rotation, KeyId=key, RotationPeriodInDays=90)
    assert kms.get_key_rotation_status(KeyId=key)["KeyRotationEnabled"] is False
    user.enable_key_rotation(KeyId=key, RotationPeriodInDays=200)
    assert kms.get_key_rotation_status(KeyId=key)["RotationPeriodInDays"] == 200

    # Omitted, the period is AWS's default of 365 days.
    fresh = new_key(kms)
    long = {"NumericGreaterThan": {"kms:RotationPeriodInDays": "300"}}
    capped = allowed_all_but(server, iam, deny("kms:EnableKeyRotation", Condition=long))
    denied(capped.enable_key_rotation, KeyId=fresh)
    assert kms.get_key_rotation_status(KeyId=fresh)["KeyRotationEnabled"] is False
    capped.enable_key_rotation(KeyId=fresh, RotationPeriodInDays=180)
    assert kms.get_key_rotation_status(KeyId=fresh)["RotationPeriodInDays"] == 180


def test_schedule_key_deletion_pending_window_and_its_default(server: KhoaServer, kms: Any, iam: Any) -> None:
    key = new_key(kms)
    short = {"NumericLessThan": {"kms:ScheduleKeyDeletionPendingWindowInDays": "30"}}
    user = allowed_all_but(server, iam, deny("kms:ScheduleKeyDeletion", Condition=short))
    denied(user.schedule_key_deletion, KeyId=key, PendingWindowInDays=7)
    assert state(kms, key) == "Enabled"
    assert user.schedule_key_deletion(KeyId=key)["PendingWindowInDays"] == 30  # omitted: 30, not < 30
    kms.cancel_key_deletion(KeyId=key)

    # Omitted, the window is AWS's default of 30 days.
    exactly = {"NumericEquals": {"kms:ScheduleKeyDeletionPendingWindowInDays": "30"}}
    no_default = allowed_all_but(server, iam, deny("kms:ScheduleKeyDeletion", Condition=exactly))
    denied(no_default.schedule_key_deletion, KeyId=key)
    assert state(kms, key) == "Disabled"  # as CancelKeyDeletion left it, not PendingDeletion
    assert no_default.schedule_key_deletion(KeyId=key, PendingWindowInDays=20)["PendingWindowInDays"] == 20
    kms.cancel_key_deletion(KeyId=key)


def test_trailing_days_without_key_usage(server: KhoaServer, kms: Any, iam: Any) -> None:
    key = new_key(kms)  # never used: counted from its creation, today
    recent = {"NumericLessThanEquals": {"kms:TrailingDaysWithoutKeyUsage": "30"}}
    guarded = allowed_all_but(
        server, iam, deny(["kms:DisableKey", "kms:ScheduleKeyDeletion"], Condition=recent)
    )
    denied(guarded.disable_key, KeyId=key)
    denied(guarded.schedule_key_deletion, KeyId=key, PendingWindowInDays=30)
    assert state(kms, key) == "Enabled"

    idle = {"NumericGreaterThan": {"kms:TrailingDaysWithoutKeyUsage": "30"}}
    other = allowed_all_but(server, iam, deny(["kms:DisableKey", "kms:ScheduleKeyDeletion"], Condition=idle))
    other.disable_key(KeyId=key)
    assert state(kms, key) == "Disabled"


# -- importing key material ---------------------------------------------------------------------


def _wrap(public_der: bytes, material: bytes) -> bytes:
    public = serialization.load_der_public_key(public_der)
    assert isinstance(public, rsa.RSAPublicKey)
    sha256 = hashes.SHA256()
    return public.encrypt(material, padding.OAEP(mgf=padding.MGF1(sha256), algorithm=sha256, label=None))


def test_wrapping_algorithm_and_wrapping_key_spec(server: KhoaServer, kms: Any, iam: Any) -> None:
    key = new_key(kms, Origin="EXTERNAL")
    sha1 = {"StringEquals": {"kms:WrappingAlgorithm": "RSAES_OAEP_SHA_1"}}
    small = {"StringEquals": {"kms:WrappingKeySpec": "RSA_2048"}}
    user = allowed_all_but(
        server,
        iam,
        deny("kms:GetParametersForImport", Condition=sha1),
        deny("kms:GetParametersForImport", Condition=small),
    )
    denied(
        user.get_parameters_for_import,
        KeyId=key,
        WrappingAlgorithm="RSAES_OAEP_SHA_1",
        WrappingKeySpec="RSA_3072",
    )
    denied(
        user.get_parameters_for_import,
        KeyId=key,
        WrappingAlgorithm="RSAES_OAEP_SHA_256",
        WrappingKeySpec="RSA_2048",
    )
    got = user.get_parameters_for_import(
        KeyId=key, WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_3072"
    )
    assert got["ImportToken"]


def test_expiration_model_and_valid_to(server: KhoaServer, kms: Any, iam: Any) -> None:
    material = uuid.uuid4().bytes * 2
    now = datetime.now(UTC)
    limit = now + timedelta(days=30)
    user = allowed_all_but(
        server,
        iam,
        deny(
            "kms:ImportKeyMaterial",
            Condition={"StringEquals": {"kms:ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE"}},
        ),
        # kms:ValidTo is Unix time: Date operators (ISO 8601 here) and Numeric ones (epoch) both read it.
        deny("kms:ImportKeyMaterial", Condition={"DateGreaterThan": {"kms:ValidTo": limit.isoformat()}}),
        deny(
            "kms:ImportKeyMaterial",
            Condition={"NumericLessThan": {"kms:ValidTo": str(int(now.timestamp()) + 86400)}},
        ),
    )

    def attempt(key_id: str, **extra: Any) -> Any:
        params = user.get_parameters_for_import(
            KeyId=key_id, WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048"
        )
        return user.import_key_material(
            KeyId=key_id,
            ImportToken=params["ImportToken"],
            EncryptedKeyMaterial=_wrap(params["PublicKey"], material),
            **extra,
        )

    key = new_key(kms, Origin="EXTERNAL")
    denied(attempt, key_id=key, ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE")
    denied(attempt, key_id=key, ExpirationModel="KEY_MATERIAL_EXPIRES", ValidTo=now + timedelta(days=60))
    denied(attempt, key_id=key, ValidTo=now + timedelta(hours=2))
    assert state(kms, key) == "PendingImport"
    attempt(key, ValidTo=now + timedelta(days=10))
    assert state(kms, key) == "Enabled"
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["ExpirationModel"] == "KEY_MATERIAL_EXPIRES"


# -- keys of the key, and CreateKey's defaults --------------------------------------------------


def test_resource_aliases(server: KhoaServer, kms: Any, iam: Any) -> None:
    prefix = f"alias/restricted-{uuid.uuid4().hex[:8]}"
    key, plain = new_key(kms), new_key(kms)
    kms.create_alias(AliasName=f"{prefix}-prod", TargetKeyId=key)
    condition = {"ForAnyValue:StringLike": {"kms:ResourceAliases": f"{prefix}-*"}}
    user = allowed_all_but(server, iam, deny("kms:*", Condition=condition))

    # Whatever names the key in the request: the aliases are the key's.
    denied(user.encrypt, KeyId=key, Plaintext=b"x")
    denied(user.describe_key, KeyId=f"{prefix}-prod")
    denied(user.disable_key, KeyId=key)
    assert state(kms, key) == "Enabled"
    user.encrypt(KeyId=plain, Plaintext=b"x")

    # The key's aliases as they are now: a new alias restricts, a removed one no longer does.
    kms.create_alias(AliasName=f"{prefix}-other", TargetKeyId=plain)
    denied(user.encrypt, KeyId=plain, Plaintext=b"x")
    kms.delete_alias(AliasName=f"{prefix}-prod")
    kms.delete_alias(AliasName=f"{prefix}-other")
    user.encrypt(KeyId=key, Plaintext=b"x")
    user.disable_key(KeyId=key)
    assert state(kms, key) == "Disabled"


def test_condition_keys_written_with_json_escapes_stop_the_root(kms: Any) -> None:
    """Red-team policy finding 4: for the account root, the key's tags, aliases and days without use
    were built only when the key policy's stored text named them, so a Deny whose condition key is
    spelled with a JSON escape (the same key once decoded) never saw them and let the root through."""
    alias = f"alias/quarantine-{uuid.uuid4().hex[:8]}"
    guards = [
        ("kms:Encrypt", {"StringEquals": {"aws:ResourceTag/quarantine": "true"}}),
        ("kms:GenerateDataKey", {"ForAnyValue:StringLike": {"kms:ResourceAliases": "alias/quarantine-*"}}),
        ("kms:DisableKey", {"NumericLessThanEquals": {"kms:TrailingDaysWithoutKeyUsage": "30"}}),
    ]
    statements = [{"Effect": "Allow", "Principal": {"AWS": ROOT_ARN}, "Action": "kms:*", "Resource": "*"}]
    statements += [
        {"Effect": "Deny", "Principal": "*", "Action": action, "Resource": "*", "Condition": condition}
        for action, condition in guards
    ]
    text = json.dumps({"Version": "2012-10-17", "Statement": statements})
    for plain, escape in (
        ("ResourceTag", "Resource\\u0054ag"),
        ("Aliases", "\\u0041liases"),
        ("DaysW", "Days\\u0057"),
    ):
        text = text.replace(plain, escape)
    key = new_key(kms, Policy=text, Tags=[{"TagKey": "quarantine", "TagValue": "true"}])
    kms.create_alias(AliasName=alias, TargetKeyId=key)

    denied(kms.encrypt, KeyId=key, Plaintext=b"x")
    denied(kms.generate_data_key, KeyId=key, KeySpec="AES_256")
    denied(kms.disable_key, KeyId=key)
    assert state(kms, key) == "Enabled"


def test_create_key_defaults(server: KhoaServer, kms: Any, iam: Any) -> None:
    before = key_count(kms)
    symmetric = {"StringEquals": {"kms:KeySpec": "SYMMETRIC_DEFAULT"}}
    no_symmetric = allowed_all_but(server, iam, deny("kms:CreateKey", Condition=symmetric))
    denied(no_symmetric.create_key)
    denied(no_symmetric.create_key, KeySpec="SYMMETRIC_DEFAULT")
    assert key_count(kms) == before
    no_symmetric.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")

    for condition_key, value in (("kms:KeyUsage", "ENCRYPT_DECRYPT"), ("kms:KeyOrigin", "AWS_KMS")):
        refused = allowed_all_but(
            server, iam, deny("kms:CreateKey", Condition={"StringEquals": {condition_key: value}})
        )
        denied(refused.create_key)
    assert key_count(kms) == before + 1

    # An Allow conditioned on the defaults admits a plain create_key().
    defaults = {
        "StringEquals": {
            "kms:KeySpec": "SYMMETRIC_DEFAULT",
            "kms:KeyUsage": "ENCRYPT_DECRYPT",
            "kms:KeyOrigin": "AWS_KMS",
        },
        "Bool": {"kms:MultiRegion": "false"},
    }
    only_defaults = kms_user(server, iam, allow("kms:CreateKey", Condition=defaults))
    only_defaults.create_key()
    denied(only_defaults.create_key, Origin="EXTERNAL")
    denied(only_defaults.create_key, KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")
    assert key_count(kms) == before + 2


def test_deprecated_customer_master_key_spec_and_usage(server: KhoaServer, kms: Any, iam: Any) -> None:
    before = key_count(kms)
    rsa_keys = {"StringLike": {"kms:KeySpec": "RSA_*"}}
    user = allowed_all_but(server, iam, deny("kms:CreateKey", Condition=rsa_keys))
    # The deprecated CustomerMasterKeySpec parameter names the key spec as KeySpec does.
    denied(user.create_key, CustomerMasterKeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")
    assert key_count(kms) == before

    # AWS still evaluates the deprecated condition keys, as kms:KeySpec and kms:KeyUsage.
    key = new_key(kms)
    old_names = allowed_all_but(
        server,
        iam,
        deny("kms:CreateKey", Condition={"StringEquals": {"kms:CustomerMasterKeySpec": "SYMMETRIC_DEFAULT"}}),
        deny("kms:Encrypt", Condition={"StringEquals": {"kms:CustomerMasterKeyUsage": "ENCRYPT_DECRYPT"}}),
    )
    denied(old_names.create_key)
    denied(old_names.encrypt, KeyId=key, Plaintext=b"x")
    assert key_count(kms) == before + 1
    old_names.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")
    old_names.generate_data_key(KeyId=key, KeySpec="AES_256")


def test_encryption_algorithm_default(server: KhoaServer, kms: Any, iam: Any) -> None:
    key, other = new_key(kms), new_key(kms)
    blob = kms.encrypt(KeyId=key, Plaintext=b"secret")["CiphertextBlob"]
    symmetric = {"StringEquals": {"kms:EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}}
    user = allowed_all_but(
        server,
        iam,
        deny(["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey*", "kms:ReEncrypt*"], Condition=symmetric),
    )
    denied(user.encrypt, KeyId=key, Plaintext=b"x")
    denied(user.decrypt, CiphertextBlob=blob)
    denied(user.generate_data_key, KeyId=key, KeySpec="AES_256")
    denied(user.generate_data_key_without_plaintext, KeyId=key, NumberOfBytes=32)
    denied(user.generate_data_key_pair, KeyId=key, KeyPairSpec="ECC_NIST_P256")
    denied(user.re_encrypt, CiphertextBlob=blob, DestinationKeyId=other)
    user.describe_key(KeyId=key)

    # An Allow on the default admits requests that omit the algorithm.
    only_symmetric = kms_user(
        server,
        iam,
        allow(["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey", "kms:ReEncrypt*"], Condition=symmetric),
    )
    only_symmetric.encrypt(KeyId=key, Plaintext=b"x")
    assert only_symmetric.decrypt(CiphertextBlob=blob)["Plaintext"] == b"secret"
    only_symmetric.generate_data_key(KeyId=key, KeySpec="AES_256")
    only_symmetric.re_encrypt(CiphertextBlob=blob, DestinationKeyId=other)
    only_symmetric.re_encrypt(
        CiphertextBlob=blob,
        DestinationKeyId=other,
        SourceEncryptionAlgorithm="SYMMETRIC_DEFAULT",
        DestinationEncryptionAlgorithm="SYMMETRIC_DEFAULT",
    )


# -- SCPs govern a member account's root user ---------------------------------------------------


@pytest.fixture(scope="module")
def org_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KhoaServer]:
    instance = KhoaServer(Path(tmp_path_factory.mktemp("kms-org")) / "data").start()
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def member(org_server: KhoaServer) -> Caller:
    client = org_server.client("organizations")
    client.create_organization(FeatureSet="ALL")
    root = client.list_roots()["Roots"][0]
    client.enable_policy_type(RootId=root["Id"], PolicyType=SCP)
    return create_account(org_server)  # `khoa account create` joins it to the organization


def test_an_scp_on_resource_tags_and_aliases_stops_a_member_root(
    org_server: KhoaServer, member: Caller
) -> None:
    member_kms = member.client("kms")
    protected = new_key(member_kms, Tags=[{"TagKey": "Protected", "TagValue": "true"}])
    production = new_key(member_kms)
    member_kms.create_alias(AliasName="alias/prod-ledger", TargetKeyId=production)
    plain = new_key(member_kms, Tags=[{"TagKey": "Protected", "TagValue": "false"}])
    actions = ["kms:Encrypt", "kms:DisableKey", "kms:ScheduleKeyDeletion"]
    scp = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "*", "Resource": "*"},
                {
                    "Effect": "Deny",
                    "Action": actions,
                    "Resource": "*",
                    "Condition": {"StringEquals": {"aws:ResourceTag/Protected": "true"}},
                },
                {
                    "Effect": "Deny",
                    "Action": actions,
                    "Resource": "*",
                    "Condition": {"ForAnyValue:StringLike": {"kms:ResourceAliases": "alias/prod-*"}},
                },
            ],
        }
    )
    organizations = org_server.client("organizations")
    policy_id = organizations.create_policy(Name="protect", Description="", Type=SCP, Content=scp)["Policy"][
        "PolicySummary"
    ]["Id"]
    organizations.attach_policy(PolicyId=policy_id, TargetId=member.account_id)

    for key in (protected, production):
        message = denied(member_kms.encrypt, KeyId=key, Plaintext=b"x")
        assert f"arn:aws:iam::{member.account_id}:root" in message
        assert "service control policy" in message
        denied(member_kms.disable_key, KeyId=key)
        denied(member_kms.schedule_key_deletion, KeyId=key, PendingWindowInDays=7)
        assert state(member_kms, key) == "Enabled"
    member_kms.encrypt(KeyId=plain, Plaintext=b"x")
    member_kms.disable_key(KeyId=plain)

    # The management account's root, which SCPs never govern, keeps its keys' usual path.
    management_kms = org_server.client("kms")
    own = new_key(management_kms, Tags=[{"TagKey": "Protected", "TagValue": "true"}])
    management_kms.encrypt(KeyId=own, Plaintext=b"x")
    management_kms.disable_key(KeyId=own)

    organizations.detach_policy(PolicyId=policy_id, TargetId=member.account_id)
    member_kms.encrypt(KeyId=protected, Plaintext=b"x")
