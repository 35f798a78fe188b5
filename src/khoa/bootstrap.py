"""First-start work and root-key loading, shared by the server and the operator CLI.

Runs once in the parent process before workers start: it migrates the schema, obtains the root key
from the configured seal backend, and creates the first account with its root credentials.
"""

from __future__ import annotations

import logging
import os
import secrets
import string
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError

from khoa.clock import wall_clock
from khoa.crypto.barrier import Barrier, BarrierError
from khoa.crypto.seal import SealError, derive_passphrase_key, load_or_create_file_key
from khoa.settings import Settings
from khoa.storage import schema

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
    if settings.seal_backend == "file":
        key_path = settings.data_dir / "root.key"
        if not key_path.exists():
            if not create:
                raise SealError(f"no root key at {key_path}")
            if _meta_get(engine, "barrier_check") is not None:
                # Creating a new key here could never open this database's data: refuse, change nothing.
                raise SealError(
                    f"no root key at {key_path}, but this database holds data sealed under one: restore "
                    "that root key file (or start with the seal backend the database was created with)"
                )
        key, created = load_or_create_file_key(settings.data_dir)
        if created:
            log.warning(
                "created a new root key in %s (file seal backend): anyone who can read this "
                "file can read every key and secret; use the passphrase backend in production",
                settings.data_dir / "root.key",
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
    else:
        raise SealError(f"unknown seal backend {settings.seal_backend!r} (choose file or passphrase)")
    barrier = Barrier(key)
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
        return conn.execute(
            select(schema.accounts.c.account_id).order_by(schema.accounts.c.created_at).limit(1)
        ).scalar()


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
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / ROOT_CREDENTIALS_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(
            f"[default]\naws_account_id = {account.account_id}\n"
            f"aws_access_key_id = {account.access_key_id}\n"
            f"aws_secret_access_key = {account.secret_access_key}\n"
        )
    return path
