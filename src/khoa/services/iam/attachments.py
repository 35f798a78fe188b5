"""Managed policy attachments: Attach/Detach{User,Group,Role}Policy, ListAttached{User,Group,Role}Policies,
ListEntitiesForPolicy. At most ten managed policies per user, group or role."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.exc import IntegrityError

from khoa.protocol.context import RequestContext
from khoa.services.iam import errors, paging
from khoa.services.iam.store import (
    ATTACHMENTS,
    GROUP,
    MANAGED,
    PRINCIPALS,
    ROLE,
    USER,
    invalidate,
    lock_principal,
    lookup_entity,
    lookup_policy,
)

Handler = Callable[[RequestContext, dict[str, Any]], dict[str, Any]]
MAX_ATTACHED = 10
_NAME_PARAM = {USER: "UserName", GROUP: "GroupName", ROLE: "RoleName"}
_QUOTA = {USER: "PoliciesPerUser", GROUP: "PoliciesPerGroup", ROLE: "PoliciesPerRole"}


def attach(kind: str) -> Handler:
    def handler(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
        arn = params["PolicyArn"]
        owner = lookup_entity(ctx, kind, params[_NAME_PARAM[kind]])
        lookup_policy(ctx, arn, missing=errors.policy_not_attachable)
        try:
            with ctx.runtime.engine.begin() as conn:
                lock_principal(conn, owner.principal_id)
                conn.execute(insert(ATTACHMENTS).values(owner_id=owner.principal_id, policy_arn=arn))
                attached = conn.execute(
                    select(func.count())
                    .select_from(ATTACHMENTS)
                    .where(ATTACHMENTS.c.owner_id == owner.principal_id)
                ).scalar_one()
                if attached > MAX_ATTACHED:
                    raise errors.quota(_QUOTA[kind], MAX_ATTACHED)
        except IntegrityError:
            pass  # attached concurrently: attaching twice is not an error
        invalidate(ctx)
        return {}

    return handler


def detach(kind: str) -> Handler:
    def handler(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
        arn = params["PolicyArn"]
        owner = lookup_entity(ctx, kind, params[_NAME_PARAM[kind]])
        with ctx.runtime.engine.begin() as conn:
            removed = conn.execute(
                delete(ATTACHMENTS)
                .where(ATTACHMENTS.c.owner_id == owner.principal_id)
                .where(ATTACHMENTS.c.policy_arn == arn)
            ).rowcount
        if not removed:
            raise errors.policy_not_found(arn)
        invalidate(ctx)
        return {}

    return handler


def attached(kind: str) -> Handler:
    def handler(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
        owner = lookup_entity(ctx, kind, params[_NAME_PARAM[kind]])
        prefix = params.get("PathPrefix")
        with ctx.runtime.engine.connect() as conn:
            rows = conn.execute(
                select(MANAGED.c.name, MANAGED.c.arn, MANAGED.c.path)
                .join(ATTACHMENTS, ATTACHMENTS.c.policy_arn == MANAGED.c.arn)
                .where(ATTACHMENTS.c.owner_id == owner.principal_id)
                .order_by(func.lower(MANAGED.c.name))
            ).all()
        items = [
            {"PolicyName": r.name, "PolicyArn": r.arn}
            for r in rows
            if not prefix or r.path.startswith(prefix)
        ]
        page, meta = paging.paginate(items, params)
        return {"AttachedPolicies": page, **meta}

    return handler


def list_entities_for_policy(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    policy = lookup_policy(ctx, params["PolicyArn"])
    kinds = {"User": [USER], "Group": [GROUP], "Role": [ROLE]}.get(params.get("EntityFilter", ""))
    kinds = kinds or [USER, GROUP, ROLE]
    usage = params.get("PolicyUsageFilter")
    prefix = params.get("PathPrefix")
    with ctx.runtime.engine.connect() as conn:
        found: dict[str, Any] = {}
        if usage in (None, "PermissionsPolicy"):
            for row in conn.execute(
                select(PRINCIPALS)
                .join(ATTACHMENTS, ATTACHMENTS.c.owner_id == PRINCIPALS.c.principal_id)
                .where(ATTACHMENTS.c.policy_arn == policy.arn)
                .where(PRINCIPALS.c.account_id == ctx.account_id)
            ).all():
                found[row.principal_id] = row
        if usage in (None, "PermissionsBoundary"):
            for row in conn.execute(
                select(PRINCIPALS)
                .where(PRINCIPALS.c.permissions_boundary == policy.arn)
                .where(PRINCIPALS.c.account_id == ctx.account_id)
            ).all():
                found[row.principal_id] = row
    order = {USER: 0, GROUP: 1, ROLE: 2}
    rows = sorted(
        (r for r in found.values() if r.kind in kinds and (not prefix or r.path.startswith(prefix))),
        key=lambda r: (order[r.kind], r.name_lower),
    )
    page, meta = paging.paginate(rows, params)
    result: dict[str, Any] = {"PolicyGroups": [], "PolicyUsers": [], "PolicyRoles": [], **meta}
    for row in page:
        if row.kind == USER:
            result["PolicyUsers"].append({"UserName": row.name, "UserId": row.principal_id})
        elif row.kind == GROUP:
            result["PolicyGroups"].append({"GroupName": row.name, "GroupId": row.principal_id})
        else:
            result["PolicyRoles"].append({"RoleName": row.name, "RoleId": row.principal_id})
    return result


OPERATIONS: dict[str, Handler] = {"ListEntitiesForPolicy": list_entities_for_policy}
for _kind, _label in ((USER, "User"), (GROUP, "Group"), (ROLE, "Role")):
    OPERATIONS[f"Attach{_label}Policy"] = attach(_kind)
    OPERATIONS[f"Detach{_label}Policy"] = detach(_kind)
    OPERATIONS[f"ListAttached{_label}Policies"] = attached(_kind)
