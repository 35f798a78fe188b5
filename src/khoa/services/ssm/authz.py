"""Authorising Parameter Store requests: ``ssm:<Operation>`` on each parameter's ARN (path ARNs for
GetParametersByPath), with ``ssm:ResourceTag`` / ``aws:ResourceTag`` condition keys."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from khoa.iam.authorize import authorize
from khoa.protocol.context import RequestContext
from khoa.protocol.errors import AWSError
from khoa.services.ssm import names
from khoa.services.ssm.store import TAGS

_UNSCOPED = ("DescribeParameters",)


def _name_of(ctx: RequestContext, value: str) -> str:
    try:
        return names.parse_selector(ctx, value).name
    except AWSError:
        return value


def _context(ctx: RequestContext, name: str, params: dict[str, Any]) -> dict[str, list[str]]:
    context: dict[str, list[str]] = {}
    row = ctx.runtime.parameters.store.get(ctx.account_id, ctx.region, name)
    if row is not None:
        with ctx.runtime.parameters.engine.connect() as conn:
            for key, value in conn.execute(
                select(TAGS.c.tag_key, TAGS.c.tag_value).where(TAGS.c.param_id == row.param_id)
            ).all():
                context[f"ssm:resourcetag/{key.lower()}"] = [value]
                context[f"aws:resourcetag/{key.lower()}"] = [value]
    tags = params.get("Tags")
    if tags:
        context["aws:tagkeys"] = [t["Key"] for t in tags]
        for tag in tags:
            context[f"aws:requesttag/{tag['Key'].lower()}"] = [tag["Value"]]
    if "Overwrite" in params:
        context["ssm:overwrite"] = [str(params["Overwrite"]).lower()]
    return context


def authorize_parameter(ctx: RequestContext, action: str, name: str, params: dict[str, Any]) -> None:
    authorize(ctx, action, names.parameter_arn(ctx, name), context=lambda: _context(ctx, name, params))


def authorize_request(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    action = f"ssm:{ctx.operation}"
    if ctx.operation in _UNSCOPED:
        authorize(ctx, action, "*")
    elif ctx.operation == "GetParametersByPath":
        path = params.get("Path", "/").rstrip("/") or "/"
        authorize(ctx, action, names.parameter_arn(ctx, path))
    elif "Names" in params:
        for value in params["Names"]:
            authorize_parameter(ctx, action, _name_of(ctx, value), params)
    elif "Name" in params:
        authorize_parameter(ctx, action, _name_of(ctx, params["Name"]), params)
    elif "ResourceId" in params:
        authorize_parameter(ctx, action, _name_of(ctx, params["ResourceId"]), params)
    else:
        authorize(ctx, action, "*")
    return {}
