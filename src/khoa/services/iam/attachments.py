"""Managed policy attachments: Attach/Detach{User,Group,Role}Policy, ListAttached{User,Group,Role}Policies,
ListEntitiesForPolicy. At most ten managed policies per user, group or role."""

from __future__ import annotations

from typing import Any

from khoa.protocol.context import RequestContext
from khoa.services.base import Operation
from khoa.services.iam import errors, paging
from khoa.services.iam.backend import IamBackend
from khoa.services.iam.lookups import lookup_entity, lookup_policy
from khoa.services.iam.names import GROUP, LABEL, ROLE, USER

_NAME_PARAM = {USER: "UserName", GROUP: "GroupName", ROLE: "RoleName"}
_QUOTA = {USER: "PoliciesPerUser", GROUP: "PoliciesPerGroup", ROLE: "PoliciesPerRole"}


def attach(kind: str) -> Operation[IamBackend]:
    def handler(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
        arn = params["PolicyArn"]
        owner = lookup_entity(iam.store, ctx, kind, params[_NAME_PARAM[kind]])
        lookup_policy(iam.store, ctx, arn, missing=errors.policy_not_attachable)
        iam.store.permissions.attach(owner.principal_id, arn, _QUOTA[kind])
        return {}

    return handler


def detach(kind: str) -> Operation[IamBackend]:
    def handler(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
        arn = params["PolicyArn"]
        owner = lookup_entity(iam.store, ctx, kind, params[_NAME_PARAM[kind]])
        if not iam.store.permissions.detach(owner.principal_id, arn):
            raise errors.policy_not_found(arn)
        return {}

    return handler


def attached(kind: str) -> Operation[IamBackend]:
    def handler(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
        owner = lookup_entity(iam.store, ctx, kind, params[_NAME_PARAM[kind]])
        prefix = params.get("PathPrefix")
        items = [
            {"PolicyName": r.name, "PolicyArn": r.arn}
            for r in iam.store.permissions.attached(owner.principal_id)
            if not prefix or r.path.startswith(prefix)
        ]
        page, meta = paging.paginate(items, params)
        return {"AttachedPolicies": page, **meta}

    return handler


def list_entities_for_policy(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    policy = lookup_policy(iam.store, ctx, params["PolicyArn"])
    kinds = {"User": [USER], "Group": [GROUP], "Role": [ROLE]}.get(params.get("EntityFilter", ""))
    kinds = kinds or [USER, GROUP, ROLE]
    usage = params.get("PolicyUsageFilter")
    prefix = params.get("PathPrefix")
    found = iam.store.permissions.users_of_policy(
        ctx.account_id,
        policy.arn,
        as_attachment=usage in (None, "PermissionsPolicy"),
        as_boundary=usage in (None, "PermissionsBoundary"),
    )
    order = {USER: 0, GROUP: 1, ROLE: 2}
    rows = sorted(
        (r for r in found if r.kind in kinds and (not prefix or r.path.startswith(prefix))),
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


OPERATIONS: dict[str, Operation[IamBackend]] = {"ListEntitiesForPolicy": list_entities_for_policy}
for _kind, _label in LABEL.items():
    OPERATIONS[f"Attach{_label}Policy"] = attach(_kind)
    OPERATIONS[f"Detach{_label}Policy"] = detach(_kind)
    OPERATIONS[f"ListAttached{_label}Policies"] = attached(_kind)
