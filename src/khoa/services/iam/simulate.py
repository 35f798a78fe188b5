"""SimulatePrincipalPolicy and SimulateCustomPolicy, evaluated by the same logic that authorises calls.

For each action and resource the answer is ``allowed``, ``explicitDeny`` or ``implicitDeny``, with the
statements that decided it and the condition keys the policies use that the request did not supply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from khoa.auth.principal import Principal
from khoa.iam.directory import parsed
from khoa.iam.evaluate import Request, evaluate
from khoa.iam.policy import Policy, PolicyError, Statement
from khoa.protocol.context import RequestContext
from khoa.services.iam import aws_managed, errors, paging
from khoa.services.iam.store import (
    ATTACHMENTS,
    ENTITY_ARN,
    GROUP,
    INLINE,
    MANAGED,
    MEMBERS,
    PRINCIPALS,
    ROLE,
    USER,
    VERSIONS,
    tags_of,
)

_ACCOUNT_IN = re.compile(r"(\d{12})")


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


def _managed_sources(conn: Connection, owner_ids: list[str]) -> list[Source]:
    rows = conn.execute(
        select(MANAGED.c.name, MANAGED.c.account_id, VERSIONS.c.document)
        .join(ATTACHMENTS, ATTACHMENTS.c.policy_arn == MANAGED.c.arn)
        .join(VERSIONS, VERSIONS.c.policy_arn == MANAGED.c.arn)
        .where(ATTACHMENTS.c.owner_id.in_(owner_ids))
        .where(VERSIONS.c.version_id == MANAGED.c.default_version)
    ).all()
    return [
        Source(
            parsed(r.document, "identity"),
            r.name,
            "aws-managed" if r.account_id == aws_managed.ACCOUNT else "user-managed",
        )
        for r in rows
    ]


def _entity_sources(conn: Connection, row: Any) -> tuple[list[Source], Policy | None]:
    owners = [(row.principal_id, row.kind)]
    if row.kind == USER:
        owners.extend(
            (gid, GROUP)
            for gid in conn.execute(
                select(MEMBERS.c.group_id).where(MEMBERS.c.user_id == row.principal_id)
            ).scalars()
        )
    sources: list[Source] = []
    for owner_id, kind in owners:
        for name, document in conn.execute(
            select(INLINE.c.policy_name, INLINE.c.document).where(INLINE.c.owner_id == owner_id)
        ).all():
            sources.append(Source(parsed(document, "identity"), name, kind))
    sources.extend(_managed_sources(conn, [o for o, _ in owners]))
    boundary = None
    if row.permissions_boundary:
        document = conn.execute(
            select(VERSIONS.c.document)
            .join(MANAGED, MANAGED.c.arn == VERSIONS.c.policy_arn)
            .where(MANAGED.c.arn == row.permissions_boundary)
            .where(VERSIONS.c.version_id == MANAGED.c.default_version)
        ).scalar()
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


def _simulate(
    ctx: RequestContext,
    params: dict[str, Any],
    principal: Principal,
    context: dict[str, list[str]],
    sources: list[Source],
    boundary: Policy | None,
) -> dict[str, Any]:
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
    results = []
    for action in params["ActionNames"]:
        for resource in params.get("ResourceArns") or ["*"]:
            request = Request(
                principal=principal,
                action=action,
                resource=resource,
                resource_account=resource_account,
                context=context,
            )
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
                        matched.append(
                            {"SourcePolicyId": source.policy_id, "SourcePolicyType": source.policy_type}
                        )
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
            results.append(result)
    page, meta = paging.paginate(results, params)
    return {"EvaluationResults": page, **meta}


def simulate_principal_policy(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    source_arn = params["PolicySourceArn"]
    match = ENTITY_ARN.match(source_arn)
    if match is None:
        raise errors.invalid_input(
            f"Invalid ARN: {source_arn}. The PolicySourceArn must name a user, group or role."
        )
    account, kind, _path, name = match.groups()
    with ctx.runtime.engine.connect() as conn:
        row = conn.execute(
            select(PRINCIPALS)
            .where(PRINCIPALS.c.account_id == account)
            .where(PRINCIPALS.c.kind == kind)
            .where(PRINCIPALS.c.name_lower == name.lower())
        ).first()
        if row is None or account != ctx.account_id:
            raise errors.entity_not_found(kind, name)
        sources, boundary = _entity_sources(conn, row)
        entity_tags = tags_of(conn, row.principal_id)
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
    return _simulate(ctx, params, principal, context, sources, boundary)


def simulate_custom_policy(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
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
    return _simulate(ctx, params, principal, context, [], None)


OPERATIONS = {
    "SimulatePrincipalPolicy": simulate_principal_policy,
    "SimulateCustomPolicy": simulate_custom_policy,
}
