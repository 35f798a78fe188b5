"""Key tags: TagResource, UntagResource, ListResourceTags."""

from __future__ import annotations

from typing import Any

from khoa.protocol.context import RequestContext
from khoa.services.kms import errors
from khoa.services.kms.backend import KmsBackend
from khoa.services.kms.resolve import (
    decode_marker,
    encode_marker,
    require_not_pending_deletion,
    resolve_key,
)
from khoa.services.kms.store import MAX_TAGS_PER_KEY, too_many_tags
from khoa.services.kms.store.tags import CASE_VARIANTS


def validate_tags(tags: list[dict[str, str]]) -> None:
    for tag in tags:
        if tag["TagKey"].lower().startswith("aws:"):
            raise errors.tag_error("Tags beginning with aws: are reserved")
    if len(tags) > MAX_TAGS_PER_KEY:
        raise too_many_tags()
    keys = {tag["TagKey"] for tag in tags}
    if len({key.lower() for key in keys}) < len(keys):
        raise errors.tag_error(CASE_VARIANTS)


def tag_resource(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    key = resolve_key(kms, ctx, params["KeyId"], allow_alias=False)
    require_not_pending_deletion(key)
    validate_tags(params["Tags"])
    # A repeated key keeps the last value, as AWS does.
    kms.store.tags.put(key.key_id, {t["TagKey"]: t.get("TagValue", "") for t in params["Tags"]})
    return {}


def untag_resource(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    key = resolve_key(kms, ctx, params["KeyId"], allow_alias=False)
    require_not_pending_deletion(key)
    kms.store.tags.remove(key.key_id, params["TagKeys"])
    return {}


def list_resource_tags(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    key = resolve_key(kms, ctx, params["KeyId"], allow_alias=False)
    limit = params.get("Limit", 50)
    offset = decode_marker(params.get("Marker"), ctx.operation)
    rows = kms.store.tags.page(key.key_id, limit + 1, offset)
    result: dict[str, Any] = {
        "Tags": [{"TagKey": r[0], "TagValue": r[1]} for r in rows[:limit]],
        "Truncated": len(rows) > limit,
    }
    if len(rows) > limit:
        result["NextMarker"] = encode_marker(offset + limit, ctx.operation)
    return result


OPERATIONS = {
    "TagResource": tag_resource,
    "UntagResource": untag_resource,
    "ListResourceTags": list_resource_tags,
}
