"""Groups and membership: CreateGroup, GetGroup, ListGroups, UpdateGroup, DeleteGroup, AddUserToGroup,
RemoveUserFromGroup, ListGroupsForUser."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row

from khoa.protocol.context import RequestContext
from khoa.services.iam import errors, paging, views
from khoa.services.iam.backend import IamBackend
from khoa.services.iam.lookups import lookup_entity
from khoa.services.iam.names import GROUP, USER, entity_arn, new_id


def create_group(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    name = params["GroupName"]
    path = params.get("Path", "/")
    row, _tags = iam.store.entities.create(
        GROUP,
        ctx.account_id,
        name,
        {
            "principal_id": new_id(GROUP),
            "path": path,
            "arn": entity_arn(ctx.account_id, GROUP, path, name),
            "created_at": ctx.now.timestamp(),
        },
    )
    return {"Group": views.group(row)}


def get_group(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    row = lookup_entity(iam.store, ctx, GROUP, params["GroupName"])
    page, meta = paging.paginate(iam.store.entities.members(row.principal_id), params)
    return {"Group": views.group(row), "Users": [views.user(u) for u in page], **meta}


def list_groups(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    rows = iam.store.entities.listing(ctx.account_id, GROUP, params.get("PathPrefix"))
    page, meta = paging.paginate(rows, params)
    return {"Groups": [views.group(r) for r in page], **meta}


def update_group(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    row = lookup_entity(iam.store, ctx, GROUP, params["GroupName"])
    new_name = params.get("NewGroupName", row.name)
    new_path = params.get("NewPath", row.path)
    iam.store.entities.rename(row, new_name, new_path, entity_arn(ctx.account_id, GROUP, new_path, new_name))
    return {}


def delete_group(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    iam.store.entities.delete_group(lookup_entity(iam.store, ctx, GROUP, params["GroupName"]))
    return {}


def _member(iam: IamBackend, ctx: RequestContext, name: str) -> Row[Any]:
    """The user being added or removed (membership is authorised on the group, so it is looked up
    here rather than by the authorisation table)."""
    user = iam.store.entities.find(ctx.account_id, USER, name)
    if user is None:
        raise errors.entity_not_found(USER, name)
    return user


def add_user_to_group(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    group = lookup_entity(iam.store, ctx, GROUP, params["GroupName"])
    user = _member(iam, ctx, params["UserName"])
    iam.store.entities.add_member(group.principal_id, user.principal_id)
    return {}


def remove_user_from_group(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    group = lookup_entity(iam.store, ctx, GROUP, params["GroupName"])
    user = _member(iam, ctx, params["UserName"])
    if not iam.store.entities.remove_member(group.principal_id, user.principal_id):
        raise errors.no_such_entity(f"User {user.name} is not in group {group.name}.")
    return {}


def list_groups_for_user(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    user = lookup_entity(iam.store, ctx, USER, params["UserName"])
    page, meta = paging.paginate(iam.store.entities.groups_of(user.principal_id), params)
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
