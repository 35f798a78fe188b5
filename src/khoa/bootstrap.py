"""First-start work and root-key loading, shared by the server and the operator CLI.

Runs once in the parent process before workers start: it migrates the schema, obtains the root key
from the configured seal backend, and creates the first account with its root credentials.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import secrets
import string
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from khoa.clock import wall_clock
from khoa.crypto import shamir
from khoa.crypto.barrier import ROOT_KEY_BYTES, Barrier, BarrierError
from khoa.crypto.seal import (
    ROOT_KEY_FILE,
    SealError,
    derive_passphrase_key,
    load_or_create_file_key,
    read_root_key_file,
    remove_file_durably,
    write_private_file,
)
from khoa.crypto.seal_wrappers import AwsKmsWrapper, KeyWrapper, Pkcs11Wrapper
from khoa.settings import Settings
from khoa.storage import schema
from khoa.storage.database import first_account

log = logging.getLogger("khoa")

_CHECK_PLAINTEXT = b"khoa-barrier-check-v1"
_CHECK_BINDING = "khoa_meta:barrier_check"
ROOT_CREDENTIALS_FILE = "root-credentials"


@dataclass(frozen=True)
class NewAccount:
    account_id: str
    access_key_id: str
    secret_access_key: str


def _meta_get(engine: Engine, name: str) -> bytes | None:
    with engine.connect() as conn:
        return conn.execute(select(schema.meta.c.value).where(schema.meta.c.name == name)).scalar()


def _meta_put_if_absent(engine: Engine, name: str, value: bytes) -> bytes:
    """Insert a meta value unless another process won the race; return whichever value is stored."""
    try:
        with engine.begin() as conn:
            conn.execute(insert(schema.meta).values(name=name, value=value))
    except IntegrityError:
        log.debug("another process stored %s first", name)
    stored = _meta_get(engine, name)
    assert stored is not None
    return stored


def load_barrier(settings: Settings, engine: Engine, *, create: bool) -> Barrier:
    """Obtain the root key from the seal backend and prove it matches this database."""
    barrier = Barrier(_obtain_root_key(settings, engine, create=create))
    check = _meta_get(engine, "barrier_check")
    if check is None:
        check = _meta_put_if_absent(engine, "barrier_check", barrier.seal(_CHECK_PLAINTEXT, _CHECK_BINDING))
    try:
        barrier.open(check, _CHECK_BINDING)
    except BarrierError:
        raise SealError(
            "the root key does not match this database (wrong passphrase or root key file)"
        ) from None
    return barrier


def _obtain_root_key(settings: Settings, engine: Engine, *, create: bool) -> bytes:
    if settings.seal_backend == "file":
        key_path = settings.data_dir / ROOT_KEY_FILE
        # A FIFO, device or directory by that name is refused here, never waited on.
        found = read_root_key_file(key_path)
        if found is not None:
            return found
        if not create:
            raise SealError(f"no root key at {key_path}")
        if _meta_get(engine, "barrier_check") is not None:
            # Creating a new key here could never open this database's data: refuse, change nothing.
            raise SealError(
                f"no root key at {key_path}, but this database holds data sealed under one: restore "
                "that root key file (or start with the seal backend the database was created with)"
            )
        # On disk (fsynced, file and directory) before load_barrier commits the check value under it.
        key, created = load_or_create_file_key(settings.data_dir)
        if created:
            log.warning(
                "created a new root key in %s (file seal backend): anyone who can read this "
                "file can read every key and secret; use the passphrase backend in production",
                key_path,
            )
    elif settings.seal_backend == "passphrase":
        salt = _meta_get(engine, "passphrase_salt")
        if salt is None:
            if _meta_get(engine, "barrier_check") is not None:
                raise SealError(
                    "this database was not sealed with the passphrase backend "
                    "(start it with the seal backend it was created with)"
                )
            salt = _meta_put_if_absent(engine, "passphrase_salt", os.urandom(16))
        key = derive_passphrase_key(settings.passphrase, salt)
    elif settings.seal_backend == "shamir":
        key = shamir_root_key(engine, _provided_key())
    elif settings.seal_backend in WRAPPED_BACKENDS:
        key = _load_wrapped_key(engine, seal_wrapper(settings), create=create)
    else:
        raise SealError(
            f"unknown seal backend {settings.seal_backend!r} "
            "(choose file, passphrase, shamir, pkcs11 or awskms)"
        )
    return key


# --- seals an operator controls (shamir) and auto-unseal (pkcs11, awskms) --------------------------
# khoa_meta holds, besides barrier_check: seal_type (which of these backends sealed the root key),
# seal_shamir (JSON, never a share: the split's shares and threshold, and root_key_wrapped, the root key
# sealed under the unseal key the shares reconstruct) and seal_wrapped (the wrapped root key and where
# its wrapping key lives, JSON).
#
# Shamir, as in Vault: the shares reconstruct an *unseal key* (random, 256 bits), never the root key;
# the unseal key opens root_key_wrapped (AES-256-GCM, the barrier's format, bound to this place). A rekey
# makes a new unseal key and re-wraps the same root key in one statement, so the old shares open nothing
# stored any more (a backup taken before the rekey still opens with them: the root key is unchanged).
# An installation initialised before unseal keys has no root_key_wrapped: its shares reconstruct the root
# key itself, accepted as such until its next rekey, which converts it.
WRAPPED_BACKENDS = ("pkcs11", "awskms")
_SEAL_TYPE = "seal_type"
_SEAL_SHAMIR = "seal_shamir"
_SEAL_WRAPPED = "seal_wrapped"
_ROOT_KEY_BINDING = "khoa_meta:seal_shamir:root_key_wrapped"
_provided = threading.local()


class Sealed(SealError):
    """The shamir backend's root key has not been reconstructed from shares in this process."""


@contextlib.contextmanager
def provided_root_key(key: bytes) -> Iterator[None]:
    """Within the block, the shamir backend's load_barrier (on this thread) uses ``key``, what an unseal
    reconstructed from shares (the unseal key, which opens the stored root key: see shamir_root_key);
    it is kept nowhere else than in the barrier built from the root key it opens."""
    _provided.key = key
    try:
        yield
    finally:
        _provided.key = None


def _provided_key() -> bytes:
    key: bytes | None = getattr(_provided, "key", None)
    if key is None:
        raise Sealed("the server is sealed: unseal it with `khoa operator unseal`")
    return key


def _meta_delete(conn: object, name: str) -> None:
    conn.execute(delete(schema.meta).where(schema.meta.c.name == name))  # type: ignore[attr-defined]


def seal_type(engine: Engine) -> str | None:
    """Which operator-controlled or auto-unseal backend sealed this database's root key (None: file or
    passphrase, or not initialised)."""
    value = _meta_get(engine, _SEAL_TYPE)
    return value.decode() if value is not None else None


def _require_seal_type(engine: Engine, backend: str) -> None:
    stored = seal_type(engine)
    if stored == backend:
        return
    if stored is None and _meta_get(engine, "barrier_check") is None:
        raise SealError(f"not initialised: run `khoa operator init` first ({backend} seal backend)")
    raise SealError(
        f"this database's root key is sealed by the {stored or 'file or passphrase'} backend, not "
        f"{backend} (start with the backend it was created with, or `khoa operator migrate-seal`)"
    )


def seal_wrapper(settings: Settings) -> KeyWrapper:
    if settings.seal_backend == "awskms":
        return AwsKmsWrapper(
            settings.seal_awskms_key_id,
            endpoint=settings.seal_awskms_endpoint,
            region=settings.seal_awskms_region,
        )
    if settings.seal_backend == "pkcs11":
        return Pkcs11Wrapper(
            settings.seal_pkcs11_module,
            settings.seal_pkcs11_token_label,
            settings.seal_pkcs11_key_label,
            settings.seal_pkcs11_pin_env,
        )
    raise SealError(f"{settings.seal_backend!r} is not an auto-unseal backend (pkcs11 or awskms)")


def _load_wrapped_key(engine: Engine, wrapper: KeyWrapper, *, create: bool) -> bytes:
    stored = _meta_get(engine, _SEAL_WRAPPED)
    if stored is None:
        if not create:
            raise SealError(f"no root key wrapped by the {wrapper.backend} backend in this database")
        if _meta_get(engine, "barrier_check") is not None or seal_type(engine) is not None:
            _require_seal_type(engine, wrapper.backend)  # raises: sealed by another backend
        key = os.urandom(ROOT_KEY_BYTES)
        record = _wrapped_record(wrapper, key)
        with contextlib.suppress(IntegrityError), engine.begin() as conn:
            conn.execute(insert(schema.meta).values(name=_SEAL_WRAPPED, value=record))
            conn.execute(insert(schema.meta).values(name=_SEAL_TYPE, value=wrapper.backend.encode()))
        stored = _meta_get(engine, _SEAL_WRAPPED)  # another node may have won the race: use its key
        assert stored is not None
    _require_seal_type(engine, wrapper.backend)
    blob = base64.b64decode(json.loads(stored)["blob"])
    return wrapper.unwrap(blob)


def _wrapped_record(wrapper: KeyWrapper, key: bytes) -> bytes:
    return json.dumps(
        {
            "backend": wrapper.backend,
            **wrapper.describe(),
            "blob": base64.b64encode(wrapper.wrap(key)).decode(),
        }
    ).encode()


@dataclass(frozen=True)
class ShamirConfig:
    shares: int
    threshold: int
    # The root key sealed under the unseal key the shares reconstruct; None for an installation
    # initialised before unseal keys, whose shares reconstruct the root key itself (until a rekey).
    wrapped_root_key: bytes | None = None


def _shamir_state(engine: Engine) -> tuple[bytes, ShamirConfig]:
    """The stored seal_shamir value as it is (for a compare-and-swap) and parsed."""
    _require_seal_type(engine, "shamir")
    raw = _meta_get(engine, _SEAL_SHAMIR)
    if raw is None:
        raise SealError("the shamir seal configuration is missing from this database")
    try:
        parsed = json.loads(raw)
        wrapped = parsed.get("root_key_wrapped")
        config = ShamirConfig(
            int(parsed["shares"]),
            int(parsed["threshold"]),
            base64.b64decode(wrapped, validate=True) if wrapped is not None else None,
        )
    except (ValueError, TypeError, KeyError, AttributeError):
        raise SealError("the shamir seal configuration in this database is malformed") from None
    return raw, config


def shamir_config(engine: Engine) -> ShamirConfig:
    return _shamir_state(engine)[1]


def _shamir_record(shares: int, threshold: int, unseal_key: bytes, root_key: bytes) -> bytes:
    wrapped = Barrier(unseal_key).seal(root_key, _ROOT_KEY_BINDING)
    return json.dumps(
        {"shares": shares, "threshold": threshold, "root_key_wrapped": base64.b64encode(wrapped).decode()}
    ).encode()


def _new_shamir_seal(root_key: bytes, shares: int, threshold: int) -> tuple[bytes, list[bytes]]:
    """A new random unseal key for ``root_key``: the seal_shamir value (the root key wrapped under it)
    and the unseal key's shares. Nothing is stored."""
    unseal_key = os.urandom(ROOT_KEY_BYTES)
    parts = shamir.split(unseal_key, shares, threshold)
    return _shamir_record(shares, threshold, unseal_key, root_key), parts


def _check_key(engine: Engine, key: bytes) -> Barrier:
    """The barrier of the root key ``key`` if it opens this database's check value; SealError otherwise."""
    check = _meta_get(engine, "barrier_check")
    if check is None:
        raise SealError("not initialised: this database holds no root key check value")
    try:
        barrier = Barrier(key)
        barrier.open(check, _CHECK_BINDING)
    except (BarrierError, ValueError):
        raise SealError("the key does not open this database's root key check value") from None
    return barrier


def shamir_root_key(engine: Engine, secret: bytes, config: ShamirConfig | None = None) -> bytes:
    """The root key that ``secret`` (what shamir.combine made of a quorum of shares) opens: the secret
    is the unseal key, which unwraps the stored root key; for an installation initialised before unseal
    keys (nothing wrapped yet), the root key itself. Checked against the barrier check value; raises
    SealError otherwise (a root key given where an unseal key is expected is refused)."""
    if config is None:
        config = shamir_config(engine)
    if config.wrapped_root_key is None:
        key = secret
    else:
        try:
            key = Barrier(secret).open(config.wrapped_root_key, _ROOT_KEY_BINDING)
        except (BarrierError, ValueError):
            raise SealError("the shares do not reconstruct this database's unseal key") from None
    try:
        _check_key(engine, key)
    except SealError:
        raise SealError("the shares do not reconstruct this database's root key") from None
    return key


def check_root_key(engine: Engine, key: bytes) -> Barrier:
    """The barrier of the root key that what an operator supplied opens, checked against this database;
    raises SealError otherwise. With the shamir seal ``key`` is what a quorum of shares reconstructs
    (see shamir_root_key: the unseal key); with any other seal, the root key itself."""
    if seal_type(engine) == "shamir":
        return Barrier(shamir_root_key(engine, key))
    return _check_key(engine, key)


def init_shamir(
    settings: Settings, engine: Engine, shares: int, threshold: int
) -> tuple[list[bytes], NewAccount | None]:
    """Create the root key of a new installation and an unseal key that wraps it, split into shares
    (returned once, stored nowhere); creates the first account too."""
    if _meta_get(engine, "barrier_check") is not None or seal_type(engine) is not None:
        raise SealError("already initialised: this database holds data sealed under a root key")
    key = os.urandom(ROOT_KEY_BYTES)
    record, parts = _new_shamir_seal(key, shares, threshold)
    barrier = Barrier(key)
    try:
        with engine.begin() as conn:
            conn.execute(insert(schema.meta).values(name=_SEAL_TYPE, value=b"shamir"))
            conn.execute(insert(schema.meta).values(name=_SEAL_SHAMIR, value=record))
            conn.execute(
                insert(schema.meta).values(
                    name="barrier_check", value=barrier.seal(_CHECK_PLAINTEXT, _CHECK_BINDING)
                )
            )
    except IntegrityError:
        raise SealError("already initialised (another process initialised it first)") from None
    return parts, ensure_first_account(settings, engine, barrier)


@dataclass(frozen=True)
class Rekeyed:
    shares: list[bytes]
    # The old shares were of the root key itself (initialised before unseal keys): servers refuse them
    # from now on, but they still reconstruct the root key, which no rekey changes.
    converted: bool


def rekey_shamir(engine: Engine, old_shares: list[bytes], shares: int, threshold: int) -> Rekeyed:
    """A new unseal key (split into the returned shares) for the same root key, stored wrapped under it
    in place of the old one in one statement: the old shares open nothing stored any more. Data is not
    re-encrypted, so a backup taken before holds the old wrapping, which the old shares still open.
    The new shares are returned only once stored; a concurrent rekey or migrate-seal makes this one
    fail, changing nothing."""
    raw, config = _shamir_state(engine)
    root_key = shamir_root_key(engine, shamir.combine(old_shares), config)
    record, parts = _new_shamir_seal(root_key, shares, threshold)
    with engine.begin() as conn:
        swapped = conn.execute(
            update(schema.meta)
            .where(schema.meta.c.name == _SEAL_SHAMIR, schema.meta.c.value == raw)
            .values(value=record)
        )
        if swapped.rowcount != 1:
            raise SealError(
                "the shamir seal changed while rekeying (another rekey or migrate-seal): nothing was "
                "changed here; rekey again with the current shares"
            )
    return Rekeyed(parts, converted=config.wrapped_root_key is None)


def migrate_seal(
    settings: Settings, engine: Engine, key: bytes, to: str, *, shares: int = 0, threshold: int = 0
) -> list[bytes]:
    """Re-seal the root key ``key`` (already checked against this database) for backend ``to``; the
    data stays as it is. Returns new shares when ``to`` is shamir (of a new unseal key that wraps the
    root key). The old backend's artefacts are removed, only once the new seal is durable: a root key
    file is fsynced (file and directory) before the transaction that deletes the old seal's records
    commits, and an old root key file is removed (durably) only after the new seal's commit."""
    _check_key(engine, key)
    key_file = settings.data_dir / ROOT_KEY_FILE
    new_shares: list[bytes] = []
    wrapped: bytes | None = None
    shamir_record: bytes | None = None
    if to == "shamir":
        shamir_record, new_shares = _new_shamir_seal(key, shares, threshold)
    elif to in WRAPPED_BACKENDS:
        wrapped = _wrapped_record(seal_wrapper(replace(settings, seal_backend=to)), key)
    elif to == "file":
        try:
            write_private_file(key_file, key)  # never over anything by that name
        except FileExistsError:
            raise SealError(f"{key_file} exists already: move it away first") from None
    else:
        raise SealError(f"cannot migrate to {to!r} (choose shamir, pkcs11, awskms or file)")
    with engine.begin() as conn:
        for name in (_SEAL_TYPE, _SEAL_SHAMIR, _SEAL_WRAPPED, "passphrase_salt"):
            _meta_delete(conn, name)
        if to != "file":
            conn.execute(insert(schema.meta).values(name=_SEAL_TYPE, value=to.encode()))
        if shamir_record is not None:
            conn.execute(insert(schema.meta).values(name=_SEAL_SHAMIR, value=shamir_record))
        if wrapped is not None:
            conn.execute(insert(schema.meta).values(name=_SEAL_WRAPPED, value=wrapped))
    if to != "file":
        # The key must not stay readable in a file once another backend seals it (nor come back
        # after a crash).
        remove_file_durably(key_file)
    return new_shares


def current_root_key(settings: Settings, engine: Engine, shares: list[bytes] | None = None) -> bytes:
    """The root key from the configured backend (shamir: from ``shares``), checked against the database."""
    if settings.seal_backend == "shamir":
        if not shares:
            raise SealError("the shamir backend needs shares to recover the root key")
        return shamir_root_key(engine, shamir.combine(shares))
    key = _obtain_root_key(settings, engine, create=False)
    _check_key(engine, key)
    return key


def generate_access_key_id() -> str:
    alphabet = string.ascii_uppercase + string.digits
    return "AKIA" + "".join(secrets.choice(alphabet) for _ in range(16))


def generate_secret_access_key() -> str:
    alphabet = string.ascii_letters + string.digits + "+/"
    return "".join(secrets.choice(alphabet) for _ in range(40))


def generate_account_id() -> str:
    return str(secrets.randbelow(9 * 10**11) + 10**11)


def access_key_binding(access_key_id: str) -> str:
    return f"access_keys:{access_key_id}"


def create_account(
    engine: Engine,
    barrier: Barrier,
    *,
    account_id: str,
    name: str,
    access_key_id: str = "",
    secret_access_key: str = "",
) -> NewAccount:
    access_key_id = access_key_id or generate_access_key_id()
    secret_access_key = secret_access_key or generate_secret_access_key()
    now = wall_clock().timestamp()
    with engine.begin() as conn:
        conn.execute(insert(schema.accounts).values(account_id=account_id, name=name, created_at=now))
        conn.execute(
            insert(schema.access_keys).values(
                access_key_id=access_key_id,
                account_id=account_id,
                secret_sealed=barrier.seal(secret_access_key.encode(), access_key_binding(access_key_id)),
                principal_kind="Root",
                principal_name="root",
                status="Active",
                created_at=now,
            )
        )
    return NewAccount(account_id, access_key_id, secret_access_key)


def first_account_id(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return first_account(conn)


def ensure_first_account(settings: Settings, engine: Engine, barrier: Barrier) -> NewAccount | None:
    """Create the first account on an empty database; returns it only when it was created now."""
    if first_account_id(engine) is not None:
        return None
    account_id = settings.account_id or generate_account_id()
    if not (len(account_id) == 12 and account_id.isdigit()):
        raise SealError("KHOA_ACCOUNT_ID must be 12 digits")
    account = create_account(
        engine,
        barrier,
        account_id=account_id,
        name="default",
        access_key_id=settings.root_access_key_id,
        secret_access_key=settings.root_secret_access_key,
    )
    write_root_credentials(settings.data_dir, account)
    return account


def write_root_credentials(data_dir: Path, account: NewAccount) -> Path:
    """The first account's root credentials, durably (0600, fsynced): the account is committed
    already, and nothing shows its secret again."""
    path = data_dir / ROOT_CREDENTIALS_FILE
    write_private_file(
        path,
        (
            f"[default]\naws_account_id = {account.account_id}\n"
            f"aws_access_key_id = {account.access_key_id}\n"
            f"aws_secret_access_key = {account.secret_access_key}\n"
        ).encode(),
        replace=True,
    )
    return path
