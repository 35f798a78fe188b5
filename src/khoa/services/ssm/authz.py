"""Authorising Parameter Store requests: ``ssm:<Operation>`` on each parameter's ARN (path ARNs for
GetParametersByPath), with the condition keys the Service Authorization Reference ("Actions,
resources, and condition keys for AWS Systems Manager") gives Parameter Store's actions:
``ssm:resourceTag/*`` and ``aws:ResourceTag/*`` (the parameter's tags), ``aws:RequestTag/*`` and
``aws:TagKeys`` (PutParameter, AddTagsToResource; RemoveTagsFromResource's ``aws:TagKeys``),
``ssm:Overwrite`` and ``ssm:Policies`` (PutParameter) and ``ssm:Recursive`` (GetParametersByPath).

What is authorised is what the handler serves: names go through :func:`names.parse_selector` and a
path through :func:`names.hierarchy`, the functions the handlers themselves use."""

from __future__ import annotations

from typing import Any

from khoa.protocol.context import RequestContext
from khoa.protocol.errors import AWSError
from khoa.services.ssm import errors, names, public
from khoa.services.ssm.backend import ParametersBackend
from khoa.services.ssm.parameters import find, lookup

_UNSCOPED = ("DescribeParameters",)


def _name_of(ctx: RequestContext, value: str) -> str:
    try:
        return names.parse_selector(ctx, value).name
    except AWSError:
        # Not a name this account can hold (another account's ARN, a public parameter's ARN, a bad
        # selector): the handler cleans it as parse_selector does, so the same spaces go here too.
        return names.clean(value)


def _flag(value: Any) -> list[str]:
    return ["true" if value else "false"]


def _request_keys(operation: str, params: dict[str, Any]) -> dict[str, list[str]]:
    """The condition keys the request itself sets, for the operations the Service Authorization
    Reference gives them to. A Boolean member left out has its default, false, as its value: a policy
    that denies ``ssm:Recursive = true`` or allows only ``ssm:Overwrite = false`` reads a request that
    doesn't say as the request it is."""
    context: dict[str, list[str]] = {}
    if operation == "GetParametersByPath":
        context["ssm:recursive"] = _flag(params.get("Recursive", False))
    elif operation == "PutParameter":
        context["ssm:overwrite"] = _flag(params.get("Overwrite", False))
        # "true" when the request attaches parameter policies (the user guide's example denies
        # creating or updating a parameter with policies on ssm:Policies = true).
        context["ssm:policies"] = _flag(params.get("Policies"))
    if operation in ("PutParameter", "AddTagsToResource"):
        tags = params.get("Tags")
        if tags:
            context["aws:tagkeys"] = [t["Key"] for t in tags]
            # The value each key is stored with (a key given twice keeps its last value), and the
            # values of keys differing only in case all kept (such a request is refused:
            # _refuse_case_variants), never one silently dropped.
            for key, value in {t["Key"]: t["Value"] for t in tags}.items():
                context.setdefault(f"aws:requesttag/{key.lower()}", []).append(value)
    elif operation == "RemoveTagsFromResource" and params.get("TagKeys"):
        context["aws:tagkeys"] = list(params["TagKeys"])
    return context


def _context(
    ssm: ParametersBackend, ctx: RequestContext, name: str, params: dict[str, Any]
) -> dict[str, list[str]]:
    context: dict[str, list[str]] = {}
    row = lookup(ssm.store, ctx, name)  # "/x" and "x" are one parameter, with one set of tags
    if row is not None:
        for key, value in ssm.store.tags.of(row.param_id).items():
            # Tag keys differing only in case (refused now, but a parameter may hold them from before)
            # give one condition key all their values: a Deny on any of them still matches.
            context.setdefault(f"ssm:resourcetag/{key.lower()}", []).append(value)
            context.setdefault(f"aws:resourcetag/{key.lower()}", []).append(value)
    context.update(_request_keys(ctx.operation, params))
    return context


def _resource(ctx: RequestContext, name: str) -> str:
    """The ARN a parameter is authorised on: a public parameter's has no account, as in AWS, so a policy
    written for AWS's public parameters (``arn:aws:ssm:*::parameter/aws/service/*``) means the same here."""
    if name.startswith(public.arn(ctx, public.PREFIX)):
        return name  # already a public parameter's ARN
    if public.is_public(name):
        return public.arn(ctx, name)
    return names.parameter_arn(ctx, name)


def _path_resource(ctx: RequestContext, path: str) -> str:
    """The ARN GetParametersByPath is authorised on: the path's own (``/a/b/`` and ``/a/b`` are one
    hierarchy), a public one for a path the public parameters answer (see ``browse``)."""
    trimmed = path.rstrip("/") or "/"
    if public.is_public(trimmed + "/"):
        return public.arn(ctx, trimmed)
    return names.parameter_arn(ctx, trimmed)


def authorize_parameter(
    ssm: ParametersBackend, ctx: RequestContext, action: str, name: str, params: dict[str, Any]
) -> None:
    """``action`` on the parameter ``name``; its tags are read only if policies must be evaluated."""
    ssm.authorizer.authorize(
        ctx, action, _resource(ctx, name), context=lambda: _context(ssm, ctx, name, params)
    )


def _tag_keys(params: dict[str, Any]) -> list[str]:
    return [
        t["Key"] for t in params.get("Tags") or [] if isinstance(t, dict) and isinstance(t.get("Key"), str)
    ]


def _collision(first: str, second: str) -> AWSError:
    return errors.validation(
        f"The tag keys {first} and {second} differ only in case. Policy condition keys don't distinguish "
        "tag keys by case, so a parameter can't have both."
    )


def _refuse_case_variants(params: dict[str, Any]) -> None:
    """Tag keys are case-sensitive, the condition keys that test them (``aws:RequestTag/<key>``,
    ``aws:ResourceTag/<key>``, ``ssm:resourceTag/<key>``) are not: a request whose tags include two keys
    equal ignoring case would be judged on whichever value a policy sees, so it is refused (AWS is
    silent; Khoa fails closed), with Parameter Store's ValidationException, before anything is judged."""
    seen: dict[str, str] = {}
    for key in _tag_keys(params):
        first = seen.setdefault(key.lower(), key)
        if first != key:  # a key given twice is one tag, its last value kept
            raise _collision(first, key)


def _refuse_tag_collisions(ssm: ParametersBackend, ctx: RequestContext, params: dict[str, Any]) -> None:
    """AddTagsToResource of a key differing only in case from one the parameter has is refused as
    :func:`_refuse_case_variants` says; checked once the caller is known to be allowed to tag it (the
    answer tells what tags it has). A resource the handler refuses anyway is left to it."""
    if params.get("ResourceType") != "Parameter":
        return
    try:
        selector = names.parse_selector(ctx, params["ResourceId"])
    except AWSError:
        return
    row = find(ssm.store, ctx, selector) if selector.version is None and selector.label is None else None
    if row is None:
        return
    held = {key.lower(): key for key in ssm.store.tags.of(row.param_id)}
    for key in _tag_keys(params):
        if held.get(key.lower(), key) != key:
            raise _collision(held[key.lower()], key)


def authorize_request(ssm: ParametersBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    """The check every Parameter Store operation's rule runs (see authtable.py)."""
    action = f"ssm:{ctx.operation}"
    if ctx.operation in ("PutParameter", "AddTagsToResource"):
        _refuse_case_variants(params)
    if ctx.operation in _UNSCOPED:
        ssm.authorizer.authorize(ctx, action, "*")
    elif ctx.operation == "GetParametersByPath":
        ssm.authorizer.authorize(
            ctx,
            action,
            _path_resource(ctx, names.hierarchy(params.get("Path", "/"))),
            context=_request_keys(ctx.operation, params),
        )
    elif "Names" in params:
        for value in params["Names"]:
            authorize_parameter(ssm, ctx, action, _name_of(ctx, value), params)
    elif "Name" in params:
        authorize_parameter(ssm, ctx, action, _name_of(ctx, params["Name"]), params)
    elif "ResourceId" in params:
        name = _name_of(ctx, params["ResourceId"])
        authorize_parameter(ssm, ctx, action, name, params)
        if ctx.operation == "AddTagsToResource":
            _refuse_tag_collisions(ssm, ctx, params)
    else:
        ssm.authorizer.authorize(ctx, action, "*")
    return {}
