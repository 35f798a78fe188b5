"""Long-term access keys of IAM users and account roots, and when each was last used (read from the
audit trail). Secrets arrive here already sealed by the barrier; nothing here sees one in the clear."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, Row, delete, func, insert, select, update
from sqlalchemy.engine import Connection

from khoa.services.iam import errors
from khoa.services.iam.store.tables import ACCESS_KEYS, lock_account, lock_principal
from khoa.storage import fingerprints, schema

MAX_KEYS = 2


@dataclass(frozen=True)
class KeyOwner:
    """Whose keys: an IAM user or the account root, as ``access_keys`` records them."""

    kind: str  # access_keys.principal_kind: "IAMUser" or "Root"
    name: str  # access_keys.principal_name
    user_name: str | None  # what responses show as UserName
    principal_id: str = ""  # the IAM user's ID (none for the root)


class AccessKeyStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def create(
        self,
        account_id: str,
        owner: KeyOwner,
        access_key_id: str,
        secret_sealed: bytes,
        created_at: float,
        leak_fingerprints: fingerprints.Items = (),
    ) -> None:
        """Store a new active key with its ``leak_fingerprints`` (of its secret and id); more than
        ``MAX_KEYS`` for the owner raises LimitExceeded (counted after the insert, inside its
        transaction, so concurrent creations cannot both fit)."""
        with self._engine.begin() as conn:
            if owner.principal_id:
                lock_principal(conn, owner.principal_id)
            else:
                lock_account(conn, account_id)
            conn.execute(
                insert(ACCESS_KEYS).values(
                    access_key_id=access_key_id,
                    account_id=account_id,
                    secret_sealed=secret_sealed,
                    principal_kind=owner.kind,
                    principal_name=owner.name,
                    status="Active",
                    created_at=created_at,
                )
            )
            if len(_keys_of(conn, account_id, owner)) > MAX_KEYS:
                raise errors.quota("AccessKeysPerUser", MAX_KEYS)
            if leak_fingerprints:
                arn = f"arn:aws:iam::{account_id}:root"
                if owner.principal_id:
                    principals = schema.iam_principals
                    arn = conn.execute(
                        select(principals.c.arn).where(principals.c.principal_id == owner.principal_id)
                    ).scalar_one()
                resource = fingerprints.Resource(
                    account_id, "", fingerprints.ACCESS_KEY, access_key_id, arn, access_key_id=access_key_id
                )
                fingerprints.add(conn, resource, leak_fingerprints, created_at)

    def of_owner(self, account_id: str, owner: KeyOwner) -> list[Row[Any]]:
        """The owner's keys, oldest first."""
        with self._engine.connect() as conn:
            return _keys_of(conn, account_id, owner)

    def find(self, account_id: str, access_key_id: str) -> Row[Any] | None:
        """One of the account's long-term keys, whoever owns it."""
        with self._engine.connect() as conn:
            return conn.execute(
                select(ACCESS_KEYS)
                .where(ACCESS_KEYS.c.access_key_id == access_key_id)
                .where(ACCESS_KEYS.c.account_id == account_id)
            ).first()

    def set_status(self, access_key_id: str, status: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                update(ACCESS_KEYS).where(ACCESS_KEYS.c.access_key_id == access_key_id).values(status=status)
            )
            if status == "Active":  # a leaked value of the key works again (or still)
                fingerprints.revive(conn, access_key_id)
            else:
                fingerprints.retire(conn, access_key_id, time.time())

    def delete(self, access_key_id: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(delete(ACCESS_KEYS).where(ACCESS_KEYS.c.access_key_id == access_key_id))
            fingerprints.retire(conn, access_key_id, time.time())  # kept: a leak of it reads as former


def _keys_of(conn: Connection, account_id: str, owner: KeyOwner) -> list[Row[Any]]:
    return list(
        conn.execute(
            select(ACCESS_KEYS)
            .where(ACCESS_KEYS.c.account_id == account_id)
            .where(ACCESS_KEYS.c.principal_kind == owner.kind)
            .where(func.lower(ACCESS_KEYS.c.principal_name) == owner.name.lower())
            .order_by(ACCESS_KEYS.c.created_at, ACCESS_KEYS.c.access_key_id)
        ).all()
    )
