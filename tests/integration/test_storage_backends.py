"""The same KMS scenarios against SQLite and PostgreSQL: behaviour must not depend on the database."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.support.errors import error_code
from tests.support.server import KhoaServer

DAY = 86400
pytestmark = pytest.mark.slow


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared' / 'khoa.db'}"
    return str(request.getfixturevalue("private_postgres"))


@pytest.fixture
def backend_server(tmp_path: Path, database_url: str) -> Iterator[KhoaServer]:
    (tmp_path / "shared").mkdir(exist_ok=True)
    instance = KhoaServer(tmp_path / "node-a", database_url=database_url)
    yield instance
    instance.stop()


def wrap_for_import(public_der: bytes, material: bytes) -> bytes:
    public = serialization.load_der_public_key(public_der)
    assert isinstance(public, rsa.RSAPublicKey)
    return public.encrypt(
        material, padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    )


def test_kms_conformance(backend_server: KhoaServer) -> None:
    server = backend_server.start()
    kms = server.client("kms")

    # Keys of every family, described and listed with paging.
    created = [
        kms.create_key(Description="sym", Tags=[{"TagKey": "t", "TagValue": "1"}])["KeyMetadata"],
        kms.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"],
        kms.create_key(KeySpec="ECC_NIST_P384", KeyUsage="SIGN_VERIFY")["KeyMetadata"],
        kms.create_key(KeySpec="HMAC_512", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"],
    ]
    symmetric = created[0]
    pages = list(kms.get_paginator("list_keys").paginate(PaginationConfig={"PageSize": 3}))
    assert [len(p["Keys"]) for p in pages] == [3, 1]
    assert [k["KeyId"] for p in pages for k in p["Keys"]] == [k["KeyId"] for k in created]

    # Aliases, encryption with context, data keys.
    kms.create_alias(AliasName="alias/conformance", TargetKeyId=symmetric["KeyId"])
    blob = kms.encrypt(KeyId="alias/conformance", Plaintext=b"conform", EncryptionContext={"db": "any"})
    assert error_code(kms.decrypt, CiphertextBlob=blob["CiphertextBlob"]) == "InvalidCiphertextException"
    opened = kms.decrypt(CiphertextBlob=blob["CiphertextBlob"], EncryptionContext={"db": "any"})
    assert opened["Plaintext"] == b"conform"
    data_key = kms.generate_data_key(KeyId=symmetric["Arn"], NumberOfBytes=48)
    assert kms.decrypt(CiphertextBlob=data_key["CiphertextBlob"])["Plaintext"] == data_key["Plaintext"]
    signature = kms.sign(KeyId=created[1]["KeyId"], Message=b"m", SigningAlgorithm="RSASSA_PSS_SHA_256")
    assert kms.verify(
        KeyId=created[1]["KeyId"],
        Message=b"m",
        Signature=signature["Signature"],
        SigningAlgorithm="RSASSA_PSS_SHA_256",
    )["SignatureValid"]

    # Tags, grants and their paging.
    kms.tag_resource(
        KeyId=symmetric["KeyId"], Tags=[{"TagKey": f"k{i}", "TagValue": str(i)} for i in range(4)]
    )
    tag_pages = list(
        kms.get_paginator("list_resource_tags").paginate(
            KeyId=symmetric["KeyId"], PaginationConfig={"PageSize": 2}
        )
    )
    assert sum(len(p["Tags"]) for p in tag_pages) == 5
    grant_ids = {
        kms.create_grant(
            KeyId=symmetric["KeyId"],
            GranteePrincipal="arn:aws:iam::999988887777:role/g",
            Operations=["Decrypt"],
        )["GrantId"]
        for _ in range(3)
    }
    grant_pages = list(
        kms.get_paginator("list_grants").paginate(KeyId=symmetric["KeyId"], PaginationConfig={"PageSize": 2})
    )
    assert {g["GrantId"] for p in grant_pages for g in p["Grants"]} == grant_ids
    kms.revoke_grant(KeyId=symmetric["KeyId"], GrantId=grant_ids.pop())

    # Rotation keeps old ciphertexts decrypting.
    kms.rotate_key_on_demand(KeyId=symmetric["KeyId"])
    assert len(kms.list_key_rotations(KeyId=symmetric["KeyId"])["Rotations"]) == 1
    assert kms.decrypt(CiphertextBlob=blob["CiphertextBlob"], EncryptionContext={"db": "any"})[
        "Plaintext"
    ] == (b"conform")

    # BYOK.
    external = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]
    params = kms.get_parameters_for_import(
        KeyId=external["KeyId"], WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048"
    )
    kms.import_key_material(
        KeyId=external["KeyId"],
        ImportToken=params["ImportToken"],
        EncryptedKeyMaterial=wrap_for_import(params["PublicKey"], os.urandom(32)),
        ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
    )
    byok_blob = kms.encrypt(KeyId=external["KeyId"], Plaintext=b"byok")["CiphertextBlob"]

    # Concurrent writers (several connections from the pool at once).
    made: list[str] = []
    errors: list[BaseException] = []

    def create_some() -> None:
        client = server.client("kms")
        try:
            for _ in range(5):
                made.append(client.create_key()["KeyMetadata"]["KeyId"])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=create_some) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert len(set(made)) == 20

    # Scheduled deletion completes through the job runner.
    kms.schedule_key_deletion(KeyId=created[2]["KeyId"], PendingWindowInDays=7)
    server.advance_clock(7 * DAY + 60)
    assert server.run_jobs() > 0
    assert error_code(kms.describe_key, KeyId=created[2]["KeyId"]) == "NotFoundException"

    # Everything is still there after a restart on the same database.
    server.stop()
    server.start()
    kms = server.client("kms")
    listed = {k["KeyId"] for p in kms.get_paginator("list_keys").paginate() for k in p["Keys"]}
    assert listed == {k["KeyId"] for k in created if k is not created[2]} | set(made) | {external["KeyId"]}
    assert kms.decrypt(CiphertextBlob=blob["CiphertextBlob"], EncryptionContext={"db": "any"})[
        "Plaintext"
    ] == (b"conform")
    assert kms.decrypt(CiphertextBlob=byok_blob)["Plaintext"] == b"byok"
    assert len(kms.list_grants(KeyId=symmetric["KeyId"])["Grants"]) == 2
    assert kms.describe_key(KeyId="alias/conformance")["KeyMetadata"]["KeyId"] == symmetric["KeyId"]


def test_two_servers_share_one_database(backend_server: KhoaServer, tmp_path: Path) -> None:
    """Two processes on one database see the same keys; only one of them runs background jobs."""
    first = backend_server.start()
    second_dir = tmp_path / "node-b"
    second_dir.mkdir()
    shutil.copy2(first.data_dir / "root.key", second_dir / "root.key")
    second = KhoaServer(second_dir, database_url=first.database_url).start()
    try:
        a, b = first.client("kms"), second.client("kms")
        key = a.create_key()["KeyMetadata"]
        blob = a.encrypt(KeyId=key["KeyId"], Plaintext=b"shared")["CiphertextBlob"]
        assert b.decrypt(CiphertextBlob=blob)["Plaintext"] == b"shared"
        b.create_alias(AliasName="alias/shared", TargetKeyId=key["KeyId"])
        assert a.describe_key(KeyId="alias/shared")["KeyMetadata"]["KeyId"] == key["KeyId"]

        # A key disabled through one node is refused by the other within the key-row cache's TTL
        # (one second: the eventual consistency AWS documents for key state changes).
        b.disable_key(KeyId=key["KeyId"])
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                a.decrypt(CiphertextBlob=blob)
            except ClientError:
                break
            time.sleep(0.2)
        assert error_code(a.decrypt, CiphertextBlob=blob) == "DisabledException"
        b.enable_key(KeyId=key["KeyId"])

        # The jobs lease: whoever takes it first is the only runner until it lets go.
        assert first.run_jobs() > 0
        assert second.run_jobs() == 0
        assert first.run_jobs() > 0
        first.stop()
        assert second.run_jobs() > 0
    finally:
        second.stop()


@pytest.mark.parametrize(
    "database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_requests_larger_than_one_statement(backend_server: KhoaServer) -> None:
    """Valid requests whose naive SQL outgrows what PostgreSQL takes in one statement (65,535
    parameters) are served. They used to be answered 503 "The database is unavailable" (retried by
    SDKs, read as an outage by operators), after holding the worker while their statement was built.
    (SQLite's side: tests/unit/test_secretsmanager_handlers.py, test_ssm_handlers.py and
    tests/integration/test_ssm_browse.py.)"""
    server = backend_server.start()
    kms, sm, ssm = server.client("kms"), server.client("secretsmanager"), server.client("ssm")
    many = [f"k{i}" for i in range(70_000)]  # TagKeys have no maximum in the models

    # Removing tags: any number of keys, in bounded statements.
    key_id = kms.create_key(Tags=[{"TagKey": "gone", "TagValue": "1"}, {"TagKey": "kept", "TagValue": "2"}])[
        "KeyMetadata"
    ]["KeyId"]
    kms.untag_resource(KeyId=key_id, TagKeys=[*many, "gone"])
    assert kms.list_resource_tags(KeyId=key_id)["Tags"] == [{"TagKey": "kept", "TagValue": "2"}]
    sm.create_secret(
        Name="tagged", SecretString="v", Tags=[{"Key": "gone", "Value": "1"}, {"Key": "kept", "Value": "2"}]
    )
    sm.untag_resource(SecretId="tagged", TagKeys=["gone", *many])
    assert sm.describe_secret(SecretId="tagged")["Tags"] == [{"Key": "kept", "Value": "2"}]
    ssm.put_parameter(
        Name="/big/p",
        Value="v",
        Type="String",
        Tags=[{"Key": "gone", "Value": "1"}, {"Key": "kept", "Value": "2"}],
    )
    ssm.remove_tags_from_resource(ResourceType="Parameter", ResourceId="/big/p", TagKeys=[*many, "gone"])
    assert ssm.list_tags_for_resource(ResourceType="Parameter", ResourceId="/big/p")["TagList"] == [
        {"Key": "kept", "Value": "2"}
    ]

    # ListSecrets with 10 filters of 10 values of 100 words (a ~40 KB request, valid).
    words = [f"w{chr(97 + i // 26)}{chr(97 + i % 26)}" for i in range(100)]
    sm.create_secret(Name="every-word", SecretString="v", Description=" ".join(words))
    sm.create_secret(Name="most-words", SecretString="v", Description=" ".join(words[:-1]))
    values = [" ".join(words[i:] + words[:i]) for i in range(10)]
    listed = sm.list_secrets(Filters=[{"Key": "all", "Values": values}] * 10)["SecretList"]
    assert [s["Name"] for s in listed] == ["every-word"]
    negated = [{"Key": "description", "Values": [f"!{v}" for v in values]}] * 10
    assert {s["Name"] for s in sm.list_secrets(Filters=negated)["SecretList"]} == {"tagged", "most-words"}

    # DescribeParameters with 1,000 tag filters (no parameter has more than 50 tags).
    thousand = [{"Key": f"tag:t{i}", "Values": ["a"]} for i in range(1000)]
    assert ssm.describe_parameters(ParameterFilters=thousand)["Parameters"] == []
    assert [
        p["Name"] for p in ssm.describe_parameters(ParameterFilters=[{"Key": "tag:kept"}])["Parameters"]
    ] == ["/big/p"]
