"""Tags on users, roles and customer-managed policies: Tag/Untag/List{User,Role,Policy}Tags. Keys are
case-insensitive, at most 50 per entity."""

from __future__ import annotations

from typing import Any

from khoa.protocol.context import RequestContext
from khoa.services.iam import errors, paging
from khoa.services.iam.backend import IamBackend
from khoa.services.iam.lookups import lookup_entity
from khoa.services.iam.names import ROLE, USER, parse_policy_arn


def validate(tags: list[dict[str, str]]) -> None:
    """Refuse duplicate keys (case-insensitively) and keys in the reserved ``aws:`` namespace."""
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


def _entity(iam: IamBackend, ctx: RequestContext, kind: str, name: str) -> str:
    return str(lookup_entity(iam.store, ctx, kind, name).principal_id)


def _policy(iam: IamBackend, ctx: RequestContext, arn: str) -> str:
    """A customer-managed policy of the caller's account (AWS-managed ones carry no tags of yours)."""
    account, _path, _name = parse_policy_arn(arn)
    row = iam.store.policies.find(arn) if account == ctx.account_id else None
    if row is None or row.account_id != ctx.account_id:
        raise errors.policy_not_found(arn)
    return str(row.policy_id)


def _tag(iam: IamBackend, owner_id: str, tags: list[dict[str, str]], quota_name: str) -> dict[str, Any]:
    validate(tags)
    iam.store.tags.tag(owner_id, tags, quota_name)
    return {}


def _untag(iam: IamBackend, owner_id: str, keys: list[str]) -> dict[str, Any]:
    iam.store.tags.untag(owner_id, keys)
    return {}


def _list(iam: IamBackend, owner_id: str, params: dict[str, Any]) -> dict[str, Any]:
    page, meta = paging.paginate(iam.store.tags.of(owner_id), params)
    return {"Tags": page, **meta}


def tag_user(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return _tag(iam, _entity(iam, ctx, USER, params["UserName"]), params["Tags"], "TagsPerUser")


def untag_user(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return _untag(iam, _entity(iam, ctx, USER, params["UserName"]), params["TagKeys"])


def list_user_tags(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return _list(iam, _entity(iam, ctx, USER, params["UserName"]), params)


def tag_role(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return _tag(iam, _entity(iam, ctx, ROLE, params["RoleName"]), params["Tags"], "TagsPerRole")


def untag_role(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return _untag(iam, _entity(iam, ctx, ROLE, params["RoleName"]), params["TagKeys"])


def list_role_tags(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return _list(iam, _entity(iam, ctx, ROLE, params["RoleName"]), params)


def tag_policy(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return _tag(iam, _policy(iam, ctx, params["PolicyArn"]), params["Tags"], "TagsPerPolicy")


def untag_policy(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return _untag(iam, _policy(iam, ctx, params["PolicyArn"]), params["TagKeys"])


def list_policy_tags(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return _list(iam, _policy(iam, ctx, params["PolicyArn"]), params)


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
