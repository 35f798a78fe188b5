"""Authorising Parameter Store requests: ``ssm:<Operation>`` on each parameter's ARN (path ARNs for
GetParametersByPath), with ``ssm:ResourceTag`` / ``aws:ResourceTag`` condition keys."""

from __future__ import annotations

from typing import Any

from khoa.protocol.context import RequestContext
from khoa.protocol.errors import AWSError
from khoa.services.ssm import names, public
from khoa.services.ssm.backend import ParametersBackend
from khoa.services.ssm.parameters import lookup

_UNSCOPED = ("DescribeParameters",)


def _name_of(ctx: RequestContext, value: str) -> str:
    try:
        return names.parse_selector(ctx, value).name
    except AWSError:
        return value


def _context(
    ssm: ParametersBackend, ctx: RequestContext, name: str, params: dict[str, Any]
) -> dict[str, list[str]]:
    context: dict[str, list[str]] = {}
    row = lookup(ssm.store, ctx, name)  # "/x" and "x" are one parameter, with one set of tags
    if row is not None:
        for key, value in ssm.store.tags.of(row.param_id).items():
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


def _resource(ctx: RequestContext, name: str) -> str:
    """The ARN a parameter is authorised on: a public parameter's has no account, as in AWS, so a policy
    written for AWS's public parameters (``arn:aws:ssm:*::parameter/aws/service/*``) means the same here."""
    if name.startswith(public.arn(ctx, public.PREFIX)):
        return name  # already a public parameter's ARN
    if public.is_public(name):
        return public.arn(ctx, name)
    return names.parameter_arn(ctx, name)


def authorize_parameter(
    ssm: ParametersBackend, ctx: RequestContext, action: str, name: str, params: dict[str, Any]
) -> None:
    """``action`` on the parameter ``name``; its tags are read only if policies must be evaluated."""
    ssm.authorizer.authorize(
        ctx, action, _resource(ctx, name), context=lambda: _context(ssm, ctx, name, params)
    )


def authorize_request(ssm: ParametersBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    """The check every Parameter Store operation's rule runs (see authtable.py)."""
    action = f"ssm:{ctx.operation}"
    if ctx.operation in _UNSCOPED:
        ssm.authorizer.authorize(ctx, action, "*")
    elif ctx.operation == "GetParametersByPath":
        path = params.get("Path", "/").rstrip("/") or "/"
        ssm.authorizer.authorize(ctx, action, _resource(ctx, path))
    elif "Names" in params:
        for value in params["Names"]:
            authorize_parameter(ssm, ctx, action, _name_of(ctx, value), params)
    elif "Name" in params:
        authorize_parameter(ssm, ctx, action, _name_of(ctx, params["Name"]), params)
    elif "ResourceId" in params:
        authorize_parameter(ssm, ctx, action, _name_of(ctx, params["ResourceId"]), params)
    else:
        ssm.authorizer.authorize(ctx, action, "*")
    return {}
