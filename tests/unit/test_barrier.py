"""The barrier (sealing under the root key) and root-key loading by the seal backends."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from khoa.bootstrap import load_barrier
from khoa.crypto.barrier import ROOT_KEY_BYTES, Barrier, BarrierError
from khoa.crypto.seal import SealError, derive_passphrase_key, load_or_create_file_key
from khoa.settings import Settings
from khoa.storage import schema
from khoa.storage.database import create_database_engine, migrate

BINDING = "kms_key_versions:key:version"


@pytest.fixture
def barrier() -> Barrier:
    return Barrier(os.urandom(ROOT_KEY_BYTES))


def test_seal_and_open(barrier: Barrier) -> None:
    for plaintext in (b"", b"x", os.urandom(32), os.urandom(5000)):
        sealed = barrier.seal(plaintext, BINDING)
        assert barrier.open(sealed, BINDING) == plaintext
        if len(plaintext) >= 16:  # short values can occur in random bytes by chance
            assert plaintext not in sealed


def test_sealed_value_layout(barrier: Barrier) -> None:
    sealed = barrier.seal(b"secret", BINDING)
    # version byte + 12-byte nonce + ciphertext + 16-byte tag
    assert sealed[:1] == b"\x01"
    assert len(sealed) == 1 + 12 + len(b"secret") + 16


def test_every_seal_uses_a_fresh_nonce(barrier: Barrier) -> None:
    sealed = {barrier.seal(b"same", BINDING) for _ in range(50)}
    assert len(sealed) == 50
    assert len({s[1:13] for s in sealed}) == 50


def test_wrong_binding_fails(barrier: Barrier) -> None:
    sealed = barrier.seal(b"material", "kms_key_versions:key-a:v1")
    for other in ("kms_key_versions:key-b:v1", "kms_key_versions:key-a:v2", "", "access_keys:key-a"):
        with pytest.raises(BarrierError):
            barrier.open(sealed, other)


def test_wrong_root_key_fails(barrier: Barrier) -> None:
    sealed = barrier.seal(b"material", BINDING)
    with pytest.raises(BarrierError):
        Barrier(os.urandom(ROOT_KEY_BYTES)).open(sealed, BINDING)


def test_tampering_fails(barrier: Barrier) -> None:
    sealed = barrier.seal(b"some secret material", BINDING)
    for position in range(len(sealed)):
        for bit in (0x01, 0x80):
            tampered = bytearray(sealed)
            tampered[position] ^= bit
            with pytest.raises(BarrierError):
                barrier.open(bytes(tampered), BINDING)
    for cut in (sealed[:-1], sealed[:29], sealed[:1], b"", sealed + b"\x00"):
        with pytest.raises(BarrierError):
            barrier.open(cut, BINDING)


def test_unknown_format_version(barrier: Barrier) -> None:
    sealed = barrier.seal(b"x", BINDING)
    with pytest.raises(BarrierError, match="format"):
        barrier.open(b"\x02" + sealed[1:], BINDING)


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_root_key_must_be_256_bits(size: int) -> None:
    with pytest.raises(ValueError):
        Barrier(os.urandom(size))


def test_barrier_error_does_not_reveal_the_plaintext(barrier: Barrier) -> None:
    sealed = barrier.seal(b"TOP-SECRET-VALUE", BINDING)
    with pytest.raises(BarrierError) as info:
        barrier.open(sealed, "elsewhere")
    assert "TOP-SECRET" not in str(info.value)


# -- seal backends --------------------------------------------------------------------------------


def test_file_key_created_once_with_private_mode(tmp_path: Path) -> None:
    key, created = load_or_create_file_key(tmp_path)
    assert created and len(key) == ROOT_KEY_BYTES
    assert (tmp_path / "root.key").stat().st_mode & 0o777 == 0o600
    again, created_again = load_or_create_file_key(tmp_path)
    assert again == key and not created_again


def test_file_key_of_wrong_size_is_refused(tmp_path: Path) -> None:
    (tmp_path / "root.key").write_bytes(b"short")
    with pytest.raises(SealError):
        load_or_create_file_key(tmp_path)


def test_passphrase_derivation() -> None:
    salt = os.urandom(16)
    key = derive_passphrase_key("passphrase", salt)
    assert len(key) == ROOT_KEY_BYTES
    assert derive_passphrase_key("passphrase", salt) == key
    assert derive_passphrase_key("passphrase", os.urandom(16)) != key
    assert derive_passphrase_key("Passphrase", salt) != key
    with pytest.raises(SealError):
        derive_passphrase_key("", salt)


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = create_database_engine(f"sqlite:///{tmp_path / 'khoa.db'}")
    migrate(engine)
    return engine


def meta_names(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(select(schema.meta.c.name)).scalars())


def test_load_barrier_file_backend(tmp_path: Path, engine: Engine) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    with pytest.raises(SealError, match="no root key"):
        load_barrier(settings, engine, create=False)
    first = load_barrier(settings, engine, create=True)
    second = load_barrier(settings, engine, create=False)
    assert second.open(first.seal(b"x", BINDING), BINDING) == b"x"

    # The database remembers its root key: another key file is refused.
    (settings.data_dir / "root.key").write_bytes(os.urandom(ROOT_KEY_BYTES))
    with pytest.raises(SealError, match="does not match"):
        load_barrier(settings, engine, create=True)

    # A lost key file is not silently replaced by a new one.
    (settings.data_dir / "root.key").unlink()
    with pytest.raises(SealError, match="no root key"):
        load_barrier(settings, engine, create=True)
    assert not (settings.data_dir / "root.key").exists()


def test_load_barrier_passphrase_backend(tmp_path: Path, engine: Engine) -> None:
    settings = Settings(data_dir=tmp_path / "data", seal_backend="passphrase", passphrase="right")
    first = load_barrier(settings, engine, create=True)
    assert {"passphrase_salt", "barrier_check"} <= meta_names(engine)
    assert not (settings.data_dir / "root.key").exists()
    again = load_barrier(settings, engine, create=False)
    assert again.open(first.seal(b"x", BINDING), BINDING) == b"x"

    wrong = Settings(data_dir=tmp_path / "data", seal_backend="passphrase", passphrase="wrong")
    with pytest.raises(SealError, match="wrong passphrase"):
        load_barrier(wrong, engine, create=True)
    with pytest.raises(SealError, match="KHOA_PASSPHRASE"):
        load_barrier(Settings(data_dir=tmp_path / "data", seal_backend="passphrase"), engine, create=True)
    with pytest.raises(SealError):
        load_barrier(Settings(data_dir=tmp_path / "data"), engine, create=True)
    assert not (settings.data_dir / "root.key").exists()


def test_passphrase_backend_does_not_touch_a_file_sealed_database(tmp_path: Path, engine: Engine) -> None:
    load_barrier(Settings(data_dir=tmp_path / "data"), engine, create=True)
    before = meta_names(engine)
    with pytest.raises(SealError, match="not sealed with the passphrase backend"):
        load_barrier(
            Settings(data_dir=tmp_path / "data", seal_backend="passphrase", passphrase="p"),
            engine,
            create=True,
        )
    assert meta_names(engine) == before


def test_unknown_seal_backend(tmp_path: Path, engine: Engine) -> None:
    with pytest.raises(SealError, match="unknown seal backend"):
        load_barrier(Settings(data_dir=tmp_path, seal_backend="hsm"), engine, create=True)
