"""SimulatePrincipalPolicy and SimulateCustomPolicy, evaluated by the same logic that authorises calls.

For each action and resource the answer is ``allowed``, ``explicitDeny`` or ``implicitDeny``, with the
statements that decided it and the condition keys the policies use that the request did not supply.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from khoa.access import aws_managed
from khoa.access.directory import parsed
from khoa.access.evaluate import Request, evaluate
from khoa.access.policy import Policy, PolicyError, Statement
from khoa.auth.principal import Principal
from khoa.protocol.context import RequestContext
from khoa.services.iam import errors, paging
from khoa.services.iam.backend import IamBackend
from khoa.services.iam.names import ENTITY_ARN, ROLE, USER
from khoa.services.iam.store import EntityPolicies

_ACCOUNT_IN = re.compile(r"(\d{12})")
# ActionNames x ResourceArns pairs one request may simulate (over all its pages). The API reference
# sets no limit on either list. This is far above any real use (every action AWS defines, fewer than
# 20,000, against 50 resources) and far below what a 1 MiB body can name (some 300 million pairs).
MAX_SIMULATIONS = 1_000_000
# How long one page may take evaluating (seconds): it then ends early, truncated, with a Marker.
PAGE_SECONDS = 1.0


@dataclass(frozen=True)
class Source:
    """One policy taking part in a simulation, named as the response's MatchedStatements name it."""

    policy: Policy
    policy_id: str
    policy_type: str


def _parse(document: str, source: str, label: str) -> Policy:
    """A policy supplied with the request, read by the one strict parser (stored policies are read
    with ``parsed``, exactly as authorisation reads them: one that does not parse is a deny)."""
    try:
        return Policy.parse(document, source)
    except PolicyError as exc:
        raise errors.invalid_input(f"{label}: {exc}") from None


def _sources(policies: EntityPolicies, has_boundary: bool) -> tuple[list[Source], Policy | None]:
    """The stored policies as simulation sources (read as authorisation reads them), and the boundary
    (an empty one when the entity names a boundary policy that no longer exists)."""
    sources = [Source(parsed(document, "identity"), name, kind) for name, document, kind in policies.inline]
    sources.extend(
        Source(
            parsed(document, "identity"),
            name,
            "aws-managed" if account == aws_managed.ACCOUNT else "user-managed",
        )
        for name, account, document in policies.managed
    )
    boundary = None
    if has_boundary:
        document = policies.boundary_document
        boundary = parsed(document, "boundary") if document else Policy((), "boundary")
    return sources, boundary


def _condition_keys(statement: Statement) -> list[str]:
    keys: list[str] = []
    for entries in statement.condition.values():
        if isinstance(entries, dict):
            keys.extend(str(k) for k in entries)
    return keys


def _matching(sources: list[Source], request: Request) -> list[tuple[Statement, Source]]:
    return [
        (statement, source)
        for source in sources
        for statement in source.policy.statements
        if statement.matches_action(request.action)
        and statement.matches_resource(request.resource, request.context)
        and statement.matches_conditions(request.context)
    ]


def _missing(sources: list[Source], request: Request) -> list[str]:
    missing: list[str] = []
    for source in sources:
        for statement in source.policy.statements:
            if not (
                statement.matches_action(request.action)
                and statement.matches_resource(request.resource, request.context)
            ):
                continue
            for key in _condition_keys(statement):
                if key.lower() not in request.context and key not in missing:
                    missing.append(key)
    return missing


def _context_entries(entries: list[dict[str, Any]]) -> dict[str, list[str]]:
    context: dict[str, list[str]] = {}
    for entry in entries:
        name = entry.get("ContextKeyName")
        if name:
            context[name.lower()] = [str(v) for v in entry.get("ContextKeyValues", [])]
    return context


def _result(
    request: Request,
    sources: list[Source],
    resource_source: list[Source],
    resource_policy: Policy | None,
    boundary: Policy | None,
) -> dict[str, Any]:
    """The EvaluationResult of one action on one resource."""
    action, resource = request.action, request.resource
    decision = evaluate(
        request, identity=[s.policy for s in sources], resource=resource_policy, boundary=boundary
    )
    if decision.allowed:
        verdict = "allowed"
    elif decision.explicit_deny:
        verdict = "explicitDeny"
    else:
        verdict = "implicitDeny"
    matched = []
    if verdict != "implicitDeny":
        wanted = "Allow" if verdict == "allowed" else "Deny"
        for statement, source in _matching(sources + resource_source, request):
            if statement.effect == wanted:
                matched.append({"SourcePolicyId": source.policy_id, "SourcePolicyType": source.policy_type})
    missing = _missing(sources + resource_source, request)
    result: dict[str, Any] = {
        "EvalActionName": action,
        "EvalResourceName": resource,
        "EvalDecision": verdict,
        "MatchedStatements": matched,
        "MissingContextValues": missing,
        "ResourceSpecificResults": [
            {
                "EvalResourceName": resource,
                "EvalResourceDecision": verdict,
                "MatchedStatements": matched,
                "MissingContextValues": missing,
            }
        ],
    }
    if boundary is not None:
        in_boundary = any(
            s.effect == "Allow" for s, _ in _matching([Source(boundary, "boundary", "none")], request)
        )
        result["PermissionsBoundaryDecisionDetail"] = {"AllowedByPermissionsBoundary": in_boundary}
    return result


def _page(params: dict[str, Any]) -> tuple[list[str], list[str], int, int]:
    """The actions and resources simulated, and the page asked for: the position of its first
    result in ActionNames x ResourceArns (actions outer, resources inner) and the position after its
    last. Refuses more pairs than :data:`MAX_SIMULATIONS`, and a Marker Khoa cannot have issued for
    them (one is issued only while pairs are left, so it is below their number)."""
    actions: list[str] = params.get("ActionNames") or []
    resources: list[str] = params.get("ResourceArns") or ["*"]
    total = len(actions) * len(resources)
    if total > MAX_SIMULATIONS:
        raise errors.invalid_input(
            f"The simulation would evaluate {total} combinations of ActionNames and ResourceArns "
            f"({len(actions)} x {len(resources)}); at most {MAX_SIMULATIONS} can be simulated in one request."
        )
    first = paging.start(params)
    if params.get("Marker") and first >= total:
        raise paging.invalid_marker()
    limit = params.get("MaxItems") or paging.DEFAULT_MAX_ITEMS
    return actions, resources, first, min(first + limit, total)


def _simulate(
    params: dict[str, Any],
    principal: Principal,
    context: dict[str, list[str]],
    sources: list[Source],
    boundary: Policy | None,
) -> dict[str, Any]:
    actions, resources, first, end = _page(params)
    for i, document in enumerate(params.get("PolicyInputList") or [], start=1):
        sources.append(
            Source(_parse(document, "identity", "PolicyInputList"), f"PolicyInputList.{i}", "none")
        )
    boundaries = params.get("PermissionsBoundaryPolicyInputList") or []
    if boundaries:
        boundary = _parse(boundaries[0], "boundary", "PermissionsBoundaryPolicyInputList")
    resource_policy = None
    resource_source: list[Source] = []
    if params.get("ResourcePolicy"):
        resource_policy = _parse(params["ResourcePolicy"], "resource", "ResourcePolicy")
        resource_source = [Source(resource_policy, "ResourcePolicy", "resource")]
    owner = _ACCOUNT_IN.search(params.get("ResourceOwner") or "")
    resource_account = owner.group(1) if owner else principal.account_id
    context.update(_context_entries(params.get("ContextEntries") or []))
    # Only the page's pairs are evaluated, each from its position: a request's time and memory are
    # those of its page, however many pairs it names. A page also ends once it has taken
    # PAGE_SECONDS (after one result at least, so paging always moves on): what a pair costs grows
    # with the policies' statements, and a megabyte of them makes each pair take milliseconds. AWS
    # allows this: "IAM might return fewer results, even when there are more results available".
    deadline = time.monotonic() + PAGE_SECONDS
    results = []
    position = first
    while position < end:
        action, resource = divmod(position, len(resources))
        request = Request(
            principal=principal,
            action=actions[action],
            resource=resources[resource],
            resource_account=resource_account,
            context=context,
        )
        results.append(_result(request, sources, resource_source, resource_policy, boundary))
        position += 1
        if time.monotonic() >= deadline:
            break
    truncated = position < len(actions) * len(resources)
    meta: dict[str, Any] = {"IsTruncated": truncated}
    if truncated:
        meta["Marker"] = paging.encode(position)
    return {"EvaluationResults": results, **meta}


def simulate_principal_policy(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    source_arn = params["PolicySourceArn"]
    match = ENTITY_ARN.match(source_arn)
    if match is None:
        raise errors.invalid_input(
            f"Invalid ARN: {source_arn}. The PolicySourceArn must name a user, group or role."
        )
    account, kind, path, name = match.groups()
    row = iam.store.entities.find(account, kind, name) if account == ctx.account_id else None
    if row is None or row.path != path:
        # The ARN names the entity, path and all (it is what the caller was authorised on): the same
        # name under another path is another entity, and there is none.
        raise errors.entity_not_found(kind, name)
    policies = iam.store.reports.entity_policies(row)
    sources, boundary = _sources(policies, bool(row.permissions_boundary))
    entity_tags = policies.tags
    principal = Principal(
        account_id=row.account_id,
        arn=row.arn,
        user_id=row.principal_id,
        kind="AssumedRole" if kind == ROLE else "IAMUser",
        name=row.name,
        principal_id=row.principal_id,
    )
    context: dict[str, list[str]] = {
        "aws:principalarn": [row.arn],
        "aws:principalaccount": [row.account_id],
        "aws:userid": [row.principal_id],
        "aws:principaltype": ["AssumedRole" if kind == ROLE else "User"],
    }
    if kind == USER:
        context["aws:username"] = [row.name]
    for tag in entity_tags:
        context[f"aws:principaltag/{tag['Key'].lower()}"] = [tag["Value"]]
    return _simulate(params, principal, context, sources, boundary)


def simulate_custom_policy(iam: IamBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    caller_arn = params.get("CallerArn") or ctx.principal.arn
    match = _ACCOUNT_IN.search(caller_arn)
    account = match.group(1) if match else ctx.account_id
    name = caller_arn.rsplit("/", 1)[-1] if "/" in caller_arn else ""
    principal = Principal(
        account_id=account, arn=caller_arn, user_id=name or account, kind="IAMUser", name=name
    )
    context: dict[str, list[str]] = {"aws:principalarn": [caller_arn], "aws:principalaccount": [account]}
    if ":user/" in caller_arn:
        context["aws:username"] = [name]
    return _simulate(params, principal, context, [], None)


OPERATIONS = {
    "SimulatePrincipalPolicy": simulate_principal_policy,
    "SimulateCustomPolicy": simulate_custom_policy,
}
