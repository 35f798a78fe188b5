"""Aliases: friendly names for keys, per account and region."""

from __future__ import annotations

from typing import Any

from khoa.clock import from_epoch
from khoa.protocol.context import RequestContext
from khoa.protocol.errors import AWSError
from khoa.services.kms import errors, specs
from khoa.services.kms.backend import KmsBackend
from khoa.services.kms.resolve import (
    alias_arn,
    alias_target,
    decode_marker,
    encode_marker,
    require_not_pending_deletion,
    resolve_key,
)
from khoa.services.kms.store import AliasRecord, KeyRecord
from khoa.services.kms.store.aliases import AliasQuotaExceeded

_ALIAS_DOCS = "Please see https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html"
# AWS KMS resource quota "Aliases per KMS key" (developer guide, Resource quotas): creating or moving
# an alias onto a key that has this many is refused with LimitExceededException.
MAX_ALIASES_PER_KEY = 50


def _alias_quota(key: KeyRecord) -> AWSError:
    return errors.limit_exceeded(
        f"{key.arn} has reached the limit of {MAX_ALIASES_PER_KEY} aliases per KMS key."
    )


def _check_name(name: str) -> None:
    if not name.startswith("alias/"):
        raise errors.validation(f'Alias must start with the prefix "alias/". {_ALIAS_DOCS}')
    if name.startswith("alias/aws/"):
        raise AWSError("NotAuthorizedException", "")
    if name == "alias/":
        raise errors.invalid_alias_name(f"Alias name cannot be empty. {_ALIAS_DOCS}")
    if ":" in name:
        # The model's pattern admits ':', but alias names may only hold [a-zA-Z0-9/_-].
        raise errors.validation(f"{name} contains invalid characters for an alias")


def _kind(key: KeyRecord) -> str:
    if key.key_spec == specs.SYMMETRIC:
        return "symmetric"
    if key.key_spec in specs.HMAC_SPECS:
        return f"hmac:{key.key_spec}"
    return "asymmetric"


def _target(kms: KmsBackend, ctx: RequestContext, ref: str) -> KeyRecord:
    if ref.startswith("alias/") or (ref.startswith("arn:") and ":alias/" in ref):
        raise errors.validation("Aliases must refer to keys. Not aliases")
    key = resolve_key(kms, ctx, ref, allow_alias=False)
    if key.key_manager == "AWS":
        raise errors.unsupported(f"{key.arn} is an AWS managed key: its alias cannot be changed.")
    require_not_pending_deletion(key)
    return key


def create_alias(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    name = params["AliasName"]
    _check_name(name)
    key = _target(kms, ctx, params["TargetKeyId"])
    try:
        created = kms.store.aliases.create(
            ctx.account_id, ctx.region, name, key.key_id, ctx.now.timestamp(), limit=MAX_ALIASES_PER_KEY
        )
    except AliasQuotaExceeded:
        raise _alias_quota(key) from None
    if not created:
        raise errors.already_exists(f"An alias with the name {alias_arn(ctx, name)} already exists")
    return {}


def update_alias(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    name = params["AliasName"]
    _check_name(name)
    current_id = alias_target(kms, ctx, name)
    if current_id is None:
        raise errors.not_found(f"Alias {alias_arn(ctx, name)} is not found.")
    key = _target(kms, ctx, params["TargetKeyId"])
    current = kms.store.keys.get(ctx.account_id, ctx.region, current_id)
    if current is not None and (_kind(current) != _kind(key) or current.key_usage != key.key_usage):
        raise errors.validation(
            f"{key.arn} is not the same type of key and key usage as the alias's current "
            "key; an alias can only move to a key of the same type and usage."
        )
    try:
        kms.store.aliases.retarget(
            ctx.account_id, ctx.region, name, key.key_id, ctx.now.timestamp(), limit=MAX_ALIASES_PER_KEY
        )
    except AliasQuotaExceeded:
        raise _alias_quota(key) from None
    return {}


def delete_alias(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    name = params["AliasName"]
    _check_name(name)
    if not kms.store.aliases.remove(ctx.account_id, ctx.region, name):
        raise errors.not_found(f"Alias {alias_arn(ctx, name)} is not found.")
    return {}


# The aliases AWS predefines in every account and region for its services' AWS managed keys. Until a
# service first uses its key, ListAliases shows the alias without TargetKeyId (or dates), as the API
# reference says ("aliases that AWS has created but has not yet associated with a KMS key"). The list
# is the one AWS-verified peer suites (moto, LocalStack) assert on a fresh account; AWS's own list
# grows with new services, and Khoa follows the verified list rather than guessing at newer ones.
PREDEFINED_ALIASES = (
    "alias/aws/acm",
    "alias/aws/dynamodb",
    "alias/aws/ebs",
    "alias/aws/elasticfilesystem",
    "alias/aws/es",
    "alias/aws/glue",
    "alias/aws/kinesisvideo",
    "alias/aws/lambda",
    "alias/aws/rds",
    "alias/aws/redshift",
    "alias/aws/s3",
    "alias/aws/secretsmanager",
    "alias/aws/ssm",
    "alias/aws/xray",
)


def _listed(ctx: RequestContext, row: AliasRecord) -> dict[str, Any]:
    return {
        "AliasName": row.alias_name,
        "AliasArn": alias_arn(ctx, row.alias_name),
        "TargetKeyId": row.target_key_id,
        "CreationDate": from_epoch(row.created_at),
        "LastUpdatedDate": from_epoch(row.updated_at),
    }


def _merged_page(kms: KmsBackend, ctx: RequestContext, offset: int, size: int) -> list[dict[str, Any]]:
    """Up to ``size`` entries from ``offset`` of the account's aliases merged with the predefined
    aliases that have no key yet, all in the database's name order.

    Each predefined alias's place in that order is counted by the database in one aggregate over the
    account's aliases in the region (so the merge holds under any collation; an account has few
    aliases, AWS's quota is in the thousands); the stored aliases of the page are then one ordinary
    page of the store, and the marker stays a plain offset into the merged order."""
    before = kms.store.aliases.count_before(ctx.account_id, ctx.region, list(PREDEFINED_ALIASES))
    unassigned = sorted((count, name) for name, count in before.items() if count >= 0)
    # The merged position of the j-th unassigned alias is the stored aliases before it plus j.
    positions = {count + j: name for j, (count, name) in enumerate(unassigned)}
    in_page = {pos: name for pos, name in positions.items() if offset <= pos < offset + size}
    earlier = sum(1 for pos in positions if pos < offset)
    rows = iter(
        kms.store.aliases.page(ctx.account_id, ctx.region, None, size - len(in_page), offset - earlier)
    )
    page: list[dict[str, Any]] = []
    for pos in range(offset, offset + size):
        name = in_page.get(pos)
        if name is not None:
            page.append({"AliasName": name, "AliasArn": alias_arn(ctx, name)})
            continue
        row = next(rows, None)
        if row is None:
            break
        page.append(_listed(ctx, row))
    return page


def list_aliases(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    limit = params.get("Limit", 100)
    offset = decode_marker(params.get("Marker"), ctx.operation)
    if params.get("KeyId"):
        # A predefined alias without a key belongs to no key, so a KeyId filter never lists one.
        key_id = resolve_key(kms, ctx, params["KeyId"], allow_alias=False).key_id
        entries = [
            _listed(ctx, r)
            for r in kms.store.aliases.page(ctx.account_id, ctx.region, key_id, limit + 1, offset)
        ]
    else:
        entries = _merged_page(kms, ctx, offset, limit + 1)
    result: dict[str, Any] = {"Aliases": entries[:limit], "Truncated": len(entries) > limit}
    if len(entries) > limit:
        result["NextMarker"] = encode_marker(offset + limit, ctx.operation)
    return result


OPERATIONS = {
    "CreateAlias": create_alias,
    "UpdateAlias": update_alias,
    "DeleteAlias": delete_alias,
    "ListAliases": list_aliases,
}
