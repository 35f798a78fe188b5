"""Permissions boundaries: Put/Delete{User,Role}PermissionsBoundary. A boundary is a managed policy that
caps what the entity's identity policies can allow."""

from __future__ import annotations

from typing import Any

from khoa.protocol.context import RequestContext
from khoa.services.base import Operation
from khoa.services.iam import errors
from khoa.services.iam.backend import IamBackend
from khoa.services.iam.lookups import lookup_entity, lookup_policy
from khoa.services.iam.names import ROLE, USER

_NAME_PARAM = {USER: "UserName", ROLE: "RoleName"}


def put(kind: str) -> Operation[IamBackend]:
    def handler(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
        arn = params["PermissionsBoundary"]
        owner = lookup_entity(iam.store, ctx, kind, params[_NAME_PARAM[kind]])
        lookup_policy(iam.store, ctx, arn, missing=errors.policy_not_attachable)
        iam.store.entities.set_boundary(owner.principal_id, arn)
        return {}

    return handler


def remove(kind: str) -> Operation[IamBackend]:
    def handler(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
        owner = lookup_entity(iam.store, ctx, kind, params[_NAME_PARAM[kind]])
        iam.store.entities.set_boundary(owner.principal_id, None)
        return {}

    return handler


OPERATIONS: dict[str, Operation[IamBackend]] = {
    "PutUserPermissionsBoundary": put(USER),
    "DeleteUserPermissionsBoundary": remove(USER),
    "PutRolePermissionsBoundary": put(ROLE),
    "DeleteRolePermissionsBoundary": remove(ROLE),
}
