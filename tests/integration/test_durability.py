"""Durability: state survives a clean restart, and kill -9 mid-burst loses nothing acknowledged."""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import BotoCoreError, ClientError
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from khoa.crypto.barrier import Barrier
from khoa.services.kms.store import KeyRecord, KeyStore, new_material_id
from khoa.storage import schema
from khoa.storage.database import create_database_engine, migrate
from tests.support.server import KhoaServer

DAY = 86400
pytestmark = pytest.mark.slow


def all_key_ids(kms: Any) -> list[str]:
    return [k["KeyId"] for page in kms.get_paginator("list_keys").paginate() for k in page["Keys"]]


def test_state_survives_restart(fresh_server: KhoaServer) -> None:
    server = fresh_server.start()
    kms = server.client("kms")

    symmetric = kms.create_key(Description="survivor", Tags=[{"TagKey": "k", "TagValue": "v"}])["KeyMetadata"]
    kms.create_alias(AliasName="alias/survivor", TargetKeyId=symmetric["KeyId"])
    grant = kms.create_grant(
        KeyId=symmetric["KeyId"], GranteePrincipal="arn:aws:iam::999988887777:role/r", Operations=["Decrypt"]
    )
    before_rotation = kms.encrypt(KeyId="alias/survivor", Plaintext=b"one", EncryptionContext={"e": "c"})
    kms.rotate_key_on_demand(KeyId=symmetric["KeyId"])
    kms.enable_key_rotation(KeyId=symmetric["KeyId"], RotationPeriodInDays=120)
    after_rotation = kms.encrypt(KeyId=symmetric["KeyId"], Plaintext=b"two")["CiphertextBlob"]
    data_key = kms.generate_data_key(KeyId=symmetric["KeyId"], KeySpec="AES_256")

    signer = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    public_before = kms.get_public_key(KeyId=signer["KeyId"])["PublicKey"]
    signature = kms.sign(KeyId=signer["KeyId"], Message=b"m", SigningAlgorithm="ECDSA_SHA_256")["Signature"]

    mac_key = kms.create_key(KeySpec="HMAC_384", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]
    mac = kms.generate_mac(KeyId=mac_key["KeyId"], Message=b"m", MacAlgorithm="HMAC_SHA_384")["Mac"]

    rsa_key = kms.create_key(KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]
    rsa_blob = kms.encrypt(KeyId=rsa_key["KeyId"], Plaintext=b"rsa", EncryptionAlgorithm="RSAES_OAEP_SHA_256")

    disabled = kms.create_key()["KeyMetadata"]
    kms.disable_key(KeyId=disabled["KeyId"])
    doomed = kms.create_key()["KeyMetadata"]
    kms.schedule_key_deletion(KeyId=doomed["KeyId"], PendingWindowInDays=7)

    external = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]
    params = kms.get_parameters_for_import(
        KeyId=external["KeyId"], WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048"
    )
    wrapping = serialization.load_der_public_key(params["PublicKey"])
    assert isinstance(wrapping, rsa.RSAPublicKey)
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    kms.import_key_material(
        KeyId=external["KeyId"],
        ImportToken=params["ImportToken"],
        EncryptedKeyMaterial=wrapping.encrypt(os.urandom(32), oaep),
        ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
    )
    external_blob = kms.encrypt(KeyId=external["KeyId"], Plaintext=b"byok")["CiphertextBlob"]

    keys_before = sorted(all_key_ids(kms))
    server.stop()
    server.start()
    kms = server.client("kms")

    assert sorted(all_key_ids(kms)) == keys_before
    described = kms.describe_key(KeyId="alias/survivor")["KeyMetadata"]
    assert described["KeyId"] == symmetric["KeyId"]
    assert described["Description"] == "survivor"
    assert kms.list_resource_tags(KeyId=symmetric["KeyId"])["Tags"] == [{"TagKey": "k", "TagValue": "v"}]
    assert [g["GrantId"] for g in kms.list_grants(KeyId=symmetric["KeyId"])["Grants"]] == [grant["GrantId"]]
    status = kms.get_key_rotation_status(KeyId=symmetric["KeyId"])
    assert status["KeyRotationEnabled"] is True and status["RotationPeriodInDays"] == 120
    opened = kms.decrypt(CiphertextBlob=before_rotation["CiphertextBlob"], EncryptionContext={"e": "c"})
    assert opened["Plaintext"] == b"one"
    assert kms.decrypt(CiphertextBlob=after_rotation)["Plaintext"] == b"two"
    assert kms.decrypt(CiphertextBlob=data_key["CiphertextBlob"])["Plaintext"] == data_key["Plaintext"]

    assert kms.get_public_key(KeyId=signer["KeyId"])["PublicKey"] == public_before
    assert kms.verify(
        KeyId=signer["KeyId"], Message=b"m", Signature=signature, SigningAlgorithm="ECDSA_SHA_256"
    )["SignatureValid"]
    public = serialization.load_der_public_key(public_before)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(signature, b"m", ec.ECDSA(hashes.SHA256()))
    assert kms.verify_mac(KeyId=mac_key["KeyId"], Message=b"m", MacAlgorithm="HMAC_SHA_384", Mac=mac)[
        "MacValid"
    ]
    assert (
        kms.decrypt(
            KeyId=rsa_key["KeyId"],
            CiphertextBlob=rsa_blob["CiphertextBlob"],
            EncryptionAlgorithm="RSAES_OAEP_SHA_256",
        )["Plaintext"]
        == b"rsa"
    )
    assert kms.decrypt(CiphertextBlob=external_blob)["Plaintext"] == b"byok"
    assert kms.describe_key(KeyId=disabled["KeyId"])["KeyMetadata"]["KeyState"] == "Disabled"
    assert kms.describe_key(KeyId=doomed["KeyId"])["KeyMetadata"]["KeyState"] == "PendingDeletion"

    # Background work resumes right after a clean restart (the old process gave up its lease).
    server.advance_clock(8 * DAY)
    assert server.run_jobs() > 0
    with pytest.raises(ClientError) as info:
        kms.describe_key(KeyId=doomed["KeyId"])
    assert info.value.response["Error"]["Code"] == "NotFoundException"


def check_usable(kms: Any, key_id: str) -> None:
    """Every key that exists must be whole: describable, with working material for its type."""
    meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    assert meta["KeyState"] == "Enabled", meta
    spec = meta["KeySpec"]
    if spec == "SYMMETRIC_DEFAULT":
        blob = kms.encrypt(KeyId=key_id, Plaintext=key_id.encode())["CiphertextBlob"]
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == key_id.encode()
    elif spec.startswith("HMAC"):
        mac = kms.generate_mac(KeyId=key_id, Message=b"m", MacAlgorithm="HMAC_SHA_256")["Mac"]
        assert kms.verify_mac(KeyId=key_id, Message=b"m", MacAlgorithm="HMAC_SHA_256", Mac=mac)["MacValid"]
    else:
        signature = kms.sign(KeyId=key_id, Message=b"m", SigningAlgorithm="ECDSA_SHA_256")["Signature"]
        assert kms.verify(KeyId=key_id, Message=b"m", Signature=signature, SigningAlgorithm="ECDSA_SHA_256")


SPECS: list[dict[str, str]] = [
    {},
    {"KeySpec": "HMAC_256", "KeyUsage": "GENERATE_VERIFY_MAC"},
    {"KeySpec": "ECC_NIST_P256", "KeyUsage": "SIGN_VERIFY"},
]


def test_kill_during_create_key_burst(fresh_server: KhoaServer) -> None:
    server = fresh_server.start()
    acknowledged: list[tuple[str, str]] = []
    lock = threading.Lock()
    stop = threading.Event()
    failures: list[BaseException] = []

    def burst(worker: int) -> None:
        kms = server.client("kms")
        n = 0
        while not stop.is_set():
            n += 1
            marker = f"w{worker}-{n}"
            try:
                meta = kms.create_key(
                    Description=marker,
                    Tags=[{"TagKey": "marker", "TagValue": marker}],
                    **SPECS[n % len(SPECS)],
                )["KeyMetadata"]
            except (BotoCoreError, ClientError, OSError):
                return  # the server died under us: this request was never acknowledged
            except BaseException as exc:  # noqa: BLE001 - reported below
                failures.append(exc)
                return
            with lock:
                acknowledged.append((meta["KeyId"], marker))

    threads = [threading.Thread(target=burst, args=(i,), daemon=True) for i in range(6)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 20
    while len(acknowledged) < 60 and time.monotonic() < deadline:
        time.sleep(0.02)
    server.kill9()
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert not failures, failures
    assert len(acknowledged) >= 60

    server.start()
    kms = server.client("kms")
    listed = set(all_key_ids(kms))
    # Nothing acknowledged was lost.
    missing = {key_id for key_id, _ in acknowledged} - listed
    assert not missing, f"{len(missing)} acknowledged keys lost"
    for key_id, marker in acknowledged:
        meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
        assert meta["Description"] == marker
        tags = kms.list_resource_tags(KeyId=key_id)["Tags"]
        assert tags == [{"TagKey": "marker", "TagValue": marker}]
    # Nothing half-written exists: every listed key (acknowledged or not) is whole and usable.
    for key_id in listed:
        check_usable(kms, key_id)
    # And the server keeps working normally after the crash.
    check_usable(kms, kms.create_key()["KeyMetadata"]["KeyId"])


def test_hmac_material_is_stable_across_restarts(fresh_server: KhoaServer) -> None:
    """The material itself, not only the key row, comes back: MACs made before and after agree."""
    server = fresh_server.start()
    kms = server.client("kms")
    key = kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]
    before = kms.generate_mac(KeyId=key["KeyId"], Message=b"stable", MacAlgorithm="HMAC_SHA_256")["Mac"]
    server.kill9()
    server.start()
    kms = server.client("kms")
    after = kms.generate_mac(KeyId=key["KeyId"], Message=b"stable", MacAlgorithm="HMAC_SHA_256")["Mac"]
    assert after == before
    assert not hmac.compare_digest(after, hmac.new(b"\0" * 32, b"stable", hashlib.sha256).digest())


def test_key_row_material_and_tags_commit_together(tmp_path: Path) -> None:
    """KeyStore.insert writes the key, its first material and its tags in one transaction."""
    engine = create_database_engine(f"sqlite:///{tmp_path / 'khoa.db'}")
    migrate(engine)
    store = KeyStore(engine, Barrier(os.urandom(32)))
    record = KeyRecord(
        key_id=str(uuid.uuid4()),
        account_id="111122223333",
        region="us-east-1",
        description="",
        key_spec="SYMMETRIC_DEFAULT",
        key_usage="ENCRYPT_DECRYPT",
        origin="AWS_KMS",
        key_manager="CUSTOMER",
        state="Enabled",
        created_at=time.time(),
        deletion_date=None,
        pending_window_days=None,
        policy="{}",
        rotation_enabled=False,
        rotation_period_days=None,
        next_rotation_at=None,
        on_demand_started_at=None,
        current_version_id=new_material_id(),
        valid_to=None,
        expiration_model=None,
        multi_region=False,
    )
    material = os.urandom(32)
    store.insert(record, material, time.time(), tags={"a": "1", "b": "2"})
    assert store.material(record.key_id, record.current_version_id or "") == material
    with engine.connect() as conn:
        assert dict(conn.execute(select(schema.kms_tags.c.tag_key, schema.kms_tags.c.tag_value)).all()) == {
            "a": "1",
            "b": "2",
        }
    # A failing insert (the key exists) leaves nothing behind: no extra tags, no second version.
    with pytest.raises(IntegrityError):
        store.insert(record, os.urandom(32), time.time(), tags={"c": "3"})
    with engine.connect() as conn:
        assert conn.execute(select(schema.kms_tags.c.tag_key)).scalars().all() == ["a", "b"]
        assert len(conn.execute(select(schema.kms_key_versions.c.version_id)).all()) == 1
    engine.dispose()
