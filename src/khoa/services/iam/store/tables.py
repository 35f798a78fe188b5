"""The IAM tables and the statements several IAM stores run inside one transaction (locks, tags)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, delete, func, insert, select
from sqlalchemy.engine import Connection

from khoa.services.iam import errors
from khoa.storage import schema

PRINCIPALS = schema.iam_principals
MEMBERS = schema.iam_group_members
INLINE = schema.iam_inline_policies
MANAGED = schema.iam_managed_policies
VERSIONS = schema.iam_policy_versions
ATTACHMENTS = schema.iam_attachments
TAGS = schema.iam_tags
ACCESS_KEYS = schema.access_keys
ACCOUNTS = schema.accounts

MAX_TAGS = 50


def lock_principal(conn: Connection, principal_id: str) -> None:
    """Serialise changes to one entity's keys, attachments or memberships (a no-op on SQLite, where
    the transaction's first write already holds the database's single write lock)."""
    conn.execute(
        select(PRINCIPALS.c.principal_id).where(PRINCIPALS.c.principal_id == principal_id).with_for_update()
    )


def lock_account(conn: Connection, account_id: str) -> None:
    conn.execute(select(ACCOUNTS.c.account_id).where(ACCOUNTS.c.account_id == account_id).with_for_update())


def has_any(conn: Connection, query: Select[Any]) -> bool:
    return conn.execute(query.limit(1)).first() is not None


def tags_of(conn: Connection, owner_id: str) -> list[dict[str, str]]:
    """An entity's or policy's tags as IAM returns them, ordered by key."""
    rows = conn.execute(
        select(TAGS.c.tag_key, TAGS.c.tag_value).where(TAGS.c.owner_id == owner_id).order_by(TAGS.c.tag_key)
    ).all()
    return [{"Key": r[0], "Value": r[1]} for r in rows]


def write_tags(conn: Connection, owner_id: str, tags: list[dict[str, str]], quota_name: str) -> None:
    """Add or replace tags (keys are case-insensitive) inside the caller's transaction; more than
    ``MAX_TAGS`` raises the ``quota_name`` LimitExceeded, which rolls the whole transaction back."""
    if not tags:
        return
    conn.execute(
        delete(TAGS)
        .where(TAGS.c.owner_id == owner_id)
        .where(func.lower(TAGS.c.tag_key).in_([t["Key"].lower() for t in tags]))
    )
    conn.execute(
        insert(TAGS), [{"owner_id": owner_id, "tag_key": t["Key"], "tag_value": t["Value"]} for t in tags]
    )
    total = conn.execute(select(func.count()).select_from(TAGS).where(TAGS.c.owner_id == owner_id)).scalar()
    if (total or 0) > MAX_TAGS:
        raise errors.quota(quota_name, MAX_TAGS)


def remove_tags(conn: Connection, owner_id: str, keys: list[str]) -> None:
    if keys:
        conn.execute(
            delete(TAGS)
            .where(TAGS.c.owner_id == owner_id)
            .where(func.lower(TAGS.c.tag_key).in_([k.lower() for k in keys]))
        )
