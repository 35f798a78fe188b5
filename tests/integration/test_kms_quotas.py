"""KMS resource quotas, and grants that cost other tenants nothing, through boto3 against a real server.

AWS's resource quotas (KMS developer guide, "Resource quotas"), each refused beyond with
LimitExceededException: 100,000 customer managed keys per account and Region (AWS managed keys do not
count), 50 aliases per key, 50,000 grants per key, 10 custom key stores per account and Region. A
grant constraint holds at most 8 encryption context pairs of at most 384 characters (CreateGrant,
Constraints). The large quotas are reached by writing rows into the server's SQLite file before the
last call, so each test stays fast.

A caller holding many grants on a key (up to the quota) is decided correctly, and reading them does
not hold up the other requests of the worker (the red team's finding: each policy-denied Encrypt by
a grantee of 1,500 large grants froze the node for 12 s).
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.errors import error_code, error_response, refused
from tests.support.identity import ROOT_ARN, Caller, new_user
from tests.support.names import unique
from tests.support.server import ACCOUNT_ID, KhoaServer, fresh_region
from tests.support.xks import PATH, FakeXksProxy

# AWS's default quotas, as its documentation gives them.
GRANTS_PER_KEY = 50_000
ALIASES_PER_KEY = 50
CUSTOMER_KEYS_PER_REGION = 100_000
CUSTOM_KEY_STORES = 10
CONSTRAINT_PAIRS = 8
CONSTRAINT_CHARS = 384


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KhoaServer]:
    """A server of this module's own: the quotas are reached by writing many rows into its database."""
    instance = KhoaServer(tmp_path_factory.mktemp("kms-quotas") / "data").start()
    yield instance
    instance.stop()


def database(server: KhoaServer) -> sqlite3.Connection:
    return sqlite3.connect(server.data_dir / "khoa.db", timeout=30)


def insert_grants(server: KhoaServer, key_id: str, grantee: str, operations: list[str], count: int) -> None:
    """``count`` grants on the key for ``grantee``, each with its own encryption context constraint of
    the largest size CreateGrant accepts (none admits the contexts the tests send)."""
    filler = {f"k{i}": "v" * 40 for i in range(CONSTRAINT_PAIRS - 1)}
    now = time.time() - 60
    rows = [
        (
            secrets.token_hex(32),
            key_id,
            ACCOUNT_ID,
            None,
            grantee,
            None,
            json.dumps(sorted(operations)),
            json.dumps({"EncryptionContextSubset": {**filler, "n": str(i)}}, sort_keys=True),
            ROOT_ARN,
            now + i * 1e-6,
        )
        for i in range(count)
    ]
    with database(server) as db:
        db.executemany(
            "INSERT INTO kms_grants (grant_id, key_id, account_id, name, grantee_principal, "
            "retiring_principal, operations, constraints, issuing_account, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )


def grant_count(server: KhoaServer, key_id: str) -> int:
    with database(server) as db:
        return int(db.execute("SELECT count(*) FROM kms_grants WHERE key_id = ?", (key_id,)).fetchone()[0])


# -- grants -----------------------------------------------------------------------------------------


def test_grants_per_key_quota(server: KhoaServer, kms: Any, iam: Any) -> None:
    key = kms.create_key(Description="grant quota")["KeyMetadata"]
    grantee = new_user(server, iam).arn
    insert_grants(server, key["KeyId"], ROOT_ARN, ["Decrypt"], GRANTS_PER_KEY - 2)
    request = {"KeyId": key["KeyId"], "GranteePrincipal": grantee, "Operations": ["Decrypt"]}

    kms.create_grant(**request)
    last = kms.create_grant(**request, Name="the-last-one")  # the 50,000th
    assert grant_count(server, key["KeyId"]) == GRANTS_PER_KEY

    code, message = refused(kms.create_grant, **request)
    assert (code, message) == (
        "LimitExceededException",
        f"{key['Arn']} has reached the limit of {GRANTS_PER_KEY} grants per KMS key.",
    )
    assert error_response(kms.create_grant, **request)["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert grant_count(server, key["KeyId"]) == GRANTS_PER_KEY
    # A retry of a request that created a grant finds its grant; it creates nothing.
    assert kms.create_grant(**request, Name="the-last-one")["GrantId"] == last["GrantId"]

    # Revoking a grant makes room for one more; other keys are not affected.
    kms.revoke_grant(KeyId=key["KeyId"], GrantId=last["GrantId"])
    kms.create_grant(**request)
    assert error_code(kms.create_grant, **request) == "LimitExceededException"
    other = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.create_grant(**{**request, "KeyId": other})


def test_grant_constraint_size(server: KhoaServer, kms: Any, iam: Any) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    grantee = new_user(server, iam).arn
    widest = {f"key-{i}": "v" * CONSTRAINT_CHARS for i in range(CONSTRAINT_PAIRS - 1)}
    widest["k" * CONSTRAINT_CHARS] = "v"
    for member in ("EncryptionContextSubset", "EncryptionContextEquals"):

        def create(context: dict[str, str], member: str = member) -> Any:
            return kms.create_grant(
                KeyId=key_id, GranteePrincipal=grantee, Operations=["Decrypt"], Constraints={member: context}
            )

        create(widest)
        field = "encryptionContextSubset" if member.endswith("Subset") else "encryptionContextEquals"
        nine = {f"key-{i}": "v" for i in range(CONSTRAINT_PAIRS + 1)}
        code, message = refused(create, context=nine)
        assert code == "ValidationException"
        assert f"constraints.{field}" in message and f"at most {CONSTRAINT_PAIRS}" in message
        for context in ({"a": "v" * (CONSTRAINT_CHARS + 1)}, {"k" * (CONSTRAINT_CHARS + 1): "v"}):
            code, message = refused(create, context=context)
            assert code == "ValidationException"
            assert str(CONSTRAINT_CHARS) in message
    # A refused grant was never stored.
    assert len(kms.list_grants(KeyId=key_id)["Grants"]) == 2


def test_a_grantee_of_the_quotas_worth_of_grants_is_decided_by_the_one_that_admits(
    server: KhoaServer, kms: Any, iam: Any
) -> None:
    """A user allowed nothing by policy, holding the quota's worth of grants on a key: each of its
    calls is decided by those grants, exactly as with a few."""
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    grantee: Caller = new_user(server, iam)
    insert_grants(server, key_id, grantee.arn, ["CreateGrant", "Encrypt"], GRANTS_PER_KEY - 2)
    kms.create_grant(
        KeyId=key_id,
        GranteePrincipal=grantee.arn,
        Operations=["Encrypt", "CreateGrant"],
        Constraints={"EncryptionContextSubset": {"App": "billing"}},
    )
    user_kms = grantee.client("kms")

    # Each call is decided by reading those grants (off the event loop past the first hundred: how
    # long that takes is measured in bench/, never here); none of them admits this context.
    for _ in range(2):
        assert (
            error_code(user_kms.encrypt, KeyId=key_id, Plaintext=b"x", EncryptionContext={"n": "none"})
            == "AccessDeniedException"
        )

    # The one grant that admits the context allows the call (keys compared case-insensitively).
    user_kms.encrypt(KeyId=key_id, Plaintext=b"x", EncryptionContext={"app": "billing", "extra": "1"})
    assert (
        error_code(user_kms.encrypt, KeyId=key_id, Plaintext=b"x", EncryptionContext={"app": "other"})
        == "AccessDeniedException"
    )
    # CreateGrant allowed by grants: nothing wider than a parent (here, only the one with App=billing).
    other = new_user(server, iam).arn
    user_kms.create_grant(
        KeyId=key_id,
        GranteePrincipal=other,
        Operations=["Encrypt"],
        Constraints={"EncryptionContextSubset": {"app": "billing", "team": "a"}},
    )
    assert (
        error_code(user_kms.create_grant, KeyId=key_id, GranteePrincipal=other, Operations=["Encrypt"])
        == "AccessDeniedException"
    )


# -- aliases ----------------------------------------------------------------------------------------


def test_aliases_per_key_quota(kms: Any) -> None:
    key = kms.create_key()["KeyMetadata"]
    elsewhere = kms.create_key()["KeyMetadata"]["KeyId"]
    names = [f"alias/{unique('quota')}" for _ in range(ALIASES_PER_KEY)]
    for name in names:
        kms.create_alias(AliasName=name, TargetKeyId=key["KeyId"])
    moving = f"alias/{unique('moving')}"
    kms.create_alias(AliasName=moving, TargetKeyId=elsewhere)

    expected = (
        "LimitExceededException",
        f"{key['Arn']} has reached the limit of {ALIASES_PER_KEY} aliases per KMS key.",
    )
    assert (
        refused(kms.create_alias, AliasName=f"alias/{unique('one-more')}", TargetKeyId=key["KeyId"])
        == expected
    )
    assert refused(kms.update_alias, AliasName=moving, TargetKeyId=key["KeyId"]) == expected
    listed = kms.list_aliases(KeyId=key["KeyId"], Limit=100)["Aliases"]
    assert sorted(a["AliasName"] for a in listed) == sorted(names)
    assert [a["AliasName"] for a in kms.list_aliases(KeyId=elsewhere)["Aliases"]] == [moving]
    # An alias may be moved onto the key it already names.
    kms.update_alias(AliasName=names[0], TargetKeyId=key["KeyId"])

    kms.delete_alias(AliasName=names[0])
    kms.update_alias(AliasName=moving, TargetKeyId=key["KeyId"])
    assert (
        error_code(kms.create_alias, AliasName=names[0], TargetKeyId=key["KeyId"]) == "LimitExceededException"
    )
    kms.create_alias(AliasName=names[0], TargetKeyId=elsewhere)


# -- keys -------------------------------------------------------------------------------------------


def test_customer_managed_keys_per_region_quota(server: KhoaServer) -> None:
    region = fresh_region()
    kms = server.client("kms", region=region)
    now = time.time() - 60
    rows = [
        (str(uuid.uuid4()), region, "CUSTOMER", now + i * 1e-6) for i in range(CUSTOMER_KEYS_PER_REGION - 1)
    ]
    rows.append((str(uuid.uuid4()), region, "AWS", now))  # an AWS managed key: not counted
    with database(server) as db:
        db.executemany(
            "INSERT INTO kms_keys (key_id, account_id, region, description, key_spec, key_usage, origin, "
            "key_manager, state, created_at, policy, rotation_enabled, multi_region) VALUES "
            f"(?, '{ACCOUNT_ID}', ?, '', 'SYMMETRIC_DEFAULT', 'ENCRYPT_DECRYPT', 'EXTERNAL', ?, "
            "'PendingImport', ?, '{}', 0, 0)",
            rows,
        )
    kms.create_key()  # the 100,000th customer managed key
    assert refused(kms.create_key) == (
        "LimitExceededException",
        f"This account has reached the limit of {CUSTOMER_KEYS_PER_REGION} customer managed KMS keys in "
        f"{region}.",
    )
    # Each account and Region has its own quota.
    server.client("kms", region=fresh_region()).create_key()


# -- custom key stores ------------------------------------------------------------------------------


def test_custom_key_stores_per_region_quota(server: KhoaServer) -> None:
    kms = server.client("kms", region=fresh_region())
    proxies = [FakeXksProxy().start() for _ in range(CUSTOM_KEY_STORES + 1)]
    try:

        def create(proxy: FakeXksProxy) -> Any:
            return kms.create_custom_key_store(
                CustomKeyStoreName=unique("xks"),
                CustomKeyStoreType="EXTERNAL_KEY_STORE",
                XksProxyUriEndpoint=proxy.endpoint,
                XksProxyUriPath=PATH,
                XksProxyConnectivity="PUBLIC_ENDPOINT",
                XksProxyAuthenticationCredential={
                    "AccessKeyId": proxy.access_key_id,
                    "RawSecretAccessKey": proxy.secret,
                },
            )

        stores = [create(proxy)["CustomKeyStoreId"] for proxy in proxies[:-1]]
        assert refused(create, proxy=proxies[-1]) == (
            "LimitExceededException",
            f"This account has reached the limit of {CUSTOM_KEY_STORES} custom key stores in this Region.",
        )
        assert not proxies[-1].seen  # refused before the proxy was called
        assert len(kms.describe_custom_key_stores()["CustomKeyStores"]) == CUSTOM_KEY_STORES
        kms.delete_custom_key_store(CustomKeyStoreId=stores[0])
        create(proxies[-1])
    finally:
        for proxy in proxies:
            proxy.stop()
