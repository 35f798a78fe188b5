"""The barrier (sealing under the root key) and root-key loading by the seal backends."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, select

from khoa.bootstrap import current_root_key, load_barrier, migrate_seal
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


# -- the root key file on disk ----------------------------------------------------------------------


class DiskEvents:
    """What reaches the disk, in order, while a test runs: every fsync (of which file or directory,
    and the file's size and mode then), every name put in place or removed, and every database
    commit and khoa_meta write of ``engine`` (when given)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, engine: Engine | None = None) -> None:
        self.events: list[tuple[str, ...]] = []
        real_fsync, real_link, real_rename, real_replace, real_unlink = (
            os.fsync,
            os.link,
            os.rename,
            os.replace,
            os.unlink,
        )

        def fsync(fd: int) -> None:
            info = os.fstat(fd)
            where = os.readlink(f"/proc/self/fd/{fd}")
            kind = "dir" if stat.S_ISDIR(info.st_mode) else "file"
            self.events.append(("fsync", kind, where, str(info.st_size), oct(info.st_mode & 0o777)))
            real_fsync(fd)

        def put(name: str, real: Any) -> Any:
            def wrapper(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
                mode = oct(os.stat(src).st_mode & 0o777)
                self.events.append((name, str(src), str(dst), mode))
                real(src, dst, *args, **kwargs)

            return wrapper

        def unlink(path: Any, *args: Any, **kwargs: Any) -> None:
            self.events.append(("unlink", str(path)))
            real_unlink(path, *args, **kwargs)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "link", put("link", real_link))
        monkeypatch.setattr(os, "rename", put("rename", real_rename))
        monkeypatch.setattr(os, "replace", put("replace", real_replace))
        monkeypatch.setattr(os, "unlink", unlink)
        if engine is not None:

            def statement(_conn: Any, _cursor: Any, sql: str, *_rest: Any) -> None:
                if "khoa_meta" in sql and sql.lstrip().upper().startswith(("INSERT", "DELETE")):
                    self.events.append(("sql", sql.split()[0].upper()))

            event.listen(engine, "before_cursor_execute", statement)
            event.listen(engine, "commit", lambda _conn: self.events.append(("commit",)))

    def index(self, predicate: Any) -> int:
        found = [i for i, e in enumerate(self.events) if predicate(e)]
        assert found, f"not in {self.events}"
        return found[0]

    def placed(self, path: Path) -> int:
        """Where the file ``path`` got its name (a link or rename of the written temporary)."""
        return self.index(lambda e: e[0] in ("link", "rename", "replace") and e[2] == str(path))

    def fsynced_file(self, path: Path, size: int) -> int:
        """Where the data of ``path`` (written to a temporary beside it) was fsynced, whole."""
        return self.index(
            lambda e: (
                e[:2] == ("fsync", "file")
                and Path(e[2]).parent == path.parent
                and path.name in Path(e[2]).name
                and e[3] == str(size)
            )
        )

    def fsynced_dir(self, directory: Path, after: int) -> int:
        return self.index(
            lambda e: e[:2] == ("fsync", "dir") and e[2] == str(directory) and self.events.index(e) > after
        )


def test_a_new_file_key_is_on_disk_before_it_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """root.key was written without fsync: a crash after the first start (the database, committed
    with synchronous=FULL, sealed under the key) left it empty. Now it is written to a temporary
    (mode 0600 from its creation), fsynced, put in place, and the directory fsynced, before it is
    returned; a new data directory is made durable in its parent too."""
    data_dir = tmp_path / "data"
    disk = DiskEvents(monkeypatch)
    key, created = load_or_create_file_key(data_dir)
    assert created
    path = data_dir / "root.key"
    data = disk.fsynced_file(path, ROOT_KEY_BYTES)
    placed = disk.placed(path)
    assert data < placed < disk.fsynced_dir(data_dir, after=placed)
    assert disk.events[data][4] == oct(0o600) and disk.events[placed][3] == oct(0o600)
    assert disk.index(lambda e: e[:3] == ("fsync", "dir", str(tmp_path))) < placed
    assert path.read_bytes() == key and path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in data_dir.iterdir()] == ["root.key"]  # no temporary left behind


def test_migrate_seal_makes_the_new_seal_durable_before_removing_the_old(
    tmp_path: Path, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """migrate-seal --to file wrote root.key without fsync and then committed the deletion of the
    passphrase salt: a crash soon after left neither. The key file is now on disk (data and
    directory entry) before that transaction; and a root key file migrated away from is removed
    durably, after the new seal's commit."""
    passphrase = Settings(data_dir=tmp_path / "data", seal_backend="passphrase", passphrase="p")
    sealed = load_barrier(passphrase, engine, create=True).seal(b"x", BINDING)
    root_key = current_root_key(passphrase, engine)
    disk = DiskEvents(monkeypatch, engine)
    migrate_seal(passphrase, engine, root_key, "file")
    path = passphrase.data_dir / "root.key"
    assert path.read_bytes() == root_key and "passphrase_salt" not in meta_names(engine)
    placed = disk.placed(path)
    durable = disk.fsynced_dir(passphrase.data_dir, after=placed)
    assert disk.fsynced_file(path, ROOT_KEY_BYTES) < placed < durable < disk.index(lambda e: e[0] == "sql")

    file_seal = Settings(data_dir=tmp_path / "data")
    assert load_barrier(file_seal, engine, create=False).open(sealed, BINDING) == b"x"
    disk.events.clear()
    migrate_seal(file_seal, engine, root_key, "shamir", shares=3, threshold=2)
    assert not os.path.lexists(path)
    committed = disk.index(lambda e: e[0] == "commit")
    removed = disk.index(lambda e: e == ("unlink", str(path)))
    assert committed < removed < disk.fsynced_dir(passphrase.data_dir, after=removed)


@pytest.mark.timeout(20)
def test_a_root_key_that_is_not_a_regular_file_is_refused_at_once(tmp_path: Path, engine: Engine) -> None:
    """A FIFO named root.key blocked the start for ever (the health port never opened); a directory
    was reported as an unwritable data directory. Anything but a regular file (or a link to one) is
    refused with a SealError naming what it is, and nothing is created in its place."""
    settings = Settings(data_dir=tmp_path / "data")
    settings.data_dir.mkdir()
    path = settings.data_dir / "root.key"
    os.mkfifo(path)
    for create in (True, False):
        with pytest.raises(SealError, match="is a FIFO, not a regular file"):
            load_barrier(settings, engine, create=create)
    with pytest.raises(SealError, match="is a FIFO"):
        load_or_create_file_key(settings.data_dir)
    path.unlink()
    os.symlink("/dev/null", path)
    with pytest.raises(SealError, match="is a character device"):
        load_barrier(settings, engine, create=True)
    path.unlink()
    path.mkdir()
    with pytest.raises(SealError, match="is a directory"):
        load_barrier(settings, engine, create=True)
    path.rmdir()
    # A dangling link is never replaced by a new key (it may point at the real one, unmounted).
    os.symlink(tmp_path / "elsewhere" / "root.key", path)
    with pytest.raises(SealError, match="dangling symbolic link"):
        load_barrier(settings, engine, create=True)
    assert os.path.islink(path) and meta_names(engine) == set()
    # A link to a regular file is read (a secret mounted elsewhere).
    path.unlink()
    target = tmp_path / "mounted.key"
    target.write_bytes(os.urandom(ROOT_KEY_BYTES))
    os.symlink(target, path)
    load_barrier(settings, engine, create=True)
    assert load_or_create_file_key(settings.data_dir) == (target.read_bytes(), False)
