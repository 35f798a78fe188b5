"""GetParametersByPath and DescribeParameters: filtered, name-ordered pages.

Paging is keyset-based on the parameter name and non-recursive listing uses the indexed parent path,
so a page costs the same whether the store holds a thousand parameters or a million.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, or_, select

from khoa.clock import from_epoch
from khoa.protocol.context import RequestContext
from khoa.services.ssm import errors, names, policies
from khoa.services.ssm.parameters import plain_value
from khoa.services.ssm.store import LABELS, PARAMS, TAGS, VERSIONS, ParameterRow, VersionRow

_BY_PATH_KEYS = ("Type", "KeyId", "Label")
_OPTIONS = {
    "Name": ("Equals", "BeginsWith", "Contains"),
    "Path": ("Recursive", "OneLevel"),
    "Type": ("Equals",),
    "KeyId": ("Equals",),
    "Label": ("Equals",),
    "Tier": ("Equals",),
    "DataType": ("Equals",),
}


def _like(prefix: str, *, contains: bool = False) -> str:
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return ("%" if contains else "") + escaped + "%"


def _normalise_path(path: str) -> str:
    return path.rstrip("/") or "/"


def _recursive(path: str) -> ColumnElement[bool]:
    path = _normalise_path(path)
    return PARAMS.c.name.like(_like("/" if path == "/" else path + "/"), escape="\\")


def _filter(item: dict[str, Any], allowed: tuple[str, ...] | None) -> ColumnElement[bool]:
    key: str = item["Key"]
    option = item.get("Option", "Equals")
    values_ = item.get("Values") or []
    base_key = "tag" if key.startswith("tag:") else key
    if allowed is not None and base_key not in allowed and base_key != "tag":
        raise errors.code(
            "InvalidFilterKey",
            f"The following filter key is not valid: {key}. Valid filter keys "
            f"include: [{', '.join(allowed)}, tag].",
        )
    if base_key == "tag":
        tag_key = key[4:]
        condition = exists().where(TAGS.c.param_id == PARAMS.c.param_id).where(TAGS.c.tag_key == tag_key)
        if values_:
            condition = condition.where(TAGS.c.tag_value.in_(values_))
        return condition
    if option not in _OPTIONS.get(base_key, ()):
        raise errors.code(
            "InvalidFilterOption",
            f"The filter option {option} is not valid for key {key}. Valid "
            f"options: {', '.join(_OPTIONS.get(base_key, ()))}.",
        )
    if not values_:
        raise errors.code("InvalidFilterValue", f"The filter {key} needs at least one value.")
    if key == "Name":
        if option == "Equals":
            return PARAMS.c.name.in_(values_)
        return or_(
            *[PARAMS.c.name.like(_like(v, contains=option == "Contains"), escape="\\") for v in values_]
        )
    if key == "Path":
        if option == "OneLevel":
            return PARAMS.c.parent_path.in_([_normalise_path(v) for v in values_])
        return or_(*[_recursive(v) for v in values_])
    if key == "Type":
        return VERSIONS.c.param_type.in_(values_)
    if key == "KeyId":
        return VERSIONS.c.key_id.in_(values_)
    if key == "Label":
        return exists().where(LABELS.c.param_id == PARAMS.c.param_id).where(LABELS.c.label.in_(values_))
    if key == "Tier":
        return PARAMS.c.tier.in_(values_)
    return VERSIONS.c.data_type.in_(values_)


def _encode(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode()


def _decode(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise errors.code("InvalidNextToken", "The specified token isn't valid.") from None


def _page(
    ctx: RequestContext, conditions: list[ColumnElement[bool]], limit: int, token: str | None
) -> tuple[list[tuple[ParameterRow, VersionRow]], str | None]:
    query = (
        select(PARAMS.c.param_id, PARAMS.c.name, PARAMS.c.version, PARAMS.c.tier, PARAMS.c.policies, VERSIONS)
        .join(
            VERSIONS, and_(VERSIONS.c.param_id == PARAMS.c.param_id, VERSIONS.c.version == PARAMS.c.version)
        )
        .where(PARAMS.c.account_id == ctx.account_id)
        .where(PARAMS.c.region == ctx.region)
    )
    for condition in conditions:
        query = query.where(condition)
    if token:
        query = query.where(PARAMS.c.name > _decode(token))
    with ctx.runtime.parameters.engine.connect() as conn:
        rows = conn.execute(query.order_by(PARAMS.c.name).limit(limit + 1)).all()
    page = [(ParameterRow(r[0], r[1], r[2], r[3], r[4]), VersionRow.from_row(r)) for r in rows[:limit]]
    return page, (_encode(page[-1][0].name) if len(rows) > limit else None)


def get_parameters_by_path(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    path: str = params["Path"]
    if not path.startswith("/"):
        raise errors.validation(
            "The parameter doesn't meet the parameter name requirements. The parameter name "
            'must begin with a forward slash "/". It can\'t be prefixed with "aws" or "ssm" '
            "(case-insensitive)."
        )
    if path.count("/") > names.MAX_LEVELS:
        raise errors.code(
            "HierarchyLevelLimitExceededException", f"A path can have at most {names.MAX_LEVELS} levels."
        )
    conditions = [
        _recursive(path) if params.get("Recursive", False) else PARAMS.c.parent_path == _normalise_path(path)
    ]
    conditions += [_filter(f, _BY_PATH_KEYS) for f in params.get("ParameterFilters", [])]
    page, token = _page(ctx, conditions, params.get("MaxResults", 10), params.get("NextToken"))
    with_decryption = params.get("WithDecryption", False)
    result: dict[str, Any] = {
        "Parameters": [
            {
                "Name": row.name,
                "Type": version.param_type,
                "Value": plain_value(ctx, row.name, version, with_decryption),
                "Version": version.version,
                "LastModifiedDate": from_epoch(version.modified_at),
                "ARN": names.parameter_arn(ctx, row.name),
                "DataType": version.data_type,
            }
            for row, version in page
        ]
    }
    if token:
        result["NextToken"] = token
    return result


def _legacy_filters(filters: list[dict[str, Any]]) -> list[ColumnElement[bool]]:
    converted = []
    for item in filters:
        key = item["Key"]
        if key == "Name":
            converted.append(_filter({"Key": "Name", "Option": "BeginsWith", "Values": item["Values"]}, None))
        else:
            converted.append(_filter({"Key": key, "Option": "Equals", "Values": item["Values"]}, None))
    return converted


def describe_parameters(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    if params.get("Filters") and params.get("ParameterFilters"):
        raise errors.validation("You can use either Filters or ParameterFilters in a single request.")
    conditions = _legacy_filters(params.get("Filters", []))
    conditions += [_filter(f, None) for f in params.get("ParameterFilters", [])]
    page, token = _page(ctx, conditions, params.get("MaxResults", 50), params.get("NextToken"))
    now = ctx.now.timestamp()
    entries = []
    for row, version in page:
        entry: dict[str, Any] = {
            "Name": row.name,
            "ARN": names.parameter_arn(ctx, row.name),
            "Type": version.param_type,
            "LastModifiedDate": from_epoch(version.modified_at),
            "LastModifiedUser": version.modified_by,
            "Version": version.version,
            "Tier": version.tier,
            "Policies": policies.describe(version.policies, now),
            "DataType": version.data_type,
        }
        if version.key_id:
            entry["KeyId"] = version.key_id
        if version.description:
            entry["Description"] = version.description
        if version.allowed_pattern:
            entry["AllowedPattern"] = version.allowed_pattern
        entries.append(entry)
    result: dict[str, Any] = {"Parameters": entries}
    if token:
        result["NextToken"] = token
    return result


OPERATIONS = {"GetParametersByPath": get_parameters_by_path, "DescribeParameters": describe_parameters}
