"""Nothing secret is stored in the clear, and the seal backends refuse the wrong root key cleanly."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import sqlite3
import stat
import tempfile
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from khoa.crypto.barrier import Barrier
from tests.support.server import SECRET_ACCESS_KEY, KhoaServer

pytestmark = pytest.mark.slow


def forms(secret: bytes) -> list[bytes]:
    """The ways a secret could leak into a file: raw, hex (either case) and base64."""
    return [
        secret,
        secret.hex().encode(),
        secret.hex().upper().encode(),
        base64.b64encode(secret),
        base64.urlsafe_b64encode(secret),
    ]


def stored_files(data_dir: Path, *, skip: tuple[str, ...] = ("root.key",)) -> list[Path]:
    return [p for p in sorted(data_dir.rglob("*")) if p.is_file() and p.name not in skip]


def leaks(paths: list[Path], secrets: dict[str, bytes]) -> list[str]:
    """Which named secrets appear (in any form) in which files; names only, never the secrets."""
    found = []
    for path in paths:
        content = path.read_bytes()
        for name, secret in secrets.items():
            if any(form in content for form in forms(secret)):
                found.append(f"{name} in {path.name}")
    return found


def fingerprint(data_dir: Path) -> dict[str, str]:
    """What a refused start must leave unchanged: every file's bytes, except that the database counts by
    its content. Any process that opens a database whose WAL was left behind (a node stopped while a
    connection was still out) folds it back in when it closes, changing bytes but not one row."""
    sqlite_files = ("khoa.db", "khoa.db-wal", "khoa.db-shm")
    found = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in stored_files(data_dir, skip=sqlite_files)
    }
    found["khoa.db"] = database_content(data_dir)
    return found


def database_content(data_dir: Path) -> str:
    """A digest of the database's rows, read from a copy (with its WAL) so reading changes nothing."""
    with tempfile.TemporaryDirectory() as scratch:
        for name in ("khoa.db", "khoa.db-wal"):
            if (data_dir / name).exists():
                shutil.copyfile(data_dir / name, Path(scratch) / name)
        conn = sqlite3.connect(Path(scratch) / "khoa.db")
        try:
            return hashlib.sha256("\n".join(conn.iterdump()).encode()).hexdigest()
        finally:
            conn.close()


def test_nothing_secret_in_the_data_dir(fresh_server: KhoaServer) -> None:
    server = fresh_server.start()
    kms = server.client("kms")
    secrets: dict[str, bytes] = {}

    key = kms.create_key(Description="at rest")["KeyMetadata"]
    kms.rotate_key_on_demand(KeyId=key["KeyId"])
    for i in range(3):
        plaintext = b"KHOA-AT-REST-PLAINTEXT-" + os.urandom(16).hex().encode()
        secrets[f"plaintext {i}"] = plaintext
        blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=plaintext, EncryptionContext={"i": str(i)})
        assert (
            kms.decrypt(CiphertextBlob=blob["CiphertextBlob"], EncryptionContext={"i": str(i)})["Plaintext"]
            == plaintext
        )
    for i in range(3):
        data_key = kms.generate_data_key(KeyId=key["KeyId"], KeySpec="AES_256")
        secrets[f"data key {i}"] = data_key["Plaintext"]
        kms.decrypt(CiphertextBlob=data_key["CiphertextBlob"])
    pair = kms.generate_data_key_pair(KeyId=key["KeyId"], KeyPairSpec="ECC_NIST_P256")
    secrets["data key pair private key"] = pair["PrivateKeyPlaintext"]
    random_bytes = kms.generate_random(NumberOfBytes=32)["Plaintext"]
    secrets["random bytes"] = random_bytes

    for spec, usage in (("RSA_2048", "SIGN_VERIFY"), ("HMAC_256", "GENERATE_VERIFY_MAC")):
        kms.create_key(KeySpec=spec, KeyUsage=usage)

    # Imported material is known to the test, so it can be searched for directly.
    external = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]
    params = kms.get_parameters_for_import(
        KeyId=external["KeyId"], WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048"
    )
    imported = os.urandom(32)
    secrets["imported key material"] = imported
    wrapping = serialization.load_der_public_key(params["PublicKey"])
    assert isinstance(wrapping, rsa.RSAPublicKey)
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    kms.import_key_material(
        KeyId=external["KeyId"],
        ImportToken=params["ImportToken"],
        EncryptedKeyMaterial=wrapping.encrypt(imported, oaep),
        ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
    )

    data_dir = fresh_server.data_dir
    root_key = (data_dir / "root.key").read_bytes()
    assert len(root_key) == 32
    secrets["root key"] = root_key
    assert stat.S_IMODE((data_dir / "root.key").stat().st_mode) == 0o600
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700

    # While the server runs (recent pages in the WAL) and after it stops (checkpointed).
    log = fresh_server.log_path
    assert leaks([*stored_files(data_dir), log], secrets) == []
    server.stop()
    assert leaks([*stored_files(data_dir), log], secrets) == []

    # Every key version's material is sealed: open each with the root key (proving the test reads the
    # right thing), then make sure no material appears in the clear anywhere.
    barrier = Barrier(root_key)
    materials: dict[str, bytes] = {}
    with sqlite3.connect(data_dir / "khoa.db") as db:
        rows = db.execute("SELECT key_id, version_id, material_sealed FROM kms_key_versions").fetchall()
        secret_rows = db.execute("SELECT access_key_id, secret_sealed FROM access_keys").fetchall()
    assert len(rows) >= 5
    for key_id, version_id, sealed in rows:
        materials[f"material of {key_id}/{version_id[:8]}"] = barrier.open(
            sealed, f"kms_key_versions:{key_id}:{version_id}"
        )
    assert imported in materials.values()
    assert leaks(stored_files(data_dir), materials) == []
    # The root credentials' secret is sealed in the database too (only root-credentials holds it).
    for access_key_id, sealed in secret_rows:
        assert barrier.open(sealed, f"access_keys:{access_key_id}") == SECRET_ACCESS_KEY.encode()
    assert (
        leaks(
            stored_files(data_dir, skip=("root.key", "root-credentials")),
            {"secret": SECRET_ACCESS_KEY.encode()},
        )
        == []
    )


def test_missing_or_wrong_root_key_file_refuses_to_start(fresh_server: KhoaServer) -> None:
    server = fresh_server.start()
    kms = server.client("kms")
    blob = kms.encrypt(KeyId=kms.create_key()["KeyMetadata"]["KeyId"], Plaintext=b"kept")["CiphertextBlob"]
    server.stop()
    data_dir = fresh_server.data_dir
    root_key = (data_dir / "root.key").read_bytes()

    # A different root key: refused, nothing changed.
    (data_dir / "root.key").write_bytes(os.urandom(32))
    before = fingerprint(data_dir)
    with pytest.raises(RuntimeError):
        fresh_server.start()
    assert "does not match this database" in fresh_server.log_path.read_text()
    assert fingerprint(data_dir) == before

    # No root key at all: refused, and no new root key is invented for this database.
    (data_dir / "root.key").unlink()
    before = fingerprint(data_dir)
    with pytest.raises(RuntimeError):
        fresh_server.start()
    assert "no root key" in fresh_server.log_path.read_text()
    assert not (data_dir / "root.key").exists()
    assert fingerprint(data_dir) == before

    (data_dir / "root.key").write_bytes(root_key)
    os.chmod(data_dir / "root.key", 0o600)
    fresh_server.start()
    assert fresh_server.client("kms").decrypt(CiphertextBlob=blob)["Plaintext"] == b"kept"


def passphrase_env(passphrase: str) -> dict[str, str]:
    return {"KHOA_SEAL_BACKEND": "passphrase", "KHOA_PASSPHRASE": passphrase}


def test_passphrase_seal_backend(tmp_path: Path) -> None:
    passphrase = "correct horse battery staple " + os.urandom(8).hex()
    data_dir = tmp_path / "data"
    server = KhoaServer(data_dir, extra_env=passphrase_env(passphrase))
    try:
        kms: Any = server.start().client("kms")
        key = kms.create_key()["KeyMetadata"]
        plaintext = b"KHOA-PASSPHRASE-PLAINTEXT-" + os.urandom(8).hex().encode()
        blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=plaintext)["CiphertextBlob"]
        data_key = kms.generate_data_key(KeyId=key["KeyId"], KeySpec="AES_256")
        server.stop()
    finally:
        server.stop()

    # No root key file; neither the passphrase nor any secret is stored or logged.
    assert not (data_dir / "root.key").exists()
    secrets = {"passphrase": passphrase.encode(), "plaintext": plaintext, "data key": data_key["Plaintext"]}
    assert leaks([*stored_files(data_dir), server.log_path], secrets) == []

    # The wrong passphrase: a clear message, a failed start, and nothing changed.
    before = fingerprint(data_dir)
    wrong = KhoaServer(data_dir, port=server.port, extra_env=passphrase_env("not the passphrase"))
    with pytest.raises(RuntimeError):
        wrong.start()
    wrong.stop()
    log = server.log_path.read_text()
    assert "cannot start" in log
    assert "wrong passphrase" in log
    assert "not the passphrase" not in log
    assert fingerprint(data_dir) == before

    # No passphrase at all.
    missing = KhoaServer(data_dir, port=server.port, extra_env={"KHOA_SEAL_BACKEND": "passphrase"})
    with pytest.raises(RuntimeError):
        missing.start()
    missing.stop()
    assert "KHOA_PASSPHRASE" in server.log_path.read_text()
    assert fingerprint(data_dir) == before

    # The file backend cannot open a passphrase-sealed database either (and creates no root key).
    as_file = KhoaServer(data_dir, port=server.port)
    with pytest.raises(RuntimeError):
        as_file.start()
    as_file.stop()
    assert not (data_dir / "root.key").exists()
    assert fingerprint(data_dir) == before

    # The right passphrase opens everything that was there.
    again = KhoaServer(data_dir, port=server.port, extra_env=passphrase_env(passphrase))
    try:
        kms = again.start().client("kms")
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == plaintext
        assert kms.decrypt(CiphertextBlob=data_key["CiphertextBlob"])["Plaintext"] == data_key["Plaintext"]
    finally:
        again.stop()


def test_passphrase_backend_refuses_a_file_sealed_database(fresh_server: KhoaServer) -> None:
    fresh_server.start().stop()
    data_dir = fresh_server.data_dir
    before = fingerprint(data_dir)
    switched = KhoaServer(data_dir, port=fresh_server.port, extra_env=passphrase_env("anything"))
    with pytest.raises(RuntimeError):
        switched.start()
    switched.stop()
    assert "not sealed with the passphrase backend" in fresh_server.log_path.read_text()
    assert fingerprint(data_dir) == before
