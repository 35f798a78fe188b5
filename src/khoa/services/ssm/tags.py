"""AddTagsToResource, RemoveTagsFromResource and ListTagsForResource for parameters."""

from __future__ import annotations

from typing import Any

from khoa.protocol.context import RequestContext
from khoa.protocol.errors import AWSError
from khoa.services.ssm import errors, names
from khoa.services.ssm.backend import ParametersBackend
from khoa.services.ssm.store import ParameterRow


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
    ssm.store.tags.add(row.param_id, {t["Key"]: t["Value"] for t in params["Tags"]})
    return {}


def remove_tags_from_resource(
    ssm: ParametersBackend, ctx: RequestContext, params: dict[str, Any]
) -> dict[str, Any]:
    row = _parameter(ssm, ctx, params)
    ssm.store.tags.remove(row.param_id, params["TagKeys"])
    return {}


def list_tags_for_resource(
    ssm: ParametersBackend, ctx: RequestContext, params: dict[str, Any]
) -> dict[str, Any]:
    row = _parameter(ssm, ctx, params)
    return {
        "TagList": [{"Key": key, "Value": value} for key, value in ssm.store.tags.of(row.param_id).items()]
    }


OPERATIONS = {
    "AddTagsToResource": add_tags_to_resource,
    "RemoveTagsFromResource": remove_tags_from_resource,
    "ListTagsForResource": list_tags_for_resource,
}
