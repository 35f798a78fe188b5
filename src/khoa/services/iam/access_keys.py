"""Access keys: CreateAccessKey, ListAccessKeys, UpdateAccessKey, DeleteAccessKey, GetAccessKeyLastUsed.

The secret is returned once, by CreateAccessKey, and stored only sealed by the barrier (bound to its key
ID), which lets Khoa verify signatures. Without UserName these act on the caller: an IAM user's own keys,
or the account root's keys when the root calls, as in AWS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection

from khoa.bootstrap import access_key_binding, generate_access_key_id, generate_secret_access_key
from khoa.protocol.context import RequestContext
from khoa.services.iam import errors, paging
from khoa.services.iam.store import (
    ACCESS_KEYS,
    USER,
    invalidate,
    lock_account,
    lock_principal,
    lookup_entity,
    now,
)
from khoa.storage import schema

MAX_KEYS = 2


@dataclass(frozen=True)
class Owner:
    kind: str  # access_keys.principal_kind: "IAMUser" or "Root"
    name: str  # access_keys.principal_name
    user_name: str | None  # what responses show as UserName
    principal_id: str = ""  # the IAM user's ID (none for the root)


def _owner(ctx: RequestContext, params: dict[str, Any]) -> Owner:
    principal = ctx.principal
    name = params.get("UserName")
    if name is None and principal.is_root:
        return Owner("Root", "root", None)
    if name is None:
        if principal.kind != "IAMUser":
            raise errors.needs_user_name()
        name = principal.name
    row = lookup_entity(ctx, USER, name)
    return Owner("IAMUser", row.name, row.name, row.principal_id)


def _keys_of(conn: Connection, account_id: str, owner: Owner) -> list[Any]:
    return list(
        conn.execute(
            select(ACCESS_KEYS)
            .where(ACCESS_KEYS.c.account_id == account_id)
            .where(ACCESS_KEYS.c.principal_kind == owner.kind)
            .where(func.lower(ACCESS_KEYS.c.principal_name) == owner.name.lower())
            .order_by(ACCESS_KEYS.c.created_at, ACCESS_KEYS.c.access_key_id)
        ).all()
    )


def _metadata(row: Any, owner: Owner) -> dict[str, Any]:
    return {
        "UserName": owner.user_name,
        "AccessKeyId": row.access_key_id,
        "Status": row.status,
        "CreateDate": row.created_at,
    }


def create_access_key(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    owner = _owner(ctx, params)
    access_key_id = generate_access_key_id()
    secret = generate_secret_access_key()
    created = now(ctx)
    with ctx.runtime.engine.begin() as conn:
        if owner.principal_id:
            lock_principal(conn, owner.principal_id)
        else:
            lock_account(conn, ctx.account_id)
        conn.execute(
            insert(ACCESS_KEYS).values(
                access_key_id=access_key_id,
                account_id=ctx.account_id,
                secret_sealed=ctx.runtime.barrier.seal(secret.encode(), access_key_binding(access_key_id)),
                principal_kind=owner.kind,
                principal_name=owner.name,
                status="Active",
                created_at=created,
            )
        )
        # Counted after the insert, inside its transaction: concurrent creations cannot both fit.
        if len(_keys_of(conn, ctx.account_id, owner)) > MAX_KEYS:
            raise errors.quota("AccessKeysPerUser", MAX_KEYS)
    invalidate(ctx)
    return {
        "AccessKey": {
            "UserName": owner.user_name,
            "AccessKeyId": access_key_id,
            "Status": "Active",
            "SecretAccessKey": secret,
            "CreateDate": created,
        }
    }


def list_access_keys(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    owner = _owner(ctx, params)
    with ctx.runtime.engine.connect() as conn:
        rows = _keys_of(conn, ctx.account_id, owner)
    page, meta = paging.paginate(rows, params)
    return {"AccessKeyMetadata": [_metadata(r, owner) for r in page], **meta}


def _owned_key(ctx: RequestContext, owner: Owner, access_key_id: str) -> Any:
    with ctx.runtime.engine.connect() as conn:
        for row in _keys_of(conn, ctx.account_id, owner):
            if row.access_key_id == access_key_id:
                return row
    raise errors.access_key_not_found(access_key_id)


def update_access_key(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    owner = _owner(ctx, params)
    status = params["Status"]
    if status not in ("Active", "Inactive"):
        raise errors.invalid_input(f"Invalid status {status}: an access key is Active or Inactive.")
    key = _owned_key(ctx, owner, params["AccessKeyId"])
    with ctx.runtime.engine.begin() as conn:
        conn.execute(
            update(ACCESS_KEYS).where(ACCESS_KEYS.c.access_key_id == key.access_key_id).values(status=status)
        )
    invalidate(ctx)
    return {}


def delete_access_key(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    owner = _owner(ctx, params)
    key = _owned_key(ctx, owner, params["AccessKeyId"])
    with ctx.runtime.engine.begin() as conn:
        conn.execute(delete(ACCESS_KEYS).where(ACCESS_KEYS.c.access_key_id == key.access_key_id))
    invalidate(ctx)
    return {}


def get_access_key_last_used(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    """When and where a key was last used, read from the audit trail (N/A when it never was)."""
    access_key_id = params["AccessKeyId"]
    events = schema.audit_events
    with ctx.runtime.engine.connect() as conn:
        key = conn.execute(
            select(ACCESS_KEYS)
            .where(ACCESS_KEYS.c.access_key_id == access_key_id)
            .where(ACCESS_KEYS.c.account_id == ctx.account_id)
        ).first()
    if key is None or key.principal_kind not in ("IAMUser", "Root"):
        raise errors.access_key_not_found(access_key_id)
    user_name = None if key.principal_kind == "Root" else lookup_entity(ctx, USER, key.principal_name).name
    with ctx.runtime.engine.connect() as conn:
        last = conn.execute(
            select(events.c.event_time, events.c.event_source, events.c.region)
            .where(events.c.access_key_id == access_key_id)
            .where(events.c.account_id == ctx.account_id)
            .order_by(events.c.seq.desc())
            .limit(1)
        ).first()
    used: dict[str, Any] = {"ServiceName": "N/A", "Region": "N/A"}
    if last is not None:
        used = {
            "LastUsedDate": last.event_time,
            "ServiceName": last.event_source.removesuffix(".amazonaws.com"),
            "Region": last.region,
        }
    return {"UserName": user_name, "AccessKeyLastUsed": used}


OPERATIONS = {
    "CreateAccessKey": create_access_key,
    "ListAccessKeys": list_access_keys,
    "UpdateAccessKey": update_access_key,
    "DeleteAccessKey": delete_access_key,
    "GetAccessKeyLastUsed": get_access_key_last_used,
}
