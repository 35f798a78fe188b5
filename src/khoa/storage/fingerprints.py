"""Writing leak fingerprints (schema.leak_fingerprints) inside the transactions that write the values.

Each store that writes a value Khoa holds (Secrets Manager versions, SecureString parameter versions,
IAM access keys, STS sessions) calls these with its own connection, so a value and its fingerprints
are committed together; the same store's writes that end a value's validity (labels moved away, a key
deactivated or deleted) record when. Values stored before fingerprints existed are fingerprinted by
the ``leaks.fingerprint_backfill`` job (khoa.services.leaks.backfill), through the same functions.

Fingerprints are computed by :class:`khoa.crypto.fingerprint.Fingerprinter`; its key is stored here
in ``khoa_meta``, sealed by the barrier (:func:`load_fingerprinter`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, Insert, insert, select, update
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from khoa.crypto.barrier import Barrier
from khoa.crypto.fingerprint import Fingerprinter, new_key
from khoa.storage import schema

log = logging.getLogger("khoa")

FINGERPRINTS = schema.leak_fingerprints
SECRET = "secret"
PARAMETER = "parameter"
ACCESS_KEY = "access-key"
STS_CREDENTIAL = "sts-credential"
_KEY_NAME = "leak_fingerprint_key"
_KEY_BINDING = "khoa_meta:leak_fingerprint_key"

Items = Sequence[tuple[str | None, str]]
"""A value's fingerprints: (field, fingerprint) pairs (field: a JSON leaf's path, or None)."""


def load_fingerprinter(engine: Engine, barrier: Barrier) -> Fingerprinter:
    """The installation's fingerprinter: its key opened from ``khoa_meta``, made on first use (another
    process making it at the same moment wins; both then use the stored one)."""
    meta = schema.meta
    with engine.connect() as conn:
        sealed = conn.execute(select(meta.c.value).where(meta.c.name == _KEY_NAME)).scalar()
    if sealed is None:
        try:
            with engine.begin() as conn:
                conn.execute(insert(meta).values(name=_KEY_NAME, value=barrier.seal(new_key(), _KEY_BINDING)))
        except IntegrityError:
            log.debug("another process stored the fingerprint key first")
        with engine.connect() as conn:
            sealed = conn.execute(select(meta.c.value).where(meta.c.name == _KEY_NAME)).scalar_one()
    return Fingerprinter(barrier.open(sealed, _KEY_BINDING))


@dataclass(frozen=True)
class Resource:
    """What fingerprint rows are of: one value-holding resource (and version) of one account."""

    account_id: str
    region: str  # "" for IAM and STS
    resource_type: str
    resource_id: str
    resource_arn: str
    version_id: str | None = None
    access_key_id: str | None = None
    expires_at: float | None = None


def row_id(resource: Resource, field: str | None, fingerprint: str) -> str:
    basis = "\n".join(
        (resource.resource_type, resource.resource_id, resource.version_id or "", field or "", fingerprint)
    )
    return hashlib.sha256(basis.encode()).hexdigest()


def add(
    conn: Connection, resource: Resource, items: Items, now: float, invalid_since: float | None = None
) -> None:
    """Record ``items`` as fingerprints of ``resource`` (rows already there are left as they are)."""
    rows = [
        {
            "row_id": row_id(resource, field, fingerprint),
            "account_id": resource.account_id,
            "fingerprint": fingerprint,
            "region": resource.region,
            "resource_type": resource.resource_type,
            "resource_id": resource.resource_id,
            "resource_arn": resource.resource_arn,
            "version_id": resource.version_id,
            "field": field,
            "access_key_id": resource.access_key_id,
            "created_at": now,
            "invalid_since": invalid_since,
            "expires_at": resource.expires_at,
        }
        for field, fingerprint in items
    ]
    if rows:
        conn.execute(_insert_ignoring_duplicates(conn), rows)


def _insert_ignoring_duplicates(conn: Connection) -> Insert:
    dialect = conn.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(FINGERPRINTS).on_conflict_do_nothing(index_elements=["row_id"])
    if dialect == "sqlite":
        return sqlite.insert(FINGERPRINTS).on_conflict_do_nothing(index_elements=["row_id"])
    return mysql.insert(FINGERPRINTS).prefix_with("IGNORE")


def add_secret_version(conn: Connection, secret_id: str, version_id: str, items: Items, now: float) -> None:
    """Fingerprints of a Secrets Manager version just written (the secret's row gives its account,
    Region and ARN)."""
    if not items:
        return
    secrets = schema.sm_secrets
    row = conn.execute(
        select(secrets.c.account_id, secrets.c.region, secrets.c.arn).where(secrets.c.secret_id == secret_id)
    ).first()
    if row is None:
        return
    add(conn, Resource(row.account_id, row.region, SECRET, secret_id, row.arn, version_id), items, now)


def retire(conn: Connection, resource_id: str, at: float, version_ids: Iterable[str] | None = None) -> None:
    """The values of ``resource_id`` (only of ``version_ids`` when given) stopped working at ``at``
    (kept if they had stopped already)."""
    statement = (
        update(FINGERPRINTS)
        .where(FINGERPRINTS.c.resource_id == resource_id)
        .where(FINGERPRINTS.c.invalid_since.is_(None))
    )
    if version_ids is not None:
        versions = list(version_ids)
        if not versions:
            return
        statement = statement.where(FINGERPRINTS.c.version_id.in_(versions))
    conn.execute(statement.values(invalid_since=at))


def revive(conn: Connection, resource_id: str, version_ids: Iterable[str] | None = None) -> None:
    """The values of ``resource_id`` (of ``version_ids``) work again (a label moved back, a key
    reactivated)."""
    statement = (
        update(FINGERPRINTS)
        .where(FINGERPRINTS.c.resource_id == resource_id)
        .where(FINGERPRINTS.c.invalid_since.is_not(None))
    )
    if version_ids is not None:
        versions = list(version_ids)
        if not versions:
            return
        statement = statement.where(FINGERPRINTS.c.version_id.in_(versions))
    conn.execute(statement.values(invalid_since=None))


def renamed(conn: Connection, old_arn: str, new_arn: str) -> None:
    """A resource's ARN changed (an IAM user renamed or moved): its rows name the new one."""
    if old_arn != new_arn:
        conn.execute(
            update(FINGERPRINTS).where(FINGERPRINTS.c.resource_arn == old_arn).values(resource_arn=new_arn)
        )


def labels_moved(
    conn: Connection, secret_id: str, before: dict[str, str], after: dict[str, str], now: float
) -> None:
    """A secret's labels went from ``before`` to ``after`` ({label: version_id}): versions left without
    any label stopped working now; versions that got one back work again."""
    held, holding = set(before.values()), set(after.values())
    retire(conn, secret_id, now, held - holding)
    revive(conn, secret_id, holding - held)
