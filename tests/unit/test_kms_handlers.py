"""KMS handlers called as the pipeline calls them, without a server: ``build_service(kms)`` over
collaborators built from a migrated SQLite database, a barrier and the production authoriser.

Authorisation is the pipeline's step (``service.authorizer``); the few tests that need it (grants,
and the check itself) run it explicitly before the handler, as ``KhoaApp._prepare`` does.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from khoa.auth.principal import Principal
from khoa.protocol.context import RequestContext
from khoa.protocol.errors import AWSError
from khoa.services.base import Service
from khoa.services.kms import build_service
from khoa.services.kms.backend import KmsBackend
from khoa.services.kms.internal import InternalKms, via
from khoa.services.kms.key_rotation import rotate_due_keys
from khoa.services.kms.keys import destroy_due_keys
from khoa.storage import schema
from tests.support.handlers import ACCOUNT, OTHER_ACCOUNT, REGION, authorizer, barrier, context, database
from tests.support.interleave import before_first_write


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return database(tmp_path)


@pytest.fixture
def kms(engine: Engine) -> KmsBackend:
    return KmsBackend.create(engine, barrier(), authorizer(engine), cache_seconds=0)


@pytest.fixture
def service(kms: KmsBackend) -> Service:
    return build_service(kms)


def call(service: Service, operation: str, params: dict[str, Any], **facts: Any) -> dict[str, Any]:
    """Run ``operation``'s handler as the account root (by default) of the test account."""
    return service.handlers[operation](context("kms", operation, **facts), params)


def error(service: Service, operation: str, params: dict[str, Any], **facts: Any) -> str:
    """The AWS error code ``operation`` answers with."""
    with pytest.raises(AWSError) as excinfo:
        call(service, operation, params, **facts)
    return excinfo.value.code


def new_key(service: Service, **params: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = call(service, "CreateKey", params)["KeyMetadata"]
    return metadata


def iam_user(name: str = "alice") -> Principal:
    """An IAM user of the test account with no IAM policies at all."""
    return Principal(
        account_id=ACCOUNT,
        arn=f"arn:aws:iam::{ACCOUNT}:user/{name}",
        user_id="AIDAEXAMPLEUSER00001",
        kind="IAMUser",
        name=name,
        principal_id="AIDAEXAMPLEUSER00001",
    )


# -- keys ------------------------------------------------------------------------------------------


def test_create_describe_and_list_keys(service: Service) -> None:
    key = new_key(service, Description="first")
    assert key["KeyState"] == "Enabled" and key["Enabled"] is True
    assert key["KeySpec"] == "SYMMETRIC_DEFAULT" and key["KeyUsage"] == "ENCRYPT_DECRYPT"
    assert key["AWSAccountId"] == ACCOUNT
    assert key["Arn"] == f"arn:aws:kms:us-east-1:{ACCOUNT}:key/{key['KeyId']}"
    described = call(service, "DescribeKey", {"KeyId": key["Arn"]})["KeyMetadata"]
    assert described["KeyId"] == key["KeyId"] and described["Description"] == "first"
    second = new_key(service)
    listed = call(service, "ListKeys", {})
    assert [k["KeyId"] for k in listed["Keys"]] == [key["KeyId"], second["KeyId"]]
    first_page = call(service, "ListKeys", {"Limit": 1})
    assert first_page["Truncated"] is True and len(first_page["Keys"]) == 1
    rest = call(service, "ListKeys", {"Limit": 1, "Marker": first_page["NextMarker"]})
    assert [k["KeyId"] for k in rest["Keys"]] == [second["KeyId"]] and rest["Truncated"] is False
    # Keys live in one account and region.
    assert call(service, "ListKeys", {}, region="eu-west-1")["Keys"] == []
    assert call(service, "ListKeys", {}, account=OTHER_ACCOUNT)["Keys"] == []


def test_create_key_refuses_what_aws_refuses(service: Service) -> None:
    assert error(service, "CreateKey", {"KeySpec": "ECC_NIST_P256"}) == "ValidationException"
    assert (
        error(service, "CreateKey", {"KeySpec": "HMAC_256", "CustomerMasterKeySpec": "HMAC_256"})
        == "ValidationException"
    )
    assert (
        error(service, "CreateKey", {"KeySpec": "HMAC_256", "KeyUsage": "ENCRYPT_DECRYPT"})
        == "ValidationException"
    )
    assert error(service, "CreateKey", {"MultiRegion": True}) == "UnsupportedOperationException"
    assert error(service, "CreateKey", {"Policy": "{not json"}) == "MalformedPolicyDocumentException"
    assert error(service, "CreateKey", {"Tags": [{"TagKey": "aws:x", "TagValue": "1"}]}) == "TagException"
    assert call(service, "ListKeys", {})["Keys"] == []


def test_a_policy_that_locks_the_caller_out_is_refused_unless_bypassed(service: Service) -> None:
    policy = (
        '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": '
        f'{{"AWS": "arn:aws:iam::{ACCOUNT}:root"}}, "Action": "kms:Encrypt", "Resource": "*"}}]}}'
    )
    assert error(service, "CreateKey", {"Policy": policy}) == "MalformedPolicyDocumentException"
    key = new_key(service, Policy=policy, BypassPolicyLockoutSafetyCheck=True)
    assert call(service, "GetKeyPolicy", {"KeyId": key["KeyId"]})["Policy"] == policy


def test_unknown_and_malformed_key_ids_are_not_found(service: Service) -> None:
    assert (
        error(service, "DescribeKey", {"KeyId": "1234abcd-12ab-34cd-56ef-1234567890ab"})
        == "NotFoundException"
    )
    assert error(service, "DescribeKey", {"KeyId": "not-a-key"}) == "NotFoundException"
    assert error(service, "DescribeKey", {"KeyId": "alias/missing"}) == "NotFoundException"
    assert error(service, "ListKeys", {"Marker": "bm90LWEtbWFya2Vy"}) == "InvalidMarkerException"


def test_disable_schedule_and_cancel_deletion(service: Service) -> None:
    key_id = new_key(service)["KeyId"]
    call(service, "DisableKey", {"KeyId": key_id})
    assert error(service, "Encrypt", {"KeyId": key_id, "Plaintext": b"x"}) == "DisabledException"
    call(service, "EnableKey", {"KeyId": key_id})
    assert error(service, "ScheduleKeyDeletion", {"KeyId": key_id, "PendingWindowInDays": 3}) == (
        "ValidationException"
    )
    scheduled = call(service, "ScheduleKeyDeletion", {"KeyId": key_id, "PendingWindowInDays": 7})
    assert scheduled["KeyState"] == "PendingDeletion" and scheduled["PendingWindowInDays"] == 7
    assert error(service, "Encrypt", {"KeyId": key_id, "Plaintext": b"x"}) == "KMSInvalidStateException"
    assert error(service, "DisableKey", {"KeyId": key_id}) == "KMSInvalidStateException"
    call(service, "CancelKeyDeletion", {"KeyId": key_id})
    assert call(service, "DescribeKey", {"KeyId": key_id})["KeyMetadata"]["KeyState"] == "Disabled"
    assert error(service, "CancelKeyDeletion", {"KeyId": key_id}) == "KMSInvalidStateException"


# -- cryptography ----------------------------------------------------------------------------------


def test_encrypt_decrypt_and_re_encrypt(service: Service) -> None:
    first = new_key(service)["Arn"]
    second = new_key(service)["Arn"]
    context_ = {"purpose": "test"}
    blob = call(service, "Encrypt", {"KeyId": first, "Plaintext": b"hello", "EncryptionContext": context_})
    assert blob["KeyId"] == first and b"hello" not in blob["CiphertextBlob"]
    opened = call(
        service, "Decrypt", {"CiphertextBlob": blob["CiphertextBlob"], "EncryptionContext": context_}
    )
    assert opened["Plaintext"] == b"hello" and opened["KeyId"] == first
    assert (
        error(service, "Decrypt", {"CiphertextBlob": blob["CiphertextBlob"]}) == "InvalidCiphertextException"
    )
    assert (
        error(
            service,
            "Decrypt",
            {"CiphertextBlob": blob["CiphertextBlob"], "KeyId": second, "EncryptionContext": context_},
        )
        == "IncorrectKeyException"
    )
    assert error(service, "Decrypt", {"CiphertextBlob": b"garbage"}) == "InvalidCiphertextException"
    moved = call(
        service,
        "ReEncrypt",
        {
            "CiphertextBlob": blob["CiphertextBlob"],
            "SourceEncryptionContext": context_,
            "DestinationKeyId": second,
        },
    )
    assert moved["SourceKeyId"] == first and moved["KeyId"] == second
    assert call(service, "Decrypt", {"CiphertextBlob": moved["CiphertextBlob"]})["Plaintext"] == b"hello"
    # Another account cannot even name the blob's key: its id is not this account's.
    assert (
        error(service, "Decrypt", {"CiphertextBlob": blob["CiphertextBlob"]}, account=OTHER_ACCOUNT)
        == "InvalidCiphertextException"
    )


def test_data_keys(service: Service) -> None:
    key_id = new_key(service)["KeyId"]
    data_key = call(service, "GenerateDataKey", {"KeyId": key_id, "KeySpec": "AES_256"})
    assert len(data_key["Plaintext"]) == 32
    opened = call(service, "Decrypt", {"CiphertextBlob": data_key["CiphertextBlob"]})
    assert opened["Plaintext"] == data_key["Plaintext"]
    without = call(service, "GenerateDataKeyWithoutPlaintext", {"KeyId": key_id, "NumberOfBytes": 16})
    assert "Plaintext" not in without
    assert len(call(service, "Decrypt", {"CiphertextBlob": without["CiphertextBlob"]})["Plaintext"]) == 16
    assert error(service, "GenerateDataKey", {"KeyId": key_id}) == "ValidationException"
    assert (
        error(service, "GenerateDataKey", {"KeyId": key_id, "KeySpec": "AES_256", "NumberOfBytes": 32})
        == "ValidationException"
    )
    assert len(call(service, "GenerateRandom", {"NumberOfBytes": 24})["Plaintext"]) == 24


def test_macs_and_signatures(service: Service) -> None:
    mac_key = new_key(service, KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyId"]
    mac = call(service, "GenerateMac", {"KeyId": mac_key, "MacAlgorithm": "HMAC_SHA_256", "Message": b"m"})
    verified = call(
        service,
        "VerifyMac",
        {"KeyId": mac_key, "MacAlgorithm": "HMAC_SHA_256", "Message": b"m", "Mac": mac["Mac"]},
    )
    assert verified["MacValid"] is True
    assert (
        error(
            service,
            "VerifyMac",
            {"KeyId": mac_key, "MacAlgorithm": "HMAC_SHA_256", "Message": b"n", "Mac": mac["Mac"]},
        )
        == "KMSInvalidMacException"
    )
    assert error(service, "Encrypt", {"KeyId": mac_key, "Plaintext": b"x"}) == "InvalidKeyUsageException"
    signing = new_key(service, KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyId"]
    params = {"KeyId": signing, "SigningAlgorithm": "ECDSA_SHA_256", "Message": b"signed"}
    signature = call(service, "Sign", params)["Signature"]
    assert call(service, "Verify", {**params, "Signature": signature})["SignatureValid"] is True
    assert (
        error(service, "Verify", {**params, "Message": b"other", "Signature": signature})
        == "KMSInvalidSignatureException"
    )
    assert (
        error(service, "Sign", {**params, "SigningAlgorithm": "RSASSA_PSS_SHA_256"})
        == "InvalidKeyUsageException"
    )
    assert call(service, "GetPublicKey", {"KeyId": signing})["KeySpec"] == "ECC_NIST_P256"


# -- aliases and tags ------------------------------------------------------------------------------


def test_aliases(service: Service) -> None:
    key_id = new_key(service)["KeyId"]
    call(service, "CreateAlias", {"AliasName": "alias/app", "TargetKeyId": key_id})
    assert call(service, "DescribeKey", {"KeyId": "alias/app"})["KeyMetadata"]["KeyId"] == key_id
    blob = call(service, "Encrypt", {"KeyId": "alias/app", "Plaintext": b"x"})["CiphertextBlob"]
    assert call(service, "Decrypt", {"CiphertextBlob": blob})["KeyId"].endswith(key_id)
    listed = call(service, "ListAliases", {"KeyId": key_id})["Aliases"]
    assert [(a["AliasName"], a["TargetKeyId"]) for a in listed] == [("alias/app", key_id)]
    assert (
        error(service, "CreateAlias", {"AliasName": "alias/app", "TargetKeyId": key_id})
        == "AlreadyExistsException"
    )
    assert (
        error(service, "CreateAlias", {"AliasName": "alias/aws/x", "TargetKeyId": key_id})
        == "NotAuthorizedException"
    )
    assert error(service, "CreateAlias", {"AliasName": "app", "TargetKeyId": key_id}) == "ValidationException"
    assert (
        error(service, "CreateAlias", {"AliasName": "alias/b", "TargetKeyId": "alias/app"})
        == "ValidationException"
    )
    mac_key = new_key(service, KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyId"]
    assert (
        error(service, "UpdateAlias", {"AliasName": "alias/app", "TargetKeyId": mac_key})
        == "ValidationException"
    )
    call(service, "DeleteAlias", {"AliasName": "alias/app"})
    assert error(service, "DeleteAlias", {"AliasName": "alias/app"}) == "NotFoundException"
    assert error(service, "DescribeKey", {"KeyId": "alias/app"}) == "NotFoundException"


def test_tags(service: Service) -> None:
    key_id = new_key(service, Tags=[{"TagKey": "team", "TagValue": "a"}])["KeyId"]
    call(service, "TagResource", {"KeyId": key_id, "Tags": [{"TagKey": "env", "TagValue": "dev"}]})
    call(service, "TagResource", {"KeyId": key_id, "Tags": [{"TagKey": "team", "TagValue": "b"}]})
    tags = call(service, "ListResourceTags", {"KeyId": key_id})["Tags"]
    assert tags == [{"TagKey": "env", "TagValue": "dev"}, {"TagKey": "team", "TagValue": "b"}]
    call(service, "UntagResource", {"KeyId": key_id, "TagKeys": ["env"]})
    assert call(service, "ListResourceTags", {"KeyId": key_id})["Tags"] == [
        {"TagKey": "team", "TagValue": "b"}
    ]
    too_many = [{"TagKey": f"k{i}", "TagValue": ""} for i in range(51)]
    assert error(service, "TagResource", {"KeyId": key_id, "Tags": too_many}) == "TagException"
    assert error(
        service, "TagResource", {"KeyId": key_id, "Tags": [{"TagKey": "AWS:x", "TagValue": ""}]}
    ) == ("TagException")


# -- rotation ---------------------------------------------------------------------------------------


def test_rotation_on_demand_and_automatic(kms: KmsBackend, service: Service) -> None:
    key_id = new_key(service)["KeyId"]
    old_blob = call(service, "Encrypt", {"KeyId": key_id, "Plaintext": b"before"})["CiphertextBlob"]
    assert call(service, "GetKeyRotationStatus", {"KeyId": key_id})["KeyRotationEnabled"] is False
    call(service, "EnableKeyRotation", {"KeyId": key_id, "RotationPeriodInDays": 90})
    status = call(service, "GetKeyRotationStatus", {"KeyId": key_id})
    assert status["KeyRotationEnabled"] is True and status["RotationPeriodInDays"] == 90
    call(service, "RotateKeyOnDemand", {"KeyId": key_id})
    rotations = call(service, "ListKeyRotations", {"KeyId": key_id})["Rotations"]
    assert [r["RotationType"] for r in rotations] == ["ON_DEMAND"]
    # The job rotates keys whose period has passed; old material keeps decrypting.
    later = context("kms", "Encrypt").now + timedelta(days=91)
    assert rotate_due_keys(kms, later.timestamp()) == [key_id]
    rotations = call(service, "ListKeyRotations", {"KeyId": key_id})["Rotations"]
    assert [r["RotationType"] for r in rotations] == ["ON_DEMAND", "AUTOMATIC"]
    assert call(service, "Decrypt", {"CiphertextBlob": old_blob})["Plaintext"] == b"before"
    mac_key = new_key(service, KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyId"]
    assert error(service, "EnableKeyRotation", {"KeyId": mac_key}) == "UnsupportedOperationException"
    assert error(service, "EnableKeyRotation", {"KeyId": "alias/app"}) == "NotFoundException"


# -- authorisation and grants ----------------------------------------------------------------------


def authorized(service: Service, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    """The pipeline's two steps: the authorisation table, then the handler."""
    service.authorizer(ctx, params)
    return service.handlers[ctx.operation](ctx, params)


def test_the_table_applies_key_policies_and_iam_policies(service: Service) -> None:
    key_id = new_key(service)["KeyId"]
    params = {"KeyId": key_id, "Plaintext": b"x"}
    authorized(service, context("kms", "Encrypt"), params)
    # The default key policy delegates to IAM: a user without IAM policies is refused.
    with pytest.raises(AWSError) as excinfo:
        authorized(service, context("kms", "Encrypt", principal=iam_user()), params)
    assert excinfo.value.code == "AccessDeniedException"
    assert "kms:Encrypt" in str(excinfo.value)


def test_grants(service: Service) -> None:
    key_id = new_key(service)["KeyId"]
    grantee = iam_user("bob").arn
    params = {"KeyId": key_id, "GranteePrincipal": grantee, "Operations": ["Encrypt", "Decrypt"]}
    # The handler acts only on an authorisation that happened (fail closed).
    assert error(service, "CreateGrant", params) == "AccessDeniedException"
    grant = authorized(service, context("kms", "CreateGrant"), params)
    # The grant lets its grantee encrypt although no policy allows it.
    bob = iam_user("bob")
    authorized(service, context("kms", "Encrypt", principal=bob), {"KeyId": key_id, "Plaintext": b"x"})
    with pytest.raises(AWSError) as excinfo:
        authorized(
            service, context("kms", "GenerateDataKey", principal=bob), {"KeyId": key_id, "NumberOfBytes": 8}
        )
    assert excinfo.value.code == "AccessDeniedException"
    listed = call(service, "ListGrants", {"KeyId": key_id})["Grants"]
    assert [(g["GrantId"], g["GranteePrincipal"]) for g in listed] == [(grant["GrantId"], grantee)]
    bad_operations = {**params, "Operations": ["Sign"]}
    assert error(service, "CreateGrant", bad_operations) == "ValidationException"
    call(service, "RevokeGrant", {"KeyId": key_id, "GrantId": grant["GrantId"]})
    assert call(service, "ListGrants", {"KeyId": key_id})["Grants"] == []
    assert (
        error(service, "RevokeGrant", {"KeyId": key_id, "GrantId": grant["GrantId"]}) == "NotFoundException"
    )


# -- KMS as other services use it -------------------------------------------------------------------


def test_internal_envelope_encryption_with_the_managed_key(kms: KmsBackend, service: Service) -> None:
    internal = InternalKms(kms)
    ctx = context("secretsmanager", "CreateSecret")
    key = internal.encryption_key(ctx, None, "secretsmanager")
    assert key.key_manager == "AWS"
    assert internal.encryption_key(ctx, None, "secretsmanager").key_id == key.key_id  # created once
    assert (
        call(service, "DescribeKey", {"KeyId": "alias/aws/secretsmanager"})["KeyMetadata"]["KeyId"]
        == key.key_id
    )
    secret_context = {"SecretARN": "arn:aws:secretsmanager:us-east-1:111122223333:secret:s"}
    plaintext, blob = internal.generate_data_key(via(ctx, "secretsmanager"), key, secret_context)
    found, opened = internal.decrypt(ctx, blob, secret_context, "secretsmanager")
    assert (found.key_id, opened) == (key.key_id, plaintext)
    with pytest.raises(AWSError) as excinfo:
        internal.decrypt(ctx, blob, {"SecretARN": "another"}, "secretsmanager")
    assert excinfo.value.code == "InvalidCiphertextException"
    # The managed key's policy allows use only through the service it belongs to.
    with pytest.raises(AWSError) as excinfo:
        authorized(service, context("kms", "Encrypt"), {"KeyId": key.key_id, "Plaintext": b"x"})
    assert excinfo.value.code == "AccessDeniedException"


def test_internal_refuses_keys_other_services_cannot_use(kms: KmsBackend, service: Service) -> None:
    internal = InternalKms(kms)
    ctx = context("ssm", "PutParameter")
    signing = new_key(service, KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyId"]
    with pytest.raises(AWSError) as excinfo:
        internal.encryption_key(ctx, signing, "ssm")
    assert excinfo.value.code == "InvalidKeyUsageException"
    disabled = new_key(service)["KeyId"]
    call(service, "DisableKey", {"KeyId": disabled})
    with pytest.raises(AWSError) as excinfo:
        internal.encryption_key(ctx, disabled, "ssm")
    assert excinfo.value.code == "DisabledException"
    with pytest.raises(AWSError) as excinfo:
        internal.encryption_key(ctx, "alias/nothing", "ssm")
    assert excinfo.value.code == "NotFoundException"
    key = internal.encryption_key(ctx, None, "ssm")
    blob = internal.encrypt(via(ctx, "ssm"), key, b"value", {"PARAMETER_ARN": "p"})
    assert internal.decrypt(ctx, blob, {"PARAMETER_ARN": "p"}, "ssm")[1] == b"value"


# -- concurrent calls on one key --------------------------------------------------------------------
# Two calls interleaved in the order that breaks a read-then-write (tests.support.interleave): the
# inner call runs, whole, just before the outer call's first write statement, so the outer call has
# read the key before the inner call changed it. No threads and no timing.


@pytest.fixture
def on_each_database(store_engine: Engine) -> tuple[Engine, KmsBackend, Service]:
    """KMS over a database of its own, once on SQLite and once on PostgreSQL."""
    backend = KmsBackend.create(store_engine, barrier(), authorizer(store_engine), cache_seconds=0)
    return store_engine, backend, build_service(backend)


def test_concurrent_schedule_key_deletion_schedules_once(
    on_each_database: tuple[Engine, KmsBackend, Service],
) -> None:
    """AWS refuses ScheduleKeyDeletion on a key already pending deletion: of two concurrent calls the
    second is refused (both were acknowledged, with different dates, and one of them was stored); a
    DisableKey or EnableKey that read the key before a deletion was scheduled does not end it."""
    engine, _, service = on_each_database
    key_id = new_key(service)["KeyId"]

    def schedule(days: int) -> Callable[[], Any]:
        return lambda: call(service, "ScheduleKeyDeletion", {"KeyId": key_id, "PendingWindowInDays": days})

    with before_first_write(engine, schedule(7)) as first:
        refused = error(service, "ScheduleKeyDeletion", {"KeyId": key_id, "PendingWindowInDays": 30})
    assert refused == "KMSInvalidStateException"
    described = call(service, "DescribeKey", {"KeyId": key_id})["KeyMetadata"]
    assert described["KeyState"] == "PendingDeletion" and described["PendingDeletionWindowInDays"] == 7
    assert described["DeletionDate"] == first[0]["DeletionDate"]

    for operation in ("DisableKey", "EnableKey"):
        other = new_key(service)["KeyId"]
        if operation == "EnableKey":
            call(service, "DisableKey", {"KeyId": other})
        scheduled = lambda: call(service, "ScheduleKeyDeletion", {"KeyId": other})  # noqa: E731
        with before_first_write(engine, scheduled) as first:
            assert error(service, operation, {"KeyId": other}) == "KMSInvalidStateException"
        assert first[0]["KeyState"] == "PendingDeletion"
        assert call(service, "DescribeKey", {"KeyId": other})["KeyMetadata"]["KeyState"] == "PendingDeletion"


def test_concurrent_rotations_on_demand_each_make_a_version(
    on_each_database: tuple[Engine, KmsBackend, Service],
) -> None:
    """Concurrent RotateKeyOnDemand calls answered 500 (both numbered their version the same): each
    now makes its own version, numbered after the other's, and the on-demand limit holds."""
    engine, kms, service = on_each_database
    key_id = new_key(service)["KeyId"]
    rotate = lambda: call(service, "RotateKeyOnDemand", {"KeyId": key_id})  # noqa: E731
    with before_first_write(engine, rotate) as inner:
        outer = rotate()
    assert inner[0] == {"KeyId": outer["KeyId"]}
    versions = kms.store.keys.versions(key_id)
    assert [v.seq for v in versions] == [1, 2, 3]
    assert [v.rotation_type for v in versions] == [None, "ON_DEMAND", "ON_DEMAND"]
    described = call(service, "DescribeKey", {"KeyId": key_id})["KeyMetadata"]
    assert described["CurrentKeyMaterialId"] == versions[-1].version_id

    # The limit is counted inside the rotation's transaction: the last rotation it allows, raced by
    # another, leaves exactly the limit.
    from khoa.services.kms.key_rotation import MAX_ON_DEMAND_ROTATIONS

    for _ in range(MAX_ON_DEMAND_ROTATIONS - 3):
        rotate()
    with before_first_write(engine, rotate) as inner:
        assert error(service, "RotateKeyOnDemand", {"KeyId": key_id}) == "LimitExceededException"
    assert inner[0] == {"KeyId": outer["KeyId"]}
    on_demand = [v for v in kms.store.keys.versions(key_id) if v.rotation_type == "ON_DEMAND"]
    assert len(on_demand) == MAX_ON_DEMAND_ROTATIONS
    # The rotation job rotates a key still due when it writes (its conditions hold on both databases).
    call(service, "EnableKeyRotation", {"KeyId": key_id, "RotationPeriodInDays": 90})
    later = (context("kms", "RotateKeyOnDemand").now + timedelta(days=91)).timestamp()
    assert rotate_due_keys(kms, later) == [key_id]
    assert kms.store.keys.versions(key_id)[-1].rotation_type == "AUTOMATIC"


def test_the_deletion_job_keeps_a_key_whose_deletion_was_cancelled(
    on_each_database: tuple[Engine, KmsBackend, Service],
) -> None:
    """The job that ends deletion windows read a key as due; a CancelKeyDeletion acknowledged before
    the job's delete keeps the key (it was destroyed, though the caller had heard it was not)."""
    engine, kms, service = on_each_database
    key_id = new_key(service)["KeyId"]
    call(service, "ScheduleKeyDeletion", {"KeyId": key_id, "PendingWindowInDays": 7})
    later = (context("kms", "ScheduleKeyDeletion").now + timedelta(days=8)).timestamp()
    cancel = lambda: call(service, "CancelKeyDeletion", {"KeyId": key_id})  # noqa: E731
    with before_first_write(engine, cancel) as cancelled:
        assert destroy_due_keys(kms, later) == []
    assert cancelled[0] == {"KeyId": call(service, "DescribeKey", {"KeyId": key_id})["KeyMetadata"]["Arn"]}
    assert call(service, "DescribeKey", {"KeyId": key_id})["KeyMetadata"]["KeyState"] == "Disabled"
    # A deletion still due when the job deletes is carried out.
    call(service, "ScheduleKeyDeletion", {"KeyId": key_id, "PendingWindowInDays": 7})
    assert destroy_due_keys(kms, later) == [key_id]
    assert error(service, "DescribeKey", {"KeyId": key_id}) == "NotFoundException"


def test_create_grant_retries_with_a_name_make_one_grant(engine: Engine, service: Service) -> None:
    """A grant's Name makes CreateGrant retries idempotent (AWS): a retry that ran while the first
    call was being written (after the first had looked for an earlier grant of that name) answers
    with the same grant, and the key has one grant. Other parameters under the same name still make
    another grant. (SQLite only: on PostgreSQL the first call locks the key's row before its insert,
    so the retry would wait for it, in this one thread, for ever.)"""
    key_id = new_key(service)["KeyId"]
    params = {
        "KeyId": key_id,
        "GranteePrincipal": iam_user("bob").arn,
        "Operations": ["Encrypt", "Decrypt"],
        "Name": "app-retry",
    }
    create = lambda: authorized(service, context("kms", "CreateGrant"), params)  # noqa: E731
    with before_first_write(engine, create) as retry:
        first = create()
    assert retry[0]["GrantId"] == first["GrantId"]
    with engine.connect() as conn:
        count = (
            select(func.count()).select_from(schema.kms_grants).where(schema.kms_grants.c.key_id == key_id)
        )
        assert conn.execute(count).scalar_one() == 1
    assert create()["GrantId"] == first["GrantId"]  # a later retry, found before anything is written
    other = authorized(service, context("kms", "CreateGrant"), {**params, "Operations": ["Encrypt"]})
    assert other["GrantId"] != first["GrantId"]
    assert len(call(service, "ListGrants", {"KeyId": key_id})["Grants"]) == 2


def test_concurrent_tag_resource_keeps_the_tag_quota(
    on_each_database: tuple[Engine, KmsBackend, Service],
) -> None:
    """Two TagResource calls of 30 new tags each on one key: the second counts the first's (it left
    a key with 60 tags, past the quota of 50) and is refused whole."""
    engine, _, service = on_each_database
    key_id = new_key(service)["KeyId"]

    def tags(prefix: str) -> list[dict[str, str]]:
        return [{"TagKey": f"{prefix}{i}", "TagValue": "v"} for i in range(30)]

    first = lambda: call(service, "TagResource", {"KeyId": key_id, "Tags": tags("a")})  # noqa: E731
    with before_first_write(engine, first) as inner:
        refused = error(service, "TagResource", {"KeyId": key_id, "Tags": tags("b")})
    assert inner == [{}] and refused == "TagException"
    listed = call(service, "ListResourceTags", {"KeyId": key_id, "Limit": 50})["Tags"]
    assert sorted(t["TagKey"] for t in listed) == sorted(t["TagKey"] for t in tags("a"))


# -- the kept AES-GCM ciphers ------------------------------------------------------------------------


def test_a_kept_cipher_is_the_material_s_and_goes_with_it(kms: KmsBackend, service: Service) -> None:
    """The cipher kept for a key version decrypts what the version encrypted, is made once, and is
    forgotten whenever the opened material is: material dropped (DeleteImportedKeyMaterial) or a
    destroyed key leaves no cipher behind to decrypt with."""
    key_id = new_key(service)["KeyId"]
    blob = call(service, "Encrypt", {"KeyId": key_id, "Plaintext": b"kept"})["CiphertextBlob"]
    version_id = _current_version(kms, key_id)
    cipher = kms.store.keys.cipher(key_id, version_id)
    assert cipher is not None and kms.store.keys.cipher(key_id, version_id) is cipher
    assert call(service, "Decrypt", {"CiphertextBlob": blob})["Plaintext"] == b"kept"
    assert kms.store.keys.cipher(key_id, "0" * 64) is None  # no such version: no cipher

    assert kms.store.keys.drop_imported_material(key_id)  # (as DeleteImportedKeyMaterial stores it)
    assert kms.store.keys.cipher(key_id, version_id) is None
    assert kms.store.keys.material(key_id, version_id) is None

    other = new_key(service)["KeyId"]
    other_version = _current_version(kms, other)
    assert kms.store.keys.cipher(other, other_version) is not None
    assert kms.store.keys.destroy(other)
    assert kms.store.keys.cipher(other, other_version) is None


def _current_version(kms: KmsBackend, key_id: str) -> str:
    record = kms.store.keys.get(ACCOUNT, REGION, key_id)
    assert record is not None and record.current_version_id is not None
    return record.current_version_id
