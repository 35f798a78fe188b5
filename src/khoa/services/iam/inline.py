"""Inline policies of users, groups and roles: Put/Get/Delete/List{User,Group,Role}Policy/Policies.

Documents are validated as identity policies and kept as written; Get returns them URL-encoded as AWS
does. The combined size of an entity's inline policies is limited (2,048 / 5,120 / 10,240 characters
other than whitespace for a user / group / role).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, insert, select

from khoa.protocol.context import RequestContext
from khoa.services.iam import documents, errors, paging
from khoa.services.iam.store import GROUP, INLINE, ROLE, USER, invalidate, lookup_entity

Handler = Callable[[RequestContext, dict[str, Any]], dict[str, Any]]
_NAME_PARAM = {USER: "UserName", GROUP: "GroupName", ROLE: "RoleName"}


def put(kind: str) -> Handler:
    def handler(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
        owner = lookup_entity(ctx, kind, params[_NAME_PARAM[kind]])
        policy_name = params["PolicyName"]
        document = params["PolicyDocument"]
        documents.validate_identity(document)
        limit = documents.INLINE_SIZE[kind]
        with ctx.runtime.engine.begin() as conn:
            others = conn.execute(
                select(INLINE.c.document)
                .where(INLINE.c.owner_id == owner.principal_id)
                .where(INLINE.c.policy_name != policy_name)
            ).scalars()
            if sum(documents.size(d) for d in others) + documents.size(document) > limit:
                raise errors.limit_exceeded(
                    f"Maximum policy size of {limit} bytes exceeded for {kind} {owner.name}"
                )
            conn.execute(
                delete(INLINE)
                .where(INLINE.c.owner_id == owner.principal_id)
                .where(INLINE.c.policy_name == policy_name)
            )
            conn.execute(
                insert(INLINE).values(owner_id=owner.principal_id, policy_name=policy_name, document=document)
            )
        invalidate(ctx)
        return {}

    return handler


def get(kind: str) -> Handler:
    def handler(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
        owner = lookup_entity(ctx, kind, params[_NAME_PARAM[kind]])
        policy_name = params["PolicyName"]
        with ctx.runtime.engine.connect() as conn:
            document = conn.execute(
                select(INLINE.c.document)
                .where(INLINE.c.owner_id == owner.principal_id)
                .where(INLINE.c.policy_name == policy_name)
            ).scalar()
        if document is None:
            raise errors.inline_policy_not_found(kind, policy_name)
        return {
            _NAME_PARAM[kind]: owner.name,
            "PolicyName": policy_name,
            "PolicyDocument": documents.encode(document),
        }

    return handler


def remove(kind: str) -> Handler:
    def handler(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
        owner = lookup_entity(ctx, kind, params[_NAME_PARAM[kind]])
        policy_name = params["PolicyName"]
        with ctx.runtime.engine.begin() as conn:
            deleted = conn.execute(
                delete(INLINE)
                .where(INLINE.c.owner_id == owner.principal_id)
                .where(INLINE.c.policy_name == policy_name)
            ).rowcount
        if not deleted:
            raise errors.inline_policy_not_found(kind, policy_name)
        invalidate(ctx)
        return {}

    return handler


def names(kind: str) -> Handler:
    def handler(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
        owner = lookup_entity(ctx, kind, params[_NAME_PARAM[kind]])
        with ctx.runtime.engine.connect() as conn:
            found = list(
                conn.execute(
                    select(INLINE.c.policy_name)
                    .where(INLINE.c.owner_id == owner.principal_id)
                    .order_by(INLINE.c.policy_name)
                ).scalars()
            )
        page, meta = paging.paginate(found, params)
        return {"PolicyNames": page, **meta}

    return handler


OPERATIONS: dict[str, Handler] = {}
for _kind, _label in ((USER, "User"), (GROUP, "Group"), (ROLE, "Role")):
    OPERATIONS[f"Put{_label}Policy"] = put(_kind)
    OPERATIONS[f"Get{_label}Policy"] = get(_kind)
    OPERATIONS[f"Delete{_label}Policy"] = remove(_kind)
    OPERATIONS[f"List{_label}Policies"] = names(_kind)
