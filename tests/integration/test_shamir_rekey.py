"""``khoa operator rekey`` retires the old shares (the shamir seal's unseal key, as in Vault).

The shares reconstruct an unseal key that wraps the root key (``khoa_meta.seal_shamir``); a rekey makes
a new unseal key and re-wraps the same root key, so the old shares open nothing stored any more -- not
the running servers' ``/_khoa/unseal``, not the database offline -- while a backup taken before the rekey
still opens with them (the root key is unchanged). Installations initialised before unseal keys (shares
of the root key itself) still unseal, and their next rekey converts them. Through the real CLI and real
server processes; on PostgreSQL, two nodes share the seal.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from sqlalchemy import Engine, event, select, update
from sqlalchemy.exc import OperationalError

from khoa import bootstrap
from khoa.bootstrap import current_root_key, init_shamir, rekey_shamir, shamir_config
from khoa.crypto import shamir
from khoa.crypto.barrier import Barrier, BarrierError
from khoa.crypto.seal import SealError
from khoa.settings import Settings
from khoa.storage import schema
from khoa.storage.database import create_database_engine
from tests.integration.test_seals import assert_sealed, get, init, operator, shamir_server, unseal
from tests.support.server import ACCESS_KEY_ID, KhoaServer

CHECK_BINDING = "khoa_meta:barrier_check"


def rekey(server: KhoaServer, old: list[str], shares: int, threshold: int, *where: str) -> Any:
    return operator(
        server,
        "rekey",
        "--key-shares",
        str(shares),
        "--key-threshold",
        str(threshold),
        *(where or ("--data-dir", str(server.data_dir))),
        stdin="\n".join(old) + "\n",
    )


def combine(shares: list[str]) -> bytes:
    return shamir.combine([base64.b64decode(share) for share in shares])


def meta(engine: Engine, name: str) -> bytes:
    with engine.connect() as conn:
        value = conn.execute(select(schema.meta.c.value).where(schema.meta.c.name == name)).scalar()
    assert value is not None
    return bytes(value)


def opens(key: bytes, sealed: bytes, binding: str) -> bool:
    try:
        Barrier(key).open(sealed, binding)
    except BarrierError:
        return False
    return True


def root_secret(engine: Engine) -> tuple[str, bytes]:
    """The installation root's access key id and its sealed secret access key."""
    with engine.connect() as conn:
        row = conn.execute(
            select(schema.access_keys.c.access_key_id, schema.access_keys.c.secret_sealed).where(
                schema.access_keys.c.access_key_id == ACCESS_KEY_ID
            )
        ).one()
    return row[0], bytes(row[1])


def assert_opens_nothing(secret: bytes, engine: Engine) -> None:
    """``secret`` (what a quorum of shares reconstructs) opens nothing this database holds, whether
    taken as the root key or as the unseal key."""
    values = [
        (meta(engine, "barrier_check"), CHECK_BINDING),
        (root_secret(engine)[1], f"access_keys:{ACCESS_KEY_ID}"),
    ]
    for sealed, binding in values:
        assert not opens(secret, sealed, binding), binding
    wrapped = base64.b64decode(json.loads(meta(engine, "seal_shamir"))["root_key_wrapped"])
    assert not opens(secret, wrapped, "khoa_meta:seal_shamir:root_key_wrapped")


def test_rekey_retires_the_old_shares(tmp_path: Path) -> None:
    server = shamir_server(tmp_path / "data")
    old = init(server, 5, 3)
    settings = Settings(data_dir=server.data_dir, seal_backend="shamir")
    engine = create_database_engine(settings.effective_database_url)
    name = f"rekey-{uuid.uuid4().hex[:8]}"
    server.start()
    try:
        assert unseal(server, old[:3]).returncode == 0
        server.client("secretsmanager").create_secret(Name=name, SecretString="before-the-rekey")
    finally:
        server.stop()
    # a backup taken before the rekey
    backup_path = tmp_path / "backup.db"
    with sqlite3.connect(server.data_dir / "khoa.db") as source, sqlite3.connect(backup_path) as target:
        source.backup(target)
    backup = create_database_engine(f"sqlite:///{backup_path}")
    try:
        # the operator rekeys the same 5/3 split (old shares believed compromised)
        done = rekey(server, old[2:5], 5, 3)
        assert done.returncode == 0, done.stderr
        new = done.stdout.split()
        assert len(new) == 5 and not set(new) & set(old)

        # online: the server refuses the old shares (a full quorum of them) and takes the new ones
        server.start()
        try:
            assert_sealed(server)
            refused = unseal(server, old[:3])
            assert refused.returncode == 1 and "do not reconstruct" in refused.stderr
            assert_sealed(server)
            assert get(server, "/_khoa/seal-status")[1]["progress"] == 0
            assert unseal(server, new[2:5]).returncode == 0
            got = server.client("secretsmanager").get_secret_value(SecretId=name)
            assert got["SecretString"] == "before-the-rekey"
        finally:
            server.stop()

        # offline: any quorum of the old shares opens nothing the database now holds
        for quorum in (old[:3], old[2:5], [old[0], old[2], old[4]]):
            assert_opens_nothing(combine(quorum), engine)
            with pytest.raises(SealError):
                current_root_key(settings, engine, [base64.b64decode(s) for s in quorum])
        root = current_root_key(settings, engine, [base64.b64decode(s) for s in new[1:4]])
        assert opens(root, meta(engine, "barrier_check"), CHECK_BINDING)
        assert combine(new[:3]) != root  # the shares are of the unseal key, never of the root key
        # a backup taken before the rekey still opens with the old shares (the root key is unchanged)
        assert current_root_key(settings, backup, [base64.b64decode(s) for s in old[:3]]) == root
        with pytest.raises(SealError):
            current_root_key(settings, backup, [base64.b64decode(s) for s in new[:3]])

        # what the operator is told is what is true
        assert "no longer open anything this database holds" in done.stderr
        assert "every server refuses them" in done.stderr and "backup" in done.stderr
        assert "no longer do" not in done.stderr and "Warning" not in done.stderr

        # a second rekey retires the first rekey's shares too
        again = rekey(server, new[:3], 3, 2)
        assert again.returncode == 0, again.stderr
        assert_opens_nothing(combine(new[:3]), engine)
        refused_again = rekey(server, old[:3], 3, 2)
        assert refused_again.returncode == 1 and refused_again.stdout == ""
    finally:
        engine.dispose()
        backup.dispose()


def legacy_installation(tmp_path: Path) -> tuple[KhoaServer, list[str], str, bytes]:
    """An installation sealed the way Khoa did before unseal keys: seal_shamir holds only the split's
    size, and the shares reconstruct the root key itself. Made from a file-backend installation (its
    root.key split into shares, the file removed), as the old ``migrate-seal --to shamir`` did."""
    node = KhoaServer(tmp_path / "data", harness=False)
    node.start()
    name = f"legacy-{uuid.uuid4().hex[:8]}"
    try:
        node.client("secretsmanager").create_secret(Name=name, SecretString="sealed-long-ago")
    finally:
        node.stop()
    root = (node.data_dir / "root.key").read_bytes()
    engine = create_database_engine(Settings(data_dir=node.data_dir).effective_database_url)
    try:
        with engine.begin() as conn:
            conn.execute(schema.meta.insert().values(name="seal_type", value=b"shamir"))
            conn.execute(
                schema.meta.insert().values(name="seal_shamir", value=b'{"shares": 3, "threshold": 2}')
            )
    finally:
        engine.dispose()
    (node.data_dir / "root.key").unlink()
    shares = [base64.b64encode(s).decode() for s in shamir.split(root, 3, 2)]
    return shamir_server(node.data_dir), shares, name, root


def test_installation_from_before_unseal_keys_unseals_and_rekey_converts_it(tmp_path: Path) -> None:
    server, legacy, name, root = legacy_installation(tmp_path)
    engine = create_database_engine(Settings(data_dir=server.data_dir).effective_database_url)
    try:
        assert shamir_config(engine).wrapped_root_key is None
        server.start()
        try:
            assert_sealed(server)
            assert unseal(server, legacy[1:]).returncode == 0
            got = server.client("secretsmanager").get_secret_value(SecretId=name)
            assert got["SecretString"] == "sealed-long-ago"
            # rekeyed while a server runs: it stays unsealed
            done = rekey(server, legacy[:2], 4, 3)
            assert done.returncode == 0, done.stderr
            assert get(server, "/_khoa/ready")[0] == 200
        finally:
            server.stop()
        new = done.stdout.split()
        assert len(new) == 4
        # converted, and the operator is told the truth about shares of the root key itself
        assert shamir_config(engine).wrapped_root_key is not None
        assert "Warning" in done.stderr and "reconstructs the root key" in done.stderr
        assert "Every server refuses the old shares" in done.stderr and "no longer open" not in done.stderr
        assert combine(legacy[:2]) == root  # what no rekey can change (hence the warning)
        assert combine(new[:3]) != root
        server.start()
        try:
            refused = unseal(server, legacy)  # all three: a quorum of the new split's size
            assert refused.returncode == 1 and "do not reconstruct" in refused.stderr
            assert_sealed(server)
            assert unseal(server, new[1:]).returncode == 0
            got = server.client("secretsmanager").get_secret_value(SecretId=name)
            assert got["SecretString"] == "sealed-long-ago"
        finally:
            server.stop()
        # rekeying a converted installation says nothing more about old-format shares
        again = rekey(server, new[:3], 3, 2)
        assert again.returncode == 0 and "Warning" not in again.stderr
    finally:
        engine.dispose()


def test_nodes_on_postgresql_unseal_with_the_new_shares_after_a_rekey(
    tmp_path: Path, private_postgres: str
) -> None:
    a = KhoaServer(tmp_path / "a", database_url=private_postgres, harness=False)
    b = KhoaServer(tmp_path / "b", database_url=private_postgres, harness=False)
    for node in (a, b):
        node.extra_env = {"KHOA_SEAL_BACKEND": "shamir"}
        node.data_dir.mkdir(parents=True)
    old = init(a, 3, 2)
    name = f"pg-rekey-{uuid.uuid4().hex[:8]}"
    try:
        a.start()
        b.start()
        assert unseal(a, old[:2]).returncode == 0 and unseal(b, old[1:]).returncode == 0
        a.client("secretsmanager").create_secret(Name=name, SecretString="shared-seal")
        # rekeyed from node a's machine, while both nodes run: both keep serving
        done = rekey(a, old[:2], 3, 2, "--database-url", private_postgres, "--data-dir", str(a.data_dir))
        assert done.returncode == 0, done.stderr
        new = done.stdout.split()
        assert get(a, "/_khoa/ready")[0] == 200 and get(b, "/_khoa/ready")[0] == 200
        # node b restarts: the old shares no longer unseal it, the new ones do
        b.stop()
        b.start()
        assert_sealed(b)
        refused = unseal(b, old[1:])
        assert refused.returncode == 1 and "do not reconstruct" in refused.stderr
        assert unseal(b, new[:2]).returncode == 0
        assert b.client("secretsmanager").get_secret_value(SecretId=name)["SecretString"] == "shared-seal"
        # node a too
        a.stop()
        a.start()
        assert unseal(a, old[:2]).returncode == 1
        assert unseal(a, new[1:]).returncode == 0
        assert a.client("secretsmanager").get_secret_value(SecretId=name)["SecretString"] == "shared-seal"
    finally:
        a.stop()
        b.stop()
    engine = create_database_engine(private_postgres)
    try:
        assert_opens_nothing(combine(old[:2]), engine)
    finally:
        engine.dispose()


# --- the stored seal changes all at once, or not at all -------------------------------------------


def initialised(store_engine: Engine, tmp_path: Path) -> tuple[Settings, list[bytes]]:
    settings = Settings(data_dir=tmp_path / "data", seal_backend="shamir")
    shares, _ = init_shamir(settings, store_engine, 3, 2)
    return settings, shares


def test_a_rekey_that_fails_while_storing_changes_nothing(store_engine: Engine, tmp_path: Path) -> None:
    settings, old = initialised(store_engine, tmp_path)
    before = meta(store_engine, "seal_shamir")
    root = current_root_key(settings, store_engine, old[:2])

    def crash(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE KHOA_META"):
            raise OperationalError(statement, {}, Exception("the machine lost power"))

    event.listen(store_engine, "before_cursor_execute", crash)
    try:
        with pytest.raises(OperationalError):
            rekey_shamir(store_engine, old[:2], 3, 2)
    finally:
        event.remove(store_engine, "before_cursor_execute", crash)
    assert meta(store_engine, "seal_shamir") == before
    assert current_root_key(settings, store_engine, old[1:]) == root


def test_concurrent_rekeys_one_wins_the_other_changes_nothing(store_engine: Engine, tmp_path: Path) -> None:
    settings, old = initialised(store_engine, tmp_path)
    root = current_root_key(settings, store_engine, old[:2])
    split = shamir.split
    winner: list[bytes] = []

    def meanwhile(secret: bytes, shares: int, threshold: int) -> list[bytes]:
        # another operator's rekey completes between this one's read and its write
        if not winner:
            winner.extend([b""])
            with mock.patch.object(bootstrap.shamir, "split", split):
                winner[:] = rekey_shamir(store_engine, old[1:], 3, 2).shares
        return split(secret, shares, threshold)

    with (
        mock.patch.object(bootstrap.shamir, "split", meanwhile),
        pytest.raises(SealError, match="changed while rekeying"),
    ):
        rekey_shamir(store_engine, old[:2], 3, 2)
    assert current_root_key(settings, store_engine, winner[:2]) == root
    with pytest.raises(SealError):
        current_root_key(settings, store_engine, old[:2])


def test_a_tampered_or_missing_wrapping_is_refused(store_engine: Engine, tmp_path: Path) -> None:
    settings, shares = initialised(store_engine, tmp_path)
    stored = json.loads(meta(store_engine, "seal_shamir"))
    wrapped = bytearray(base64.b64decode(stored["root_key_wrapped"]))
    wrapped[-1] ^= 1
    stored["root_key_wrapped"] = base64.b64encode(bytes(wrapped)).decode()
    with store_engine.begin() as conn:
        conn.execute(
            update(schema.meta)
            .where(schema.meta.c.name == "seal_shamir")
            .values(value=json.dumps(stored).encode())
        )
    with pytest.raises(SealError, match="do not reconstruct"):
        current_root_key(settings, store_engine, shares[:2])
    # the wrapping removed (as if initialised before unseal keys): the unseal key is no root key
    with store_engine.begin() as conn:
        conn.execute(
            update(schema.meta)
            .where(schema.meta.c.name == "seal_shamir")
            .values(value=b'{"shares": 3, "threshold": 2}')
        )
    with pytest.raises(SealError, match="do not reconstruct"):
        current_root_key(settings, store_engine, shares[:2])
