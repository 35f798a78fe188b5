"""GetParametersByPath and DescribeParameters: filtered, name-ordered pages.

Here the filters are checked and page tokens made and read; the store's listing turns the filters into
its query (keyset-paged on the name, so a page costs the same whatever the store holds).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from khoa.clock import from_epoch
from khoa.protocol.context import RequestContext
from khoa.protocol.errors import AWSError
from khoa.services.ssm import errors, names, policies, public
from khoa.services.ssm.backend import ParametersBackend
from khoa.services.ssm.parameters import plain_value
from khoa.services.ssm.store import Filter, ParameterRow, VersionRow

_BY_PATH_KEYS = ("Type", "KeyId", "Label")
_DESCRIBE_KEYS = ("Name", "Path", "Type", "KeyId", "Tier", "DataType")
_TYPES = ("String", "StringList", "SecureString")
_TIERS = ("Standard", "Advanced", "Intelligent-Tiering")
DEFAULT_PAGE = 10


def _option_error(option: str, valid: tuple[str, ...]) -> AWSError:
    return errors.code(
        "InvalidFilterOption",
        f"The following filter option is not valid: {option}. Valid options include: [{', '.join(valid)}].",
    )


def _duplicated(key: str) -> AWSError:
    return errors.code(
        "InvalidFilterKey",
        f"The following filter is duplicated in the request: {key}. A request can contain only "
        "one occurrence of a specific filter.",
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
            raise _duplicated(key)
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


def _to_filter(item: dict[str, Any]) -> Filter:
    """A validated ParameterFilters entry as the store's listing takes it, its default option filled in."""
    key: str = item["Key"]
    option = item.get("Option", "OneLevel" if key == "Path" else "Equals")
    return Filter(key, option, tuple(item.get("Values") or ()))


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
    ssm: ParametersBackend, ctx: RequestContext, filters: list[Filter], limit: int, token: str | None
) -> tuple[list[tuple[ParameterRow, VersionRow]], str | None]:
    page, more = ssm.store.listing.page(
        ctx.account_id, ctx.region, filters, _decode(token) if token else None, limit
    )
    return page, (_encode(page[-1][0].name) if more else None)


def get_parameters_by_path(
    ssm: ParametersBackend, ctx: RequestContext, params: dict[str, Any]
) -> dict[str, Any]:
    path = names.hierarchy(params["Path"])  # what authz.authorize_request authorised
    names.validate_path(path)
    filters = params.get("ParameterFilters", [])
    validate_filters(filters, by_path=True)
    if public.is_public(path.rstrip("/") + "/"):
        return _public_by_path(ssm, ctx, path, filters, params)
    # The path is the Path filter GetParametersByPath always has.
    conditions = [Filter("Path", "Recursive" if params.get("Recursive", False) else "OneLevel", (path,))]
    conditions += [_to_filter(f) for f in filters]
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


def _public_by_path(
    ssm: ParametersBackend,
    ctx: RequestContext,
    path: str,
    filters: list[dict[str, Any]],
    params: dict[str, Any],
) -> dict[str, Any]:
    """GetParametersByPath under ``/aws/service/``: the public parameters (see ``public``), paged as
    any other listing. They are all Strings of no key and no label, so the filters are easy to apply."""
    token = params.get("NextToken")
    tree = public.tree(ssm.regions)
    found = tree.under(path, params.get("Recursive", False), _decode(token) if token else None)
    for item in filters:
        values = item.get("Values") or []
        option = item.get("Option", "Equals")
        if item["Key"] != "Type" or not any(
            v == "String" if option == "Equals" else "String".startswith(v) for v in values
        ):
            found = []
    limit = params.get("MaxResults", DEFAULT_PAGE)
    page = found[:limit]
    result: dict[str, Any] = {"Parameters": [public.parameter(ctx, name, tree.values[name]) for name in page]}
    if len(found) > limit:
        result["NextToken"] = _encode(page[-1])
    return result


def _legacy_filters(filters: list[dict[str, Any]]) -> list[Filter]:
    """The deprecated Filters (Name, Type, KeyId): Name matches the beginning of names, others exactly.

    The model checks each key (Name, Type or KeyId) and its 1 to 50 values of 1 to 1,024 characters;
    a key may appear once, as in ParameterFilters (AWS: InvalidFilterKey "The following filter is
    duplicated in the request"), so a request holds at most three such filters."""
    seen: set[str] = set()
    for item in filters:
        if item["Key"] in seen:
            raise _duplicated(item["Key"])
        seen.add(item["Key"])
    return [
        Filter(item["Key"], "BeginsWith" if item["Key"] == "Name" else "Equals", tuple(item["Values"] or ()))
        for item in filters
    ]


def describe_parameters(
    ssm: ParametersBackend, ctx: RequestContext, params: dict[str, Any]
) -> dict[str, Any]:
    if params.get("Filters") and params.get("ParameterFilters"):
        raise errors.validation("You can use either Filters or ParameterFilters in a single request.")
    parameter_filters = params.get("ParameterFilters", [])
    validate_filters(parameter_filters, by_path=False)
    conditions = _legacy_filters(params.get("Filters", []))
    if params.get("NextToken"):
        _decode(params["NextToken"])  # a garbage token is refused whatever else the request says
    if params.get("Shared", False):
        return {"Parameters": []}  # Khoa doesn't share parameters with other accounts (AWS RAM)
    conditions += [_to_filter(f) for f in parameter_filters]
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
