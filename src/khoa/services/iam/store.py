"""Shared storage helpers: identifiers, ARNs, lookups by name (case-insensitive) and cache invalidation."""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Callable
from typing import Any

from sqlalchemy import Row, func, select
from sqlalchemy.engine import Connection

from khoa.protocol.context import RequestContext
from khoa.protocol.errors import AWSError
from khoa.services.iam import aws_managed, errors
from khoa.storage import schema

PRINCIPALS = schema.iam_principals
MEMBERS = schema.iam_group_members
INLINE = schema.iam_inline_policies
MANAGED = schema.iam_managed_policies
VERSIONS = schema.iam_policy_versions
ATTACHMENTS = schema.iam_attachments
TAGS = schema.iam_tags
ACCESS_KEYS = schema.access_keys

USER, GROUP, ROLE = "user", "group", "role"
_ID_PREFIX = {USER: "AIDA", ROLE: "AROA", GROUP: "AGPA", "policy": "ANPA"}
_ALNUM = string.ascii_uppercase + string.digits
_POLICY_ARN = re.compile(r"^arn:aws:iam::(\d{12}|aws):policy(/(?:[\x21-\x7e]*/)?)([\w+=,.@-]+)$")


def new_id(kind: str) -> str:
    return _ID_PREFIX[kind] + "".join(secrets.choice(_ALNUM) for _ in range(17))


# A user's, group's or role's ARN (account, kind, path, name): what SimulatePrincipalPolicy accepts.
ENTITY_ARN = re.compile(r"^arn:aws:iam::(\d{12}):(user|group|role)(/(?:.*/)?)([\w+=,.@-]+)$")


def entity_arn(account_id: str, kind: str, path: str, name: str) -> str:
    return f"arn:aws:iam::{account_id}:{kind}{path}{name}"


def policy_arn(account_id: str, path: str, name: str) -> str:
    return f"arn:aws:iam::{account_id}:policy{path}{name}"


def parse_policy_arn(arn: str) -> tuple[str, str, str]:
    """(account or "aws", path, name) of a managed policy ARN; InvalidInput when it is not one."""
    match = _POLICY_ARN.match(arn)
    if match is None:
        raise errors.invalid_input(f"ARN {arn} is not valid.")
    return match.group(1), match.group(2), match.group(3)


def find(conn: Connection, account_id: str, kind: str, name: str) -> Row[Any] | None:
    return conn.execute(
        select(PRINCIPALS)
        .where(PRINCIPALS.c.account_id == account_id)
        .where(PRINCIPALS.c.kind == kind)
        .where(PRINCIPALS.c.name_lower == name.lower())
    ).first()


def require(conn: Connection, account_id: str, kind: str, name: str) -> Row[Any]:
    row = find(conn, account_id, kind, name)
    if row is None:
        raise errors.entity_not_found(kind, name)
    return row


_TARGETS = "iam:targets"


def cached_entity(ctx: RequestContext, kind: str, name: str) -> Row[Any] | None:
    """The user, group or role ``name`` of the caller's account, looked up once per request.

    The authoriser (authz.py) looks targets up here before it authorises; handlers then get the same
    row through :func:`lookup_entity`, so they act on the entity that was authorised.
    """
    found: dict[tuple[str, str], Row[Any] | None] = ctx.extras.setdefault(_TARGETS, {})
    key = (kind, name.lower())
    if key not in found:
        with ctx.runtime.engine.connect() as conn:
            found[key] = find(conn, ctx.account_id, kind, name)
    return found[key]


def lookup_entity(ctx: RequestContext, kind: str, name: str) -> Row[Any]:
    """The (already authorised) user, group or role ``name``; NoSuchEntity when there is none."""
    row = cached_entity(ctx, kind, name)
    if row is None:
        raise errors.entity_not_found(kind, name)
    return row


def lookup_policy(
    ctx: RequestContext, arn: str, *, missing: Callable[[str], AWSError] = errors.policy_not_found
) -> Row[Any]:
    """A managed policy this account may use (its own, or an AWS-managed one); ``missing`` otherwise.
    Another account's policies are never looked up."""
    account, _path, _name = parse_policy_arn(arn)
    row = None
    if account == aws_managed.ACCOUNT:
        row = aws_managed.ensure(ctx.runtime.engine, arn)
    elif account == ctx.account_id:
        with ctx.runtime.engine.connect() as conn:
            row = find_policy(conn, arn)
    if row is None:
        raise missing(arn)
    return row


def by_id(conn: Connection, principal_id: str) -> Row[Any] | None:
    return conn.execute(select(PRINCIPALS).where(PRINCIPALS.c.principal_id == principal_id)).first()


def lock_principal(conn: Connection, principal_id: str) -> None:
    """Serialise changes to one entity's keys, attachments or memberships (a no-op on SQLite, where
    the transaction's first write already holds the database's single write lock)."""
    conn.execute(
        select(PRINCIPALS.c.principal_id).where(PRINCIPALS.c.principal_id == principal_id).with_for_update()
    )


def lock_account(conn: Connection, account_id: str) -> None:
    accounts = schema.accounts
    conn.execute(select(accounts.c.account_id).where(accounts.c.account_id == account_id).with_for_update())


def count(conn: Connection, account_id: str, kind: str) -> int:
    return int(
        conn.execute(
            select(func.count())
            .select_from(PRINCIPALS)
            .where(PRINCIPALS.c.account_id == account_id)
            .where(PRINCIPALS.c.kind == kind)
        ).scalar_one()
    )


def listing(conn: Connection, account_id: str, kind: str, path_prefix: str | None) -> list[Row[Any]]:
    query = (
        select(PRINCIPALS)
        .where(PRINCIPALS.c.account_id == account_id)
        .where(PRINCIPALS.c.kind == kind)
        .order_by(PRINCIPALS.c.name_lower)
    )
    rows = list(conn.execute(query).all())
    if path_prefix:
        rows = [r for r in rows if r.path.startswith(path_prefix)]
    return rows


def tags_of(conn: Connection, owner_id: str) -> list[dict[str, str]]:
    rows = conn.execute(
        select(TAGS.c.tag_key, TAGS.c.tag_value).where(TAGS.c.owner_id == owner_id).order_by(TAGS.c.tag_key)
    ).all()
    return [{"Key": r[0], "Value": r[1]} for r in rows]


def find_policy(conn: Connection, arn: str) -> Row[Any] | None:
    return conn.execute(select(MANAGED).where(MANAGED.c.arn == arn)).first()


def invalidate(ctx: RequestContext) -> None:
    """Make this process see a change to policies, memberships, keys or boundaries at once."""
    ctx.runtime.directory.clear()
    ctx.runtime.credentials.clear()


def now(ctx: RequestContext) -> float:
    return ctx.now.timestamp()
