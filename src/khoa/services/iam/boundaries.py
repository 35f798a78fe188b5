"""Permissions boundaries: Put/Delete{User,Role}PermissionsBoundary. A boundary is a managed policy that
caps what the entity's identity policies can allow."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import update

from khoa.protocol.context import RequestContext
from khoa.services.iam import errors
from khoa.services.iam.store import PRINCIPALS, ROLE, USER, invalidate, lookup_entity, lookup_policy

Handler = Callable[[RequestContext, dict[str, Any]], dict[str, Any]]
_NAME_PARAM = {USER: "UserName", ROLE: "RoleName"}


def _set(ctx: RequestContext, principal_id: str, arn: str | None) -> None:
    with ctx.runtime.engine.begin() as conn:
        conn.execute(
            update(PRINCIPALS)
            .where(PRINCIPALS.c.principal_id == principal_id)
            .values(permissions_boundary=arn)
        )
    invalidate(ctx)


def put(kind: str) -> Handler:
    def handler(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
        arn = params["PermissionsBoundary"]
        owner = lookup_entity(ctx, kind, params[_NAME_PARAM[kind]])
        lookup_policy(ctx, arn, missing=errors.policy_not_attachable)
        _set(ctx, owner.principal_id, arn)
        return {}

    return handler


def remove(kind: str) -> Handler:
    def handler(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
        owner = lookup_entity(ctx, kind, params[_NAME_PARAM[kind]])
        _set(ctx, owner.principal_id, None)
        return {}

    return handler


OPERATIONS: dict[str, Handler] = {
    "PutUserPermissionsBoundary": put(USER),
    "DeleteUserPermissionsBoundary": remove(USER),
    "PutRolePermissionsBoundary": put(ROLE),
    "DeleteRolePermissionsBoundary": remove(ROLE),
}
