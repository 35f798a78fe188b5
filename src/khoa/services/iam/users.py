"""Users: CreateUser, GetUser, ListUsers, UpdateUser, DeleteUser."""

from __future__ import annotations

from typing import Any

from khoa.protocol.context import RequestContext
from khoa.services.iam import errors, paging, tags, views
from khoa.services.iam.backend import IamBackend
from khoa.services.iam.lookups import lookup_entity, lookup_policy
from khoa.services.iam.names import USER, entity_arn, new_id


def create_user(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    name = params["UserName"]
    path = params.get("Path", "/")
    boundary = params.get("PermissionsBoundary")
    new_tags = params.get("Tags") or []
    if new_tags:
        tags.validate(new_tags)
    if boundary:
        lookup_policy(iam.store, ctx, boundary, missing=errors.policy_not_attachable)
    row, stored_tags = iam.store.entities.create(
        USER,
        ctx.account_id,
        name,
        {
            "principal_id": new_id(USER),
            "path": path,
            "arn": entity_arn(ctx.account_id, USER, path, name),
            "created_at": ctx.now.timestamp(),
            "permissions_boundary": boundary,
        },
        new_tags,
        "TagsPerUser",
    )
    return {"User": views.user_detail(row, stored_tags)}


def get_user(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    name = params.get("UserName")
    principal = ctx.principal
    if name is None:
        if principal.kind == "IAMUser":
            name = principal.name
        elif principal.is_root:
            created = iam.store.entities.account_created_at(ctx.account_id)
            return {"User": {"UserId": ctx.account_id, "Arn": principal.arn, "CreateDate": created or 0.0}}
        else:
            raise errors.needs_user_name()
    row = lookup_entity(iam.store, ctx, USER, name)
    return {"User": views.user_detail(row, iam.store.tags.of(row.principal_id))}


def list_users(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    rows = iam.store.entities.listing(ctx.account_id, USER, params.get("PathPrefix"))
    page, meta = paging.paginate(rows, params)
    return {"Users": [views.user(r) for r in page], **meta}


def update_user(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    row = lookup_entity(iam.store, ctx, USER, params["UserName"])
    new_name = params.get("NewUserName", row.name)
    new_path = params.get("NewPath", row.path)
    iam.store.entities.rename(row, new_name, new_path, entity_arn(ctx.account_id, USER, new_path, new_name))
    return {}


def delete_user(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    iam.store.entities.delete_user(lookup_entity(iam.store, ctx, USER, params["UserName"]))
    return {}


OPERATIONS = {
    "CreateUser": create_user,
    "GetUser": get_user,
    "ListUsers": list_users,
    "UpdateUser": update_user,
    "DeleteUser": delete_user,
}
