"""Roles: CreateRole, GetRole, ListRoles, UpdateRole, UpdateRoleDescription, UpdateAssumeRolePolicy,
DeleteRole. STS AssumeRole reads the trust policy and MaxSessionDuration stored here."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row

from khoa.access.policy import Policy
from khoa.protocol.context import RequestContext
from khoa.services.iam import documents, errors, paging, tags, views
from khoa.services.iam.backend import IamBackend
from khoa.services.iam.lookups import lookup_entity, lookup_policy
from khoa.services.iam.names import ROLE, entity_arn, new_id


def _require_principals(iam: IamBackend, trust: Policy) -> None:
    """Every IAM user and role a trust policy names must exist, as AWS requires (it binds each to its
    unique ID on save, so a principal created later under the name does not inherit the trust)."""
    missing = iam.authorizer.directory.missing_principals(trust)
    if missing:
        raise errors.malformed(f'Invalid principal in policy: "AWS":"{missing[0]}"')


def create_role(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    name = params["RoleName"]
    path = params.get("Path", "/")
    boundary = params.get("PermissionsBoundary")
    new_tags = params.get("Tags") or []
    if new_tags:
        tags.validate(new_tags)
    trust = params["AssumeRolePolicyDocument"]
    _require_principals(iam, documents.validate_trust(trust))
    if boundary:
        lookup_policy(iam.store, ctx, boundary, missing=errors.policy_not_attachable)
    row, stored_tags = iam.store.entities.create(
        ROLE,
        ctx.account_id,
        name,
        {
            "principal_id": new_id(ROLE),
            "path": path,
            "arn": entity_arn(ctx.account_id, ROLE, path, name),
            "created_at": ctx.now.timestamp(),
            "description": params.get("Description"),
            "assume_role_policy": trust,
            "max_session_duration": params.get("MaxSessionDuration", views.DEFAULT_MAX_SESSION),
            "permissions_boundary": boundary,
        },
        new_tags,
        "TagsPerRole",
    )
    return {"Role": views.role_detail(row, stored_tags)}


def _detail(iam: IamBackend, row: Row[Any]) -> dict[str, Any]:
    """GetRole's Role: with its boundary, tags and RoleLastUsed."""
    out = views.role_detail(row, iam.store.tags.of(row.principal_id))
    out["RoleLastUsed"] = views.last_used(iam.store.entities.role_last_used(row.principal_id))
    return out


def get_role(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return {"Role": _detail(iam, lookup_entity(iam.store, ctx, ROLE, params["RoleName"]))}


def list_roles(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    rows = iam.store.entities.listing(ctx.account_id, ROLE, params.get("PathPrefix"))
    page, meta = paging.paginate(rows, params)
    return {"Roles": [views.role(r) for r in page], **meta}


def update_role(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    row = lookup_entity(iam.store, ctx, ROLE, params["RoleName"])
    values: dict[str, Any] = {}
    if "Description" in params:
        values["description"] = params["Description"]
    if "MaxSessionDuration" in params:
        values["max_session_duration"] = params["MaxSessionDuration"]
    if values:
        iam.store.entities.update_role(row.principal_id, values)
    return {}


def update_role_description(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    row = lookup_entity(iam.store, ctx, ROLE, params["RoleName"])
    iam.store.entities.update_role(row.principal_id, {"description": params["Description"]})
    updated = iam.store.entities.by_id(row.principal_id)
    if updated is None:
        raise errors.entity_not_found(ROLE, params["RoleName"])
    return {"Role": _detail(iam, updated)}


def update_assume_role_policy(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    row = lookup_entity(iam.store, ctx, ROLE, params["RoleName"])
    _require_principals(iam, documents.validate_trust(params["PolicyDocument"]))
    iam.store.entities.update_role(row.principal_id, {"assume_role_policy": params["PolicyDocument"]})
    return {}


def delete_role(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    iam.store.entities.delete_role(lookup_entity(iam.store, ctx, ROLE, params["RoleName"]))
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
