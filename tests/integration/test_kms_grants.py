"""Grants through boto3: CreateGrant, ListGrants, ListRetirableGrants, RetireGrant, RevokeGrant, tokens."""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

import pytest

from tests.support.errors import error_code
from tests.support.iam import trust
from tests.support.server import ACCOUNT_ID

GRANTEE = f"arn:aws:iam::{ACCOUNT_ID}:role/khoa-grantee"
RETIREE = f"arn:aws:iam::{ACCOUNT_ID}:role/khoa-retiree"
OTHER_GRANTEE = f"arn:aws:iam::{ACCOUNT_ID}:user/someone-else"


def ensure_principal(iam: Any, arn: str) -> str:
    """Create the user or role ``arn`` names unless it exists: a grant may name only those that do."""
    kind, name = arn.rsplit(":", 1)[1].split("/", 1)
    create = (
        (lambda: iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust({"AWS": ACCOUNT_ID})))
        if kind == "role"
        else (lambda: iam.create_user(UserName=name))
    )
    with contextlib.suppress(iam.exceptions.EntityAlreadyExistsException):
        create()
    return arn


@pytest.fixture(autouse=True)
def principals(iam: Any) -> None:
    for arn in (GRANTEE, RETIREE, OTHER_GRANTEE):
        ensure_principal(iam, arn)


@pytest.fixture
def key(kms: Any) -> dict[str, Any]:
    return dict(kms.create_key(Description="grants")["KeyMetadata"])


def grants_of(kms: Any, key_id: str, **filters: Any) -> list[dict[str, Any]]:
    return list(kms.list_grants(KeyId=key_id, **filters)["Grants"])


def test_create_grant_and_list(kms: Any, key: dict[str, Any]) -> None:
    created = kms.create_grant(
        KeyId=key["KeyId"],
        GranteePrincipal=GRANTEE,
        RetiringPrincipal=RETIREE,
        Operations=["Encrypt", "Decrypt", "GenerateDataKey"],
        Constraints={"EncryptionContextSubset": {"app": "billing"}},
    )
    grant_id = created["GrantId"]
    assert len(grant_id) == 64 and int(grant_id, 16) >= 0
    assert created["GrantToken"]

    [grant] = grants_of(kms, key["KeyId"])
    assert grant["GrantId"] == grant_id
    assert grant["KeyId"] == key["Arn"]
    assert grant["GranteePrincipal"] == GRANTEE
    assert grant["RetiringPrincipal"] == RETIREE
    assert grant["IssuingAccount"] == f"arn:aws:iam::{ACCOUNT_ID}:root"
    assert set(grant["Operations"]) == {"Encrypt", "Decrypt", "GenerateDataKey"}
    assert grant["Constraints"] == {"EncryptionContextSubset": {"app": "billing"}}
    assert "Name" not in grant
    assert grant["CreationDate"].tzinfo is not None

    # The key ARN identifies the key as well as the key id.
    assert [g["GrantId"] for g in grants_of(kms, key["Arn"])] == [grant_id]


def test_encryption_context_equals_constraint(kms: Any, key: dict[str, Any]) -> None:
    kms.create_grant(
        KeyId=key["KeyId"],
        GranteePrincipal=GRANTEE,
        Operations=["Decrypt"],
        Constraints={"EncryptionContextEquals": {"tenant": "a", "purpose": "x"}},
    )
    [grant] = grants_of(kms, key["KeyId"])
    assert grant["Constraints"] == {"EncryptionContextEquals": {"tenant": "a", "purpose": "x"}}


def test_grant_name_makes_create_idempotent(kms: Any, key: dict[str, Any]) -> None:
    params = {
        "KeyId": key["KeyId"],
        "GranteePrincipal": GRANTEE,
        "Operations": ["Encrypt", "Decrypt"],
        "Name": "app-grant",
    }
    first = kms.create_grant(**params)
    again = kms.create_grant(**params)
    assert again["GrantId"] == first["GrantId"]
    # Every CreateGrant returns a fresh token; all of them work.
    assert again["GrantToken"] != first["GrantToken"]
    [grant] = grants_of(kms, key["KeyId"])
    assert grant["Name"] == "app-grant"

    # Same name, different parameters: a new grant.
    other = kms.create_grant(**{**params, "Operations": ["Encrypt"]})
    assert other["GrantId"] != first["GrantId"]
    # Retrying either request still finds its own grant, not a third one.
    assert kms.create_grant(**{**params, "Operations": ["Encrypt"]})["GrantId"] == other["GrantId"]
    assert kms.create_grant(**params)["GrantId"] == first["GrantId"]
    assert len(grants_of(kms, key["KeyId"])) == 2

    # Without a name every request makes a new grant.
    unnamed = {k: v for k, v in params.items() if k != "Name"}
    assert kms.create_grant(**unnamed)["GrantId"] != kms.create_grant(**unnamed)["GrantId"]
    assert len(grants_of(kms, key["KeyId"])) == 4


def test_list_grants_filters_and_paging(kms: Any, key: dict[str, Any]) -> None:
    other_grantee = OTHER_GRANTEE
    ids = [
        kms.create_grant(KeyId=key["KeyId"], GranteePrincipal=GRANTEE, Operations=["Encrypt"])["GrantId"]
        for _ in range(4)
    ]
    odd = kms.create_grant(KeyId=key["KeyId"], GranteePrincipal=other_grantee, Operations=["Decrypt"])

    assert [g["GrantId"] for g in grants_of(kms, key["KeyId"], GrantId=ids[2])] == [ids[2]]
    by_grantee = grants_of(kms, key["KeyId"], GranteePrincipal=other_grantee)
    assert [g["GrantId"] for g in by_grantee] == [odd["GrantId"]]
    assert len(grants_of(kms, key["KeyId"], GranteePrincipal=GRANTEE)) == 4

    seen: list[str] = []
    marker = None
    pages = 0
    while True:
        kwargs: dict[str, Any] = {"KeyId": key["KeyId"], "Limit": 2}
        if marker:
            kwargs["Marker"] = marker
        page = kms.list_grants(**kwargs)
        pages += 1
        assert len(page["Grants"]) <= 2
        seen.extend(g["GrantId"] for g in page["Grants"])
        if not page["Truncated"]:
            assert "NextMarker" not in page
            break
        marker = page["NextMarker"]
    assert pages == 3
    assert sorted(seen) == sorted([*ids, odd["GrantId"]])

    # The paginator boto3 ships works too.
    paginated = kms.get_paginator("list_grants").paginate(
        KeyId=key["KeyId"], PaginationConfig={"PageSize": 2}
    )
    assert sorted(g["GrantId"] for page in paginated for g in page["Grants"]) == sorted(seen)

    assert error_code(kms.list_grants, KeyId=key["KeyId"], Marker="not-a-marker") == "InvalidMarkerException"


def test_list_retirable_grants(kms: Any, iam: Any) -> None:
    retiree = ensure_principal(iam, f"arn:aws:iam::{ACCOUNT_ID}:role/retiree-{uuid.uuid4().hex[:8]}")
    first = kms.create_key()["KeyMetadata"]
    second = kms.create_key()["KeyMetadata"]
    g1 = kms.create_grant(
        KeyId=first["KeyId"], GranteePrincipal=GRANTEE, RetiringPrincipal=retiree, Operations=["Encrypt"]
    )
    g2 = kms.create_grant(
        KeyId=second["KeyId"], GranteePrincipal=GRANTEE, RetiringPrincipal=retiree, Operations=["Decrypt"]
    )
    kms.create_grant(KeyId=second["KeyId"], GranteePrincipal=GRANTEE, Operations=["Decrypt"])

    listed = kms.list_retirable_grants(RetiringPrincipal=retiree)
    assert listed["Truncated"] is False
    by_id = {g["GrantId"]: g for g in listed["Grants"]}
    assert set(by_id) == {g1["GrantId"], g2["GrantId"]}
    assert by_id[g1["GrantId"]]["KeyId"] == first["Arn"]
    assert by_id[g2["GrantId"]]["KeyId"] == second["Arn"]

    page = kms.list_retirable_grants(RetiringPrincipal=retiree, Limit=1)
    assert page["Truncated"] is True and len(page["Grants"]) == 1
    rest = kms.list_retirable_grants(RetiringPrincipal=retiree, Limit=1, Marker=page["NextMarker"])
    assert rest["Truncated"] is False
    assert {page["Grants"][0]["GrantId"], rest["Grants"][0]["GrantId"]} == set(by_id)


def test_retire_grant_by_token(kms: Any, key: dict[str, Any]) -> None:
    grant = kms.create_grant(
        KeyId=key["KeyId"], GranteePrincipal=GRANTEE, RetiringPrincipal=RETIREE, Operations=["Encrypt"]
    )
    kms.retire_grant(GrantToken=grant["GrantToken"])
    assert grants_of(kms, key["KeyId"]) == []
    assert error_code(kms.retire_grant, GrantToken=grant["GrantToken"]) == "NotFoundException"


def test_retire_grant_by_key_and_grant_id(kms: Any, key: dict[str, Any]) -> None:
    keep = kms.create_grant(KeyId=key["KeyId"], GranteePrincipal=GRANTEE, Operations=["Encrypt"])
    gone = kms.create_grant(KeyId=key["KeyId"], GranteePrincipal=GRANTEE, Operations=["Decrypt"])
    kms.retire_grant(KeyId=key["Arn"], GrantId=gone["GrantId"])
    assert [g["GrantId"] for g in grants_of(kms, key["KeyId"])] == [keep["GrantId"]]
    assert error_code(kms.retire_grant, KeyId=key["Arn"], GrantId=gone["GrantId"]) == "NotFoundException"
    # Neither a token nor a key and grant id.
    assert error_code(kms.retire_grant, GrantId=keep["GrantId"]) == "ValidationException"


def test_revoke_grant(kms: Any, key: dict[str, Any]) -> None:
    grant = kms.create_grant(KeyId=key["KeyId"], GranteePrincipal=GRANTEE, Operations=["Encrypt"])
    assert (
        error_code(kms.revoke_grant, KeyId=key["KeyId"], GrantId=grant["GrantId"], DryRun=True)
        == "DryRunOperationException"
    )
    assert len(grants_of(kms, key["KeyId"])) == 1
    kms.revoke_grant(KeyId=key["KeyId"], GrantId=grant["GrantId"])
    assert grants_of(kms, key["KeyId"]) == []
    assert error_code(kms.revoke_grant, KeyId=key["KeyId"], GrantId=grant["GrantId"]) == "NotFoundException"


def test_grant_on_another_key_is_not_found(kms: Any, key: dict[str, Any]) -> None:
    other = kms.create_key()["KeyMetadata"]
    grant = kms.create_grant(KeyId=key["KeyId"], GranteePrincipal=GRANTEE, Operations=["Encrypt"])
    assert error_code(kms.revoke_grant, KeyId=other["KeyId"], GrantId=grant["GrantId"]) == "NotFoundException"
    assert len(grants_of(kms, key["KeyId"])) == 1


def test_grant_tokens_accepted_by_crypto_operations(kms: Any, key: dict[str, Any]) -> None:
    grant = kms.create_grant(KeyId=key["KeyId"], GranteePrincipal=GRANTEE, Operations=["Encrypt", "Decrypt"])
    tokens = [grant["GrantToken"]]
    blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"granted", GrantTokens=tokens)["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob, GrantTokens=tokens)["Plaintext"] == b"granted"
    data_key = kms.generate_data_key(KeyId=key["KeyId"], KeySpec="AES_256", GrantTokens=tokens)
    assert len(data_key["Plaintext"]) == 32
    # A second grant token for the same grant (Name retry) works interchangeably.
    named = kms.create_grant(KeyId=key["KeyId"], GranteePrincipal=GRANTEE, Operations=["Decrypt"], Name="n")
    retry = kms.create_grant(KeyId=key["KeyId"], GranteePrincipal=GRANTEE, Operations=["Decrypt"], Name="n")
    assert kms.decrypt(CiphertextBlob=blob, GrantTokens=[named["GrantToken"], retry["GrantToken"]])


@pytest.mark.parametrize("token", ["garbage", "AAAA", "a" * 200, "khoa-grant-v1:xyz"])
def test_garbage_grant_token(kms: Any, key: dict[str, Any], token: str) -> None:
    code = error_code(kms.encrypt, KeyId=key["KeyId"], Plaintext=b"x", GrantTokens=[token])
    assert code == "InvalidGrantTokenException"
    blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"x")["CiphertextBlob"]
    assert error_code(kms.decrypt, CiphertextBlob=blob, GrantTokens=[token]) == "InvalidGrantTokenException"
    assert error_code(kms.retire_grant, GrantToken=token) == "InvalidGrantTokenException"
    assert (
        error_code(
            kms.create_grant,
            KeyId=key["KeyId"],
            GranteePrincipal=GRANTEE,
            Operations=["Encrypt"],
            GrantTokens=[token],
        )
        == "InvalidGrantTokenException"
    )


def test_create_grant_errors(kms: Any, key: dict[str, Any]) -> None:
    missing = str(uuid.uuid4())
    assert (
        error_code(kms.create_grant, KeyId=missing, GranteePrincipal=GRANTEE, Operations=["Encrypt"])
        == "NotFoundException"
    )
    assert (
        error_code(
            kms.create_grant,
            KeyId=key["KeyId"],
            GranteePrincipal=GRANTEE,
            Operations=["Encrypt"],
            DryRun=True,
        )
        == "DryRunOperationException"
    )
    assert grants_of(kms, key["KeyId"]) == []
    assert (
        error_code(kms.create_grant, KeyId=key["KeyId"], GranteePrincipal=GRANTEE, Operations=["Explode"])
        == "ValidationException"
    )
    kms.schedule_key_deletion(KeyId=key["KeyId"], PendingWindowInDays=7)
    assert (
        error_code(kms.create_grant, KeyId=key["KeyId"], GranteePrincipal=GRANTEE, Operations=["Encrypt"])
        == "KMSInvalidStateException"
    )


def test_grants_go_with_their_key(kms: Any) -> None:
    key = kms.create_key()["KeyMetadata"]
    kms.create_grant(KeyId=key["KeyId"], GranteePrincipal=GRANTEE, Operations=["Encrypt"])
    assert len(grants_of(kms, key["KeyId"])) == 1
    # Listing grants of a key pending deletion still works (AWS allows ListGrants in that state).
    kms.schedule_key_deletion(KeyId=key["KeyId"], PendingWindowInDays=7)
    assert len(grants_of(kms, key["KeyId"])) == 1


@pytest.mark.parametrize(
    ("create", "allowed", "refused"),
    [
        ({}, ["Encrypt", "GenerateDataKeyPair", "ReEncryptTo", "DescribeKey"], ["Sign", "GetPublicKey"]),
        (
            {"KeySpec": "RSA_2048", "KeyUsage": "ENCRYPT_DECRYPT"},
            ["Encrypt", "Decrypt", "GetPublicKey", "RetireGrant"],
            ["GenerateDataKey", "Sign"],
        ),
        (
            {"KeySpec": "ECC_NIST_P256", "KeyUsage": "SIGN_VERIFY"},
            ["Sign", "Verify", "GetPublicKey", "CreateGrant"],
            ["Decrypt", "GenerateMac"],
        ),
        (
            {"KeySpec": "HMAC_256", "KeyUsage": "GENERATE_VERIFY_MAC"},
            ["GenerateMac", "VerifyMac", "DescribeKey"],
            ["Encrypt", "GetPublicKey"],
        ),
    ],
    ids=["symmetric", "rsa-encrypt", "ecc-sign", "hmac"],
)
def test_grant_operations_must_fit_the_key(
    kms: Any, create: dict[str, str], allowed: list[str], refused: list[str]
) -> None:
    key = kms.create_key(**create)["KeyMetadata"]
    kms.create_grant(KeyId=key["KeyId"], GranteePrincipal=GRANTEE, Operations=allowed)
    for operation in refused:
        code = error_code(
            kms.create_grant, KeyId=key["KeyId"], GranteePrincipal=GRANTEE, Operations=[allowed[0], operation]
        )
        assert code == "ValidationException", operation
    assert len(grants_of(kms, key["KeyId"])) == 1


def test_encryption_context_constraints_need_a_symmetric_key(kms: Any) -> None:
    key = kms.create_key(KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]
    for constraint in ("EncryptionContextSubset", "EncryptionContextEquals"):
        code = error_code(
            kms.create_grant,
            KeyId=key["KeyId"],
            GranteePrincipal=GRANTEE,
            Operations=["Decrypt"],
            Constraints={constraint: {"a": "b"}},
        )
        assert code == "ValidationException"
    assert grants_of(kms, key["KeyId"]) == []
