"""Users: CreateUser, GetUser, ListUsers, UpdateUser, DeleteUser."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from khoa.protocol.context import RequestContext
from khoa.services.iam import errors, paging, tags, views
from khoa.services.iam.store import (
    ACCESS_KEYS,
    ATTACHMENTS,
    INLINE,
    MEMBERS,
    PRINCIPALS,
    TAGS,
    USER,
    by_id,
    count,
    entity_arn,
    find,
    invalidate,
    listing,
    lookup_entity,
    lookup_policy,
    new_id,
    now,
)
from khoa.storage import schema

MAX_USERS = 5000


def create_user(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    name = params["UserName"]
    path = params.get("Path", "/")
    boundary = params.get("PermissionsBoundary")
    new_tags = params.get("Tags") or []
    arn = entity_arn(ctx.account_id, USER, path, name)
    if new_tags:
        tags.validate(new_tags)
    if boundary:
        lookup_policy(ctx, boundary, missing=errors.policy_not_attachable)
    user_id = new_id(USER)
    try:
        with ctx.runtime.engine.begin() as conn:
            if find(conn, ctx.account_id, USER, name) is not None:
                raise errors.already_exists(f"User with name {name} already exists.")
            if count(conn, ctx.account_id, USER) >= MAX_USERS:
                raise errors.quota("UsersPerAccount", MAX_USERS)
            conn.execute(
                insert(PRINCIPALS).values(
                    principal_id=user_id,
                    account_id=ctx.account_id,
                    kind=USER,
                    name=name,
                    name_lower=name.lower(),
                    path=path,
                    arn=arn,
                    created_at=now(ctx),
                    permissions_boundary=boundary,
                )
            )
            tags.write(conn, user_id, new_tags, "TagsPerUser")
            row = by_id(conn, user_id)
            assert row is not None
            result = views.user(row, conn)
    except IntegrityError:
        raise errors.already_exists(f"User with name {name} already exists.") from None
    invalidate(ctx)
    return {"User": result}


def get_user(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    name = params.get("UserName")
    principal = ctx.principal
    if name is None:
        if principal.kind == "IAMUser":
            name = principal.name
        elif principal.is_root:
            with ctx.runtime.engine.connect() as conn:
                created = conn.execute(
                    select(schema.accounts.c.created_at).where(schema.accounts.c.account_id == ctx.account_id)
                ).scalar()
            return {"User": {"UserId": ctx.account_id, "Arn": principal.arn, "CreateDate": created or 0.0}}
        else:
            raise errors.needs_user_name()
    row = lookup_entity(ctx, USER, name)
    with ctx.runtime.engine.connect() as conn:
        return {"User": views.user(row, conn)}


def list_users(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    prefix = params.get("PathPrefix")
    with ctx.runtime.engine.connect() as conn:
        rows = listing(conn, ctx.account_id, USER, prefix)
    page, meta = paging.paginate(rows, params)
    return {"Users": [views.user(r) for r in page], **meta}


def update_user(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    row = lookup_entity(ctx, USER, params["UserName"])
    new_name = params.get("NewUserName", row.name)
    new_path = params.get("NewPath", row.path)
    new_arn = entity_arn(ctx.account_id, USER, new_path, new_name)
    try:
        with ctx.runtime.engine.begin() as conn:
            if new_name.lower() != row.name_lower and find(conn, ctx.account_id, USER, new_name):
                raise errors.already_exists(f"User with name {new_name} already exists.")
            conn.execute(
                update(PRINCIPALS)
                .where(PRINCIPALS.c.principal_id == row.principal_id)
                .values(name=new_name, name_lower=new_name.lower(), path=new_path, arn=new_arn)
            )
            conn.execute(
                update(ACCESS_KEYS)
                .where(ACCESS_KEYS.c.account_id == ctx.account_id)
                .where(ACCESS_KEYS.c.principal_kind == "IAMUser")
                .where(func.lower(ACCESS_KEYS.c.principal_name) == row.name_lower)
                .values(principal_name=new_name)
            )
    except IntegrityError:
        raise errors.already_exists(f"User with name {new_name} already exists.") from None
    invalidate(ctx)
    return {}


def _has(conn: Any, query: Any) -> bool:
    return conn.execute(query.limit(1)).first() is not None


def delete_user(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    row = lookup_entity(ctx, USER, params["UserName"])
    with ctx.runtime.engine.begin() as conn:
        if by_id(conn, row.principal_id) is None:
            raise errors.entity_not_found(USER, params["UserName"])
        owner = row.principal_id
        if _has(
            conn,
            select(ACCESS_KEYS.c.access_key_id)
            .where(ACCESS_KEYS.c.account_id == ctx.account_id)
            .where(ACCESS_KEYS.c.principal_kind == "IAMUser")
            .where(func.lower(ACCESS_KEYS.c.principal_name) == row.name_lower),
        ):
            raise errors.delete_conflict("Cannot delete entity, must delete access keys first.")
        if _has(conn, select(INLINE.c.policy_name).where(INLINE.c.owner_id == owner)):
            raise errors.delete_conflict("Cannot delete entity, must delete policies first.")
        if _has(conn, select(ATTACHMENTS.c.policy_arn).where(ATTACHMENTS.c.owner_id == owner)):
            raise errors.delete_conflict("Cannot delete entity, must detach all policies first.")
        if _has(conn, select(MEMBERS.c.group_id).where(MEMBERS.c.user_id == owner)):
            raise errors.delete_conflict("Cannot delete entity, must remove users from group first.")
        conn.execute(delete(TAGS).where(TAGS.c.owner_id == owner))
        conn.execute(delete(PRINCIPALS).where(PRINCIPALS.c.principal_id == owner))
    invalidate(ctx)
    return {}


OPERATIONS = {
    "CreateUser": create_user,
    "GetUser": get_user,
    "ListUsers": list_users,
    "UpdateUser": update_user,
    "DeleteUser": delete_user,
}
