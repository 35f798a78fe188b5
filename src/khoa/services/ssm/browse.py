"""GetParametersByPath and DescribeParameters: filtered, name-ordered pages.

Paging is keyset-based on the parameter name and non-recursive listing uses the indexed parent path,
so a page costs the same whether the store holds a thousand parameters or a million.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, false, literal, or_, select, true

from khoa.clock import from_epoch
from khoa.protocol.context import RequestContext
from khoa.protocol.errors import AWSError
from khoa.services.ssm import errors, names, policies
from khoa.services.ssm.backend import ParametersBackend
from khoa.services.ssm.parameters import plain_value
from khoa.services.ssm.store import LABELS, PARAMS, TAGS, VERSIONS, ParameterRow, VersionRow

_BY_PATH_KEYS = ("Type", "KeyId", "Label")
_DESCRIBE_KEYS = ("Name", "Path", "Type", "KeyId", "Tier", "DataType")
_TYPES = ("String", "StringList", "SecureString")
_TIERS = ("Standard", "Advanced", "Intelligent-Tiering")
DEFAULT_PAGE = 10


def _like(prefix: str, *, contains: bool = False) -> str:
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return ("%" if contains else "") + escaped + "%"


def _normalise_path(path: str) -> str:
    return path.rstrip("/") or "/"


def _recursive(path: str) -> ColumnElement[bool]:
    path = _normalise_path(path)
    if path == "/":
        return true()  # the root holds every parameter, flat names included
    return PARAMS.c.name.like(_like(path + "/"), escape="\\")


def _one_level(paths: list[str]) -> ColumnElement[bool]:
    wanted = [_normalise_path(p) for p in paths]
    if "/" in wanted:
        wanted.append("")  # a flat name sits at the root level, as AWS lists it under "/"
    return PARAMS.c.parent_path.in_(wanted)


def _option_error(option: str, valid: tuple[str, ...]) -> AWSError:
    return errors.code(
        "InvalidFilterOption",
        f"The following filter option is not valid: {option}. Valid options include: [{', '.join(valid)}].",
    )


def validate_filters(filters: list[dict[str, Any]], *, by_path: bool) -> None:
    """ParameterFilters checks, in the order and with the errors AWS gives."""
    allowed = _BY_PATH_KEYS if by_path else _DESCRIBE_KEYS
    seen: set[str] = set()
    for item in filters:
        key: str = item["Key"]
        is_tag = key.startswith("tag:")
        if (is_tag and by_path) or (not is_tag and key not in allowed):
            valid = ", ".join(allowed if by_path else (*allowed, "tag"))
            raise errors.code(
                "InvalidFilterKey",
                f"The following filter key is not valid: {key}. Valid filter keys include: [{valid}].",
            )
        if key in seen:
            raise errors.code(
                "InvalidFilterKey",
                f"The following filter is duplicated in the request: {key}. A request can contain only "
                "one occurrence of a specific filter.",
            )
        seen.add(key)
        option = item.get("Option", "OneLevel" if key == "Path" else "Equals")
        if key == "Path":
            valid_options: tuple[str, ...] = ("Recursive", "OneLevel")
        elif key == "Name":
            valid_options = ("Equals", "BeginsWith", "Contains")
        elif key == "Label":
            valid_options = ("Equals",)
        else:
            valid_options = ("Equals", "BeginsWith")
        if option not in valid_options:
            raise _option_error(option, valid_options)
        values = item.get("Values") or []
        if not values and not is_tag:
            raise errors.code(
                "InvalidFilterValue", f"The following filter values are missing : null for filter key {key}."
            )
        enum = {"Type": _TYPES, "Tier": _TIERS}.get(key)
        if enum is not None and option == "Equals":
            for value in values:
                if value not in enum:
                    # AWS reports an unknown Type or Tier value as InvalidFilterOption.
                    raise errors.code(
                        "InvalidFilterOption",
                        f"The following filter value is not valid: {value}. Valid values include: "
                        f"[{', '.join(enum)}].",
                    )
        if key == "Path":
            for value in values:
                if value.lower().lstrip("/").startswith(("aws", "ssm")):
                    raise errors.validation(
                        'Filters for common parameters can\'t be prefixed with "aws" or "ssm" '
                        "(case-insensitive). When using global parameters, please specify within a "
                        "global namespace."
                    )
                names.validate_path(value)


def _matchable(values: list[str]) -> list[str]:
    """The filter values that can match anything stored. No parameter name, tag or label can hold a
    NUL (their patterns exclude it), and a NUL must never reach SQL: SQLite's LIKE stops reading a
    pattern at a NUL (``%\\x00%`` became ``%``, which matched every parameter) and PostgreSQL refuses
    NUL in text outright. Such a value matches nothing."""
    return [v for v in values if "\x00" not in v]


def _match(column: Any, option: str, values: list[str]) -> ColumnElement[bool]:
    values = _matchable(values)
    if not values:
        return false()
    if option == "BeginsWith":
        return or_(*[column.like(_like(v), escape="\\") for v in values])
    return column.in_(values)


def _name_condition(option: str, values: list[str]) -> ColumnElement[bool]:
    # AWS compares names as if each began with "/": "Name Equals foo" finds "/foo" too, and back.
    values = _matchable(values)
    if not values:
        return false()
    if option == "Contains":
        return or_(
            *[
                or_(
                    PARAMS.c.name.like(_like(v, contains=True), escape="\\"),
                    (literal("/") + PARAMS.c.name).like(_like(v, contains=True), escape="\\"),
                )
                for v in values
            ]
        )
    stripped = [v.lstrip("/") for v in values]
    if option == "Equals":
        return PARAMS.c.name.in_(sorted({*stripped, *("/" + v for v in stripped)}))
    return or_(
        *[
            or_(PARAMS.c.name.like(_like(v), escape="\\"), PARAMS.c.name.like(_like("/" + v), escape="\\"))
            for v in stripped
        ]
    )


def _filter(item: dict[str, Any]) -> ColumnElement[bool]:
    key: str = item["Key"]
    option = item.get("Option", "OneLevel" if key == "Path" else "Equals")
    values_: list[str] = item.get("Values") or []
    if key.startswith("tag:"):
        if "\x00" in key:
            return false()
        condition = exists().where(TAGS.c.param_id == PARAMS.c.param_id).where(TAGS.c.tag_key == key[4:])
        if values_:
            condition = condition.where(_match(TAGS.c.tag_value, option, values_))
        return condition
    if key == "Name":
        return _name_condition(option, values_)
    if key == "Path":
        if option == "OneLevel":
            return _one_level(values_)
        return or_(*[_recursive(v) for v in values_])
    if key == "Label":
        labels = _matchable(values_)
        if not labels:
            return false()
        return exists().where(LABELS.c.param_id == PARAMS.c.param_id).where(LABELS.c.label.in_(labels))
    column = {
        "Type": VERSIONS.c.param_type,
        "KeyId": VERSIONS.c.key_id,
        "Tier": PARAMS.c.tier,
        "DataType": VERSIONS.c.data_type,
    }[key]
    return _match(column, option, values_)


_TOKEN_VERSION = "khoa-ssm-page-1"


def _encode(name: str) -> str:
    """A page token: the last name returned, in a versioned envelope so that anything else (garbage
    that happens to be base64, a token of another operation) is refused rather than used."""
    return base64.urlsafe_b64encode(json.dumps([_TOKEN_VERSION, name]).encode()).decode()


def _decode(token: str) -> str:
    invalid = errors.code("InvalidNextToken", "The specified token isn't valid.")
    try:
        decoded = json.loads(base64.urlsafe_b64decode(token.encode("ascii", "strict")).decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeError, RecursionError):
        raise invalid from None
    if (
        not isinstance(decoded, list)
        or len(decoded) != 2
        or decoded[0] != _TOKEN_VERSION
        or not isinstance(decoded[1], str)
        or not decoded[1]
        or len(decoded[1]) > names.MAX_ARN_LENGTH
        or "\x00" in decoded[1]
    ):
        raise invalid
    return decoded[1]


def _page(
    ssm: ParametersBackend,
    ctx: RequestContext,
    conditions: list[ColumnElement[bool]],
    limit: int,
    token: str | None,
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
    with ssm.engine.connect() as conn:
        rows = conn.execute(query.order_by(PARAMS.c.name).limit(limit + 1)).all()
    page = [(ParameterRow(r[0], r[1], r[2], r[3], r[4]), VersionRow.from_row(r)) for r in rows[:limit]]
    return page, (_encode(page[-1][0].name) if len(rows) > limit else None)


def get_parameters_by_path(
    ssm: ParametersBackend, ctx: RequestContext, params: dict[str, Any]
) -> dict[str, Any]:
    path: str = names.clean(params["Path"])
    names.validate_path(path)
    filters = params.get("ParameterFilters", [])
    validate_filters(filters, by_path=True)
    conditions = [_recursive(path) if params.get("Recursive", False) else _one_level([path])]
    conditions += [_filter(f) for f in filters]
    page, token = _page(ssm, ctx, conditions, params.get("MaxResults", DEFAULT_PAGE), params.get("NextToken"))
    with_decryption = params.get("WithDecryption", False)
    result: dict[str, Any] = {
        "Parameters": [
            {
                "Name": row.name,
                "Type": version.param_type,
                "Value": plain_value(ssm.kms, ctx, row.name, version, with_decryption),
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
    """The deprecated Filters (Name, Type, KeyId): Name matches the beginning of names, others exactly."""
    converted = []
    for item in filters:
        option = "BeginsWith" if item["Key"] == "Name" else "Equals"
        converted.append(_filter({"Key": item["Key"], "Option": option, "Values": item["Values"]}))
    return converted


def describe_parameters(
    ssm: ParametersBackend, ctx: RequestContext, params: dict[str, Any]
) -> dict[str, Any]:
    if params.get("Filters") and params.get("ParameterFilters"):
        raise errors.validation("You can use either Filters or ParameterFilters in a single request.")
    parameter_filters = params.get("ParameterFilters", [])
    validate_filters(parameter_filters, by_path=False)
    if params.get("NextToken"):
        _decode(params["NextToken"])  # a garbage token is refused whatever else the request says
    if params.get("Shared", False):
        return {"Parameters": []}  # Khoa doesn't share parameters with other accounts (AWS RAM)
    conditions = _legacy_filters(params.get("Filters", []))
    conditions += [_filter(f) for f in parameter_filters]
    page, token = _page(ssm, ctx, conditions, params.get("MaxResults", DEFAULT_PAGE), params.get("NextToken"))
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
