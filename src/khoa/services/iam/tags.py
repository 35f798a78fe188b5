"""Tags on users, roles and customer-managed policies. Keys are case-insensitive, at most 50 per entity."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.engine import Connection

from khoa.protocol.context import RequestContext
from khoa.services.iam import errors, paging
from khoa.services.iam.store import (
    ROLE,
    TAGS,
    USER,
    find_policy,
    invalidate,
    lookup_entity,
    parse_policy_arn,
    tags_of,
)

MAX_TAGS = 50


def validate(tags: list[dict[str, str]]) -> None:
    seen: set[str] = set()
    for tag in tags:
        key = tag["Key"].lower()
        if key in seen:
            raise errors.invalid_input(
                "Duplicate tag keys found. Please note that Tag keys are case insensitive."
            )
        if key.startswith("aws:"):
            raise errors.invalid_input("Tag keys starting with 'aws:' are reserved for AWS use.")
        seen.add(key)


def write(conn: Connection, owner_id: str, tags: list[dict[str, str]], quota_name: str) -> None:
    """Add or replace tags (inside the caller's transaction); too many raises and rolls it back."""
    validate(tags)
    if not tags:
        return
    conn.execute(
        delete(TAGS)
        .where(TAGS.c.owner_id == owner_id)
        .where(func.lower(TAGS.c.tag_key).in_([t["Key"].lower() for t in tags]))
    )
    conn.execute(
        insert(TAGS), [{"owner_id": owner_id, "tag_key": t["Key"], "tag_value": t["Value"]} for t in tags]
    )
    total = conn.execute(select(func.count()).select_from(TAGS).where(TAGS.c.owner_id == owner_id)).scalar()
    if (total or 0) > MAX_TAGS:
        raise errors.quota(quota_name, MAX_TAGS)


def _remove(conn: Connection, owner_id: str, keys: list[str]) -> None:
    if keys:
        conn.execute(
            delete(TAGS)
            .where(TAGS.c.owner_id == owner_id)
            .where(func.lower(TAGS.c.tag_key).in_([k.lower() for k in keys]))
        )


def _entity(ctx: RequestContext, kind: str, name: str) -> str:
    return str(lookup_entity(ctx, kind, name).principal_id)


def _policy(ctx: RequestContext, arn: str) -> str:
    """A customer-managed policy of the caller's account (AWS-managed ones carry no tags of yours)."""
    account, _path, _name = parse_policy_arn(arn)
    row = None
    if account == ctx.account_id:
        with ctx.runtime.engine.connect() as conn:
            row = find_policy(conn, arn)
    if row is None or row.account_id != ctx.account_id:
        raise errors.policy_not_found(arn)
    return str(row.policy_id)


def _tag(ctx: RequestContext, owner_id: str, tags: list[dict[str, str]], quota_name: str) -> dict[str, Any]:
    validate(tags)
    with ctx.runtime.engine.begin() as conn:
        write(conn, owner_id, tags, quota_name)
    invalidate(ctx)
    return {}


def _untag(ctx: RequestContext, owner_id: str, keys: list[str]) -> dict[str, Any]:
    with ctx.runtime.engine.begin() as conn:
        _remove(conn, owner_id, keys)
    invalidate(ctx)
    return {}


def _list(ctx: RequestContext, owner_id: str, params: dict[str, Any]) -> dict[str, Any]:
    with ctx.runtime.engine.connect() as conn:
        tags = tags_of(conn, owner_id)
    page, meta = paging.paginate(tags, params)
    return {"Tags": page, **meta}


def tag_user(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    owner = _entity(ctx, USER, params["UserName"])
    return _tag(ctx, owner, params["Tags"], "TagsPerUser")


def untag_user(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return _untag(ctx, _entity(ctx, USER, params["UserName"]), params["TagKeys"])


def list_user_tags(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return _list(ctx, _entity(ctx, USER, params["UserName"]), params)


def tag_role(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    owner = _entity(ctx, ROLE, params["RoleName"])
    return _tag(ctx, owner, params["Tags"], "TagsPerRole")


def untag_role(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return _untag(ctx, _entity(ctx, ROLE, params["RoleName"]), params["TagKeys"])


def list_role_tags(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return _list(ctx, _entity(ctx, ROLE, params["RoleName"]), params)


def tag_policy(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    owner = _policy(ctx, params["PolicyArn"])
    return _tag(ctx, owner, params["Tags"], "TagsPerPolicy")


def untag_policy(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return _untag(ctx, _policy(ctx, params["PolicyArn"]), params["TagKeys"])


def list_policy_tags(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return _list(ctx, _policy(ctx, params["PolicyArn"]), params)


OPERATIONS = {
    "TagUser": tag_user,
    "UntagUser": untag_user,
    "ListUserTags": list_user_tags,
    "TagRole": tag_role,
    "UntagRole": untag_role,
    "ListRoleTags": list_role_tags,
    "TagPolicy": tag_policy,
    "UntagPolicy": untag_policy,
    "ListPolicyTags": list_policy_tags,
}
