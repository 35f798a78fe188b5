"""Secret tags: TagResource and UntagResource (tags are also set by CreateSecret)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection

from khoa.protocol.context import RequestContext
from khoa.services.secretsmanager import errors, names
from khoa.services.secretsmanager.backend import SecretsBackend
from khoa.services.secretsmanager.store import SECRETS, TAGS

MAX_TAGS = 50


def validate_tags(tags: list[dict[str, str]]) -> None:
    for tag in tags:
        if "Key" not in tag or "Value" not in tag:
            raise errors.invalid_parameter("Each tag must have a Key and a Value.")
        if tag["Key"].lower().startswith("aws:"):
            raise errors.invalid_parameter("Invalid tag key. Tag keys can't start with aws:.")
    if len({t["Key"] for t in tags}) > MAX_TAGS:
        raise errors.invalid_request(f"A secret can have at most {MAX_TAGS} tags.")


def write_tags(conn: Connection, secret_id: str, tags: list[dict[str, str]]) -> None:
    """Add or overwrite tags, keeping first-added order."""
    rows = conn.execute(select(TAGS.c.tag_key, TAGS.c.position).where(TAGS.c.secret_id == secret_id)).all()
    existing: dict[str, int] = {row[0]: row[1] for row in rows}
    position = conn.execute(
        select(func.coalesce(func.max(TAGS.c.position), 0)).where(TAGS.c.secret_id == secret_id)
    ).scalar_one()
    latest = {t["Key"]: t["Value"] for t in tags}
    if len(set(existing) | set(latest)) > MAX_TAGS:
        raise errors.invalid_request(f"A secret can have at most {MAX_TAGS} tags.")
    for key, value in latest.items():
        if key in existing:
            conn.execute(
                update(TAGS)
                .where(TAGS.c.secret_id == secret_id)
                .where(TAGS.c.tag_key == key)
                .values(tag_value=value)
            )
        else:
            position += 1
            conn.execute(
                insert(TAGS).values(secret_id=secret_id, tag_key=key, tag_value=value, position=position)
            )


def tag_resource(sm: SecretsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    record = names.require(ctx, sm.store, params["SecretId"], allow_deleted=True)
    validate_tags(params["Tags"])
    with sm.engine.begin() as conn:
        # the row update first: concurrent taggers of one secret wait for each other
        conn.execute(
            update(SECRETS)
            .where(SECRETS.c.secret_id == record.secret_id)
            .values(last_changed_at=ctx.now.timestamp())
        )
        write_tags(conn, record.secret_id, params["Tags"])
    return {}


def untag_resource(sm: SecretsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    record = names.require(ctx, sm.store, params["SecretId"], allow_deleted=True)
    with sm.engine.begin() as conn:
        conn.execute(
            delete(TAGS)
            .where(TAGS.c.secret_id == record.secret_id)
            .where(TAGS.c.tag_key.in_(params["TagKeys"]))
        )
        conn.execute(
            update(SECRETS)
            .where(SECRETS.c.secret_id == record.secret_id)
            .values(last_changed_at=ctx.now.timestamp())
        )
    return {}


OPERATIONS = {"TagResource": tag_resource, "UntagResource": untag_resource}
