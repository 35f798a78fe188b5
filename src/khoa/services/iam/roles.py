"""Roles: CreateRole, GetRole, ListRoles, UpdateRole, UpdateRoleDescription, UpdateAssumeRolePolicy,
DeleteRole. STS AssumeRole reads the trust policy and MaxSessionDuration stored here."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from khoa.protocol.context import RequestContext
from khoa.services.iam import documents, errors, paging, tags, views
from khoa.services.iam.store import (
    ATTACHMENTS,
    INLINE,
    PRINCIPALS,
    ROLE,
    TAGS,
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

MAX_ROLES = 1000


def create_role(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    name = params["RoleName"]
    path = params.get("Path", "/")
    boundary = params.get("PermissionsBoundary")
    new_tags = params.get("Tags") or []
    arn = entity_arn(ctx.account_id, ROLE, path, name)
    if new_tags:
        tags.validate(new_tags)
    trust = params["AssumeRolePolicyDocument"]
    documents.validate_trust(trust)
    if boundary:
        lookup_policy(ctx, boundary, missing=errors.policy_not_attachable)
    role_id = new_id(ROLE)
    try:
        with ctx.runtime.engine.begin() as conn:
            if find(conn, ctx.account_id, ROLE, name) is not None:
                raise errors.already_exists(f"Role with name {name} already exists.")
            if count(conn, ctx.account_id, ROLE) >= MAX_ROLES:
                raise errors.quota("RolesPerAccount", MAX_ROLES)
            conn.execute(
                insert(PRINCIPALS).values(
                    principal_id=role_id,
                    account_id=ctx.account_id,
                    kind=ROLE,
                    name=name,
                    name_lower=name.lower(),
                    path=path,
                    arn=arn,
                    created_at=now(ctx),
                    description=params.get("Description"),
                    assume_role_policy=trust,
                    max_session_duration=params.get("MaxSessionDuration", views.DEFAULT_MAX_SESSION),
                    permissions_boundary=boundary,
                )
            )
            tags.write(conn, role_id, new_tags, "TagsPerRole")
            row = by_id(conn, role_id)
            assert row is not None
            result = views.role(row, conn)
    except IntegrityError:
        raise errors.already_exists(f"Role with name {name} already exists.") from None
    result.pop("RoleLastUsed", None)
    invalidate(ctx)
    return {"Role": result}


def get_role(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    row = lookup_entity(ctx, ROLE, params["RoleName"])
    with ctx.runtime.engine.connect() as conn:
        return {"Role": views.role(row, conn)}


def list_roles(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    prefix = params.get("PathPrefix")
    with ctx.runtime.engine.connect() as conn:
        rows = listing(conn, ctx.account_id, ROLE, prefix)
    page, meta = paging.paginate(rows, params)
    return {"Roles": [views.role(r) for r in page], **meta}


def _update(ctx: RequestContext, role_id: str, **values: Any) -> None:
    with ctx.runtime.engine.begin() as conn:
        conn.execute(update(PRINCIPALS).where(PRINCIPALS.c.principal_id == role_id).values(**values))


def update_role(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    row = lookup_entity(ctx, ROLE, params["RoleName"])
    values: dict[str, Any] = {}
    if "Description" in params:
        values["description"] = params["Description"]
    if "MaxSessionDuration" in params:
        values["max_session_duration"] = params["MaxSessionDuration"]
    if values:
        _update(ctx, row.principal_id, **values)
    return {}


def update_role_description(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    row = lookup_entity(ctx, ROLE, params["RoleName"])
    _update(ctx, row.principal_id, description=params["Description"])
    with ctx.runtime.engine.connect() as conn:
        updated = by_id(conn, row.principal_id)
        if updated is None:
            raise errors.entity_not_found(ROLE, params["RoleName"])
        return {"Role": views.role(updated, conn)}


def update_assume_role_policy(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    row = lookup_entity(ctx, ROLE, params["RoleName"])
    documents.validate_trust(params["PolicyDocument"])
    _update(ctx, row.principal_id, assume_role_policy=params["PolicyDocument"])
    invalidate(ctx)
    return {}


def delete_role(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    row = lookup_entity(ctx, ROLE, params["RoleName"])
    owner = row.principal_id
    with ctx.runtime.engine.begin() as conn:
        if conn.execute(select(INLINE.c.policy_name).where(INLINE.c.owner_id == owner).limit(1)).first():
            raise errors.delete_conflict("Cannot delete entity, must delete policies first.")
        if conn.execute(
            select(ATTACHMENTS.c.policy_arn).where(ATTACHMENTS.c.owner_id == owner).limit(1)
        ).first():
            raise errors.delete_conflict("Cannot delete entity, must detach all policies first.")
        conn.execute(delete(TAGS).where(TAGS.c.owner_id == owner))
        conn.execute(delete(PRINCIPALS).where(PRINCIPALS.c.principal_id == owner))
    invalidate(ctx)
    return {}


OPERATIONS = {
    "CreateRole": create_role,
    "GetRole": get_role,
    "ListRoles": list_roles,
    "UpdateRole": update_role,
    "UpdateRoleDescription": update_role_description,
    "UpdateAssumeRolePolicy": update_assume_role_policy,
    "DeleteRole": delete_role,
}
