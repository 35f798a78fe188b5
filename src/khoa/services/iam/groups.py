"""Groups and membership: CreateGroup, GetGroup, ListGroups, UpdateGroup, DeleteGroup, AddUserToGroup,
RemoveUserFromGroup, ListGroupsForUser."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from khoa.protocol.context import RequestContext
from khoa.services.iam import errors, paging, views
from khoa.services.iam.store import (
    ATTACHMENTS,
    GROUP,
    INLINE,
    MEMBERS,
    PRINCIPALS,
    USER,
    by_id,
    count,
    entity_arn,
    find,
    invalidate,
    listing,
    lock_principal,
    lookup_entity,
    new_id,
    now,
)

MAX_GROUPS = 300
MAX_GROUPS_PER_USER = 10


def create_group(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    name = params["GroupName"]
    path = params.get("Path", "/")
    arn = entity_arn(ctx.account_id, GROUP, path, name)
    group_id = new_id(GROUP)
    try:
        with ctx.runtime.engine.begin() as conn:
            if find(conn, ctx.account_id, GROUP, name) is not None:
                raise errors.already_exists(f"Group with name {name} already exists.")
            if count(conn, ctx.account_id, GROUP) >= MAX_GROUPS:
                raise errors.quota("GroupsPerAccount", MAX_GROUPS)
            conn.execute(
                insert(PRINCIPALS).values(
                    principal_id=group_id,
                    account_id=ctx.account_id,
                    kind=GROUP,
                    name=name,
                    name_lower=name.lower(),
                    path=path,
                    arn=arn,
                    created_at=now(ctx),
                )
            )
            row = by_id(conn, group_id)
            assert row is not None
    except IntegrityError:
        raise errors.already_exists(f"Group with name {name} already exists.") from None
    return {"Group": views.group(row)}


def _members(conn: Any, group_id: str) -> list[Any]:
    return list(
        conn.execute(
            select(PRINCIPALS)
            .join(MEMBERS, MEMBERS.c.user_id == PRINCIPALS.c.principal_id)
            .where(MEMBERS.c.group_id == group_id)
            .order_by(PRINCIPALS.c.name_lower)
        ).all()
    )


def get_group(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    row = lookup_entity(ctx, GROUP, params["GroupName"])
    with ctx.runtime.engine.connect() as conn:
        users = _members(conn, row.principal_id)
    page, meta = paging.paginate(users, params)
    return {"Group": views.group(row), "Users": [views.user(u) for u in page], **meta}


def list_groups(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    prefix = params.get("PathPrefix")
    with ctx.runtime.engine.connect() as conn:
        rows = listing(conn, ctx.account_id, GROUP, prefix)
    page, meta = paging.paginate(rows, params)
    return {"Groups": [views.group(r) for r in page], **meta}


def update_group(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    row = lookup_entity(ctx, GROUP, params["GroupName"])
    new_name = params.get("NewGroupName", row.name)
    new_path = params.get("NewPath", row.path)
    new_arn = entity_arn(ctx.account_id, GROUP, new_path, new_name)
    try:
        with ctx.runtime.engine.begin() as conn:
            if new_name.lower() != row.name_lower and find(conn, ctx.account_id, GROUP, new_name):
                raise errors.already_exists(f"Group with name {new_name} already exists.")
            conn.execute(
                update(PRINCIPALS)
                .where(PRINCIPALS.c.principal_id == row.principal_id)
                .values(name=new_name, name_lower=new_name.lower(), path=new_path, arn=new_arn)
            )
    except IntegrityError:
        raise errors.already_exists(f"Group with name {new_name} already exists.") from None
    invalidate(ctx)
    return {}


def delete_group(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    row = lookup_entity(ctx, GROUP, params["GroupName"])
    owner = row.principal_id
    with ctx.runtime.engine.begin() as conn:
        if conn.execute(select(MEMBERS.c.user_id).where(MEMBERS.c.group_id == owner).limit(1)).first():
            raise errors.delete_conflict("Cannot delete entity, must remove users from group first.")
        if conn.execute(select(INLINE.c.policy_name).where(INLINE.c.owner_id == owner).limit(1)).first():
            raise errors.delete_conflict("Cannot delete entity, must delete policies first.")
        if conn.execute(
            select(ATTACHMENTS.c.policy_arn).where(ATTACHMENTS.c.owner_id == owner).limit(1)
        ).first():
            raise errors.delete_conflict("Cannot delete entity, must detach all policies first.")
        conn.execute(delete(PRINCIPALS).where(PRINCIPALS.c.principal_id == owner))
    invalidate(ctx)
    return {}


def add_user_to_group(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    group = lookup_entity(ctx, GROUP, params["GroupName"])
    with ctx.runtime.engine.connect() as conn:
        user = find(conn, ctx.account_id, USER, params["UserName"])
    if user is None:
        raise errors.entity_not_found(USER, params["UserName"])
    try:
        with ctx.runtime.engine.begin() as conn:
            lock_principal(conn, user.principal_id)
            conn.execute(insert(MEMBERS).values(group_id=group.principal_id, user_id=user.principal_id))
            memberships = conn.execute(
                select(func.count()).select_from(MEMBERS).where(MEMBERS.c.user_id == user.principal_id)
            ).scalar_one()
            if memberships > MAX_GROUPS_PER_USER:
                raise errors.quota("GroupsPerUser", MAX_GROUPS_PER_USER)
    except IntegrityError:
        pass  # added concurrently: the membership exists either way
    invalidate(ctx)
    return {}


def remove_user_from_group(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    group = lookup_entity(ctx, GROUP, params["GroupName"])
    with ctx.runtime.engine.connect() as conn:
        user = find(conn, ctx.account_id, USER, params["UserName"])
    if user is None:
        raise errors.entity_not_found(USER, params["UserName"])
    with ctx.runtime.engine.begin() as conn:
        removed = conn.execute(
            delete(MEMBERS)
            .where(MEMBERS.c.group_id == group.principal_id)
            .where(MEMBERS.c.user_id == user.principal_id)
        ).rowcount
    if not removed:
        raise errors.no_such_entity(f"User {user.name} is not in group {group.name}.")
    invalidate(ctx)
    return {}


def list_groups_for_user(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    user = lookup_entity(ctx, USER, params["UserName"])
    with ctx.runtime.engine.connect() as conn:
        rows = list(
            conn.execute(
                select(PRINCIPALS)
                .join(MEMBERS, MEMBERS.c.group_id == PRINCIPALS.c.principal_id)
                .where(MEMBERS.c.user_id == user.principal_id)
                .order_by(PRINCIPALS.c.name_lower)
            ).all()
        )
    page, meta = paging.paginate(rows, params)
    return {"Groups": [views.group(r) for r in page], **meta}


OPERATIONS = {
    "CreateGroup": create_group,
    "GetGroup": get_group,
    "ListGroups": list_groups,
    "UpdateGroup": update_group,
    "DeleteGroup": delete_group,
    "AddUserToGroup": add_user_to_group,
    "RemoveUserFromGroup": remove_user_from_group,
    "ListGroupsForUser": list_groups_for_user,
}
