"""Key tags: TagResource, UntagResource, ListResourceTags."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, delete, func, insert, select, update

from khoa.protocol.context import RequestContext
from khoa.services.kms import errors
from khoa.services.kms.backend import KmsBackend
from khoa.services.kms.resolve import (
    decode_marker,
    encode_marker,
    require_not_pending_deletion,
    resolve_key,
)
from khoa.storage import schema

MAX_TAGS_PER_KEY = 50
_TAGS = schema.kms_tags


def validate_tags(tags: list[dict[str, str]]) -> None:
    for tag in tags:
        if tag["TagKey"].lower().startswith("aws:"):
            raise errors.tag_error("Tags beginning with aws: are reserved")
    if len(tags) > MAX_TAGS_PER_KEY:
        raise errors.tag_error(f"A KMS key can have at most {MAX_TAGS_PER_KEY} tags")


def store_tags(engine: Engine, key_id: str, tags: list[dict[str, str]]) -> None:
    """Add or overwrite tags (a repeated key keeps the last value, as AWS does)."""
    latest = {t["TagKey"]: t.get("TagValue", "") for t in tags}
    with engine.begin() as conn:
        existing = set(conn.execute(select(_TAGS.c.tag_key).where(_TAGS.c.key_id == key_id)).scalars())
        if len(existing | set(latest)) > MAX_TAGS_PER_KEY:
            raise errors.tag_error(f"A KMS key can have at most {MAX_TAGS_PER_KEY} tags")
        for tag_key, value in latest.items():
            if tag_key in existing:
                conn.execute(
                    update(_TAGS)
                    .where(_TAGS.c.key_id == key_id)
                    .where(_TAGS.c.tag_key == tag_key)
                    .values(tag_value=value)
                )
            else:
                conn.execute(insert(_TAGS).values(key_id=key_id, tag_key=tag_key, tag_value=value))


def tags_of(engine: Engine, key_id: str) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(select(_TAGS.c.tag_key, _TAGS.c.tag_value).where(_TAGS.c.key_id == key_id)).all()
    return {r[0]: r[1] for r in rows}


def tag_resource(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    key = resolve_key(kms, ctx, params["KeyId"], allow_alias=False)
    require_not_pending_deletion(key)
    validate_tags(params["Tags"])
    store_tags(kms.engine, key.key_id, params["Tags"])
    return {}


def untag_resource(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    key = resolve_key(kms, ctx, params["KeyId"], allow_alias=False)
    require_not_pending_deletion(key)
    with kms.engine.begin() as conn:
        conn.execute(
            delete(_TAGS).where(_TAGS.c.key_id == key.key_id).where(_TAGS.c.tag_key.in_(params["TagKeys"]))
        )
    return {}


def list_resource_tags(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    key = resolve_key(kms, ctx, params["KeyId"], allow_alias=False)
    limit = params.get("Limit", 50)
    offset = decode_marker(params.get("Marker"), ctx.operation)
    with kms.engine.connect() as conn:
        rows = conn.execute(
            select(_TAGS.c.tag_key, _TAGS.c.tag_value)
            .where(_TAGS.c.key_id == key.key_id)
            .order_by(_TAGS.c.tag_key)
            .limit(limit + 1)
            .offset(offset)
        ).all()
    result: dict[str, Any] = {
        "Tags": [{"TagKey": r[0], "TagValue": r[1]} for r in rows[:limit]],
        "Truncated": len(rows) > limit,
    }
    if len(rows) > limit:
        result["NextMarker"] = encode_marker(offset + limit, ctx.operation)
    return result


def count_tags(engine: Engine, key_id: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(select(func.count()).select_from(_TAGS).where(_TAGS.c.key_id == key_id)).scalar_one()
        )


OPERATIONS = {
    "TagResource": tag_resource,
    "UntagResource": untag_resource,
    "ListResourceTags": list_resource_tags,
}
