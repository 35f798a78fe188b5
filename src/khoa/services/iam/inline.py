"""Inline policies of users, groups and roles: Put/Get/Delete/List{User,Group,Role}Policy/Policies.

Documents are validated as identity policies and kept as written; Get returns them URL-encoded as AWS
does. The combined size of an entity's inline policies is limited (2,048 / 5,120 / 10,240 characters
other than whitespace for a user / group / role).
"""

from __future__ import annotations

from typing import Any

from khoa.protocol.context import RequestContext
from khoa.services.base import Operation
from khoa.services.iam import documents, errors, paging
from khoa.services.iam.backend import IamBackend
from khoa.services.iam.lookups import lookup_entity
from khoa.services.iam.names import GROUP, LABEL, ROLE, USER

_NAME_PARAM = {USER: "UserName", GROUP: "GroupName", ROLE: "RoleName"}


def put(kind: str) -> Operation[IamBackend]:
    def handler(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
        owner = lookup_entity(iam.store, ctx, kind, params[_NAME_PARAM[kind]])
        document = params["PolicyDocument"]
        documents.validate_identity(document)
        iam.store.permissions.put_inline(owner, params["PolicyName"], document, documents.INLINE_SIZE[kind])
        return {}

    return handler


def get(kind: str) -> Operation[IamBackend]:
    def handler(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
        owner = lookup_entity(iam.store, ctx, kind, params[_NAME_PARAM[kind]])
        policy_name = params["PolicyName"]
        document = iam.store.permissions.inline_document(owner.principal_id, policy_name)
        if document is None:
            raise errors.inline_policy_not_found(kind, policy_name)
        return {
            _NAME_PARAM[kind]: owner.name,
            "PolicyName": policy_name,
            "PolicyDocument": documents.encode(document),
        }

    return handler


def remove(kind: str) -> Operation[IamBackend]:
    def handler(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
        owner = lookup_entity(iam.store, ctx, kind, params[_NAME_PARAM[kind]])
        policy_name = params["PolicyName"]
        if not iam.store.permissions.delete_inline(owner.principal_id, policy_name):
            raise errors.inline_policy_not_found(kind, policy_name)
        return {}

    return handler


def names(kind: str) -> Operation[IamBackend]:
    def handler(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
        owner = lookup_entity(iam.store, ctx, kind, params[_NAME_PARAM[kind]])
        page, meta = paging.paginate(iam.store.permissions.inline_names(owner.principal_id), params)
        return {"PolicyNames": page, **meta}

    return handler


OPERATIONS: dict[str, Operation[IamBackend]] = {}
for _kind, _label in LABEL.items():
    OPERATIONS[f"Put{_label}Policy"] = put(_kind)
    OPERATIONS[f"Get{_label}Policy"] = get(_kind)
    OPERATIONS[f"Delete{_label}Policy"] = remove(_kind)
    OPERATIONS[f"List{_label}Policies"] = names(_kind)
