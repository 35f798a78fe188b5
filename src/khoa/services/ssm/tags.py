"""AddTagsToResource, RemoveTagsFromResource and ListTagsForResource for parameters."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, insert, select, update

from khoa.protocol.context import RequestContext
from khoa.protocol.errors import AWSError
from khoa.services.ssm import errors, names
from khoa.services.ssm.backend import ParametersBackend
from khoa.services.ssm.store import TAGS, ParameterRow

MAX_TAGS = 50


def check_keys(tags: list[dict[str, str]]) -> None:
    for tag in tags:
        if tag["Key"].lower().startswith("aws:"):
            raise errors.validation(
                f"Tag key {tag['Key']} is invalid: tag keys beginning with aws: are reserved for AWS use."
            )


def _invalid_resource_id() -> AWSError:
    return errors.code(
        "InvalidResourceId",
        "The resource ID is not valid. Verify that you entered the correct ID and try again.",
    )


def _parameter(ssm: ParametersBackend, ctx: RequestContext, params: dict[str, Any]) -> ParameterRow:
    if params["ResourceType"] != "Parameter":
        raise errors.code(
            "InvalidResourceType",
            "The resource type is not valid: Khoa's Parameter Store tags "
            "parameters only (ResourceType Parameter).",
        )
    from khoa.services.ssm.parameters import find

    try:
        selector = names.parse_selector(ctx, params["ResourceId"])
    except AWSError:
        raise _invalid_resource_id() from None
    row = find(ssm.store, ctx, selector) if selector.version is None and selector.label is None else None
    if row is None:
        raise _invalid_resource_id()
    return row


def add_tags_to_resource(
    ssm: ParametersBackend, ctx: RequestContext, params: dict[str, Any]
) -> dict[str, Any]:
    row = _parameter(ssm, ctx, params)
    check_keys(params["Tags"])
    with ssm.engine.begin() as conn:
        existing = set(conn.execute(select(TAGS.c.tag_key).where(TAGS.c.param_id == row.param_id)).scalars())
        latest = {t["Key"]: t["Value"] for t in params["Tags"]}
        if len(existing | set(latest)) > MAX_TAGS:
            raise errors.code(
                "TooManyTagsError",
                f"The Targets parameter includes too many tags. A resource can have at most {MAX_TAGS} tags.",
            )
        for key, value in latest.items():
            if key in existing:
                conn.execute(
                    update(TAGS)
                    .where(TAGS.c.param_id == row.param_id)
                    .where(TAGS.c.tag_key == key)
                    .values(tag_value=value)
                )
            else:
                conn.execute(insert(TAGS).values(param_id=row.param_id, tag_key=key, tag_value=value))
    return {}


def remove_tags_from_resource(
    ssm: ParametersBackend, ctx: RequestContext, params: dict[str, Any]
) -> dict[str, Any]:
    row = _parameter(ssm, ctx, params)
    with ssm.engine.begin() as conn:
        conn.execute(
            delete(TAGS).where(TAGS.c.param_id == row.param_id).where(TAGS.c.tag_key.in_(params["TagKeys"]))
        )
    return {}


def list_tags_for_resource(
    ssm: ParametersBackend, ctx: RequestContext, params: dict[str, Any]
) -> dict[str, Any]:
    row = _parameter(ssm, ctx, params)
    with ssm.engine.connect() as conn:
        rows = conn.execute(
            select(TAGS.c.tag_key, TAGS.c.tag_value)
            .where(TAGS.c.param_id == row.param_id)
            .order_by(TAGS.c.tag_key)
        ).all()
    return {"TagList": [{"Key": r[0], "Value": r[1]} for r in rows]}


OPERATIONS = {
    "AddTagsToResource": add_tags_to_resource,
    "RemoveTagsFromResource": remove_tags_from_resource,
    "ListTagsForResource": list_tags_for_resource,
}
