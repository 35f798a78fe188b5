"""External-access findings: who outside an analyzer's zone of trust (its account, or its organization)
can do what to a key or secret, through which policy statement or grant.

Findings are recomputed from the current key policies, grants and secret policies each time an
analyzer's findings are read (List/Get/Update), and reconciled with the stored ones, so archive state
sticks, access that went away reads RESOLVED, and access that comes back is ACTIVE again.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Set as AbstractSet
from datetime import UTC, datetime
from typing import Any

from khoa.access.policy import Policy, PolicyError, Statement
from khoa.access.public import public_statements
from khoa.protocol.context import RequestContext
from khoa.services.accessanalyzer import catalog, errors
from khoa.services.accessanalyzer.analyzers import analyzer_row, archive_matches
from khoa.services.accessanalyzer.backend import AnalyzerBackend
from khoa.services.accessanalyzer.paging import page
from khoa.services.accessanalyzer.store import Resource

_SERVICE = {"AWS::KMS::Key": "kms", "AWS::SecretsManager::Secret": "secretsmanager"}


def _account_of(principal: str) -> str | None:
    if principal.isdigit() and len(principal) == 12:
        return principal
    parts = principal.split(":")
    if principal.startswith("arn:") and len(parts) >= 5 and parts[4]:
        return parts[4]
    return None


def _actions(statement: Statement, service: str) -> list[str]:
    names = catalog.action_names(service)
    return [f"{service}:{name}" for name in names if statement.matches_action(f"{service}:{name}")]


def _condition(statement: Statement) -> dict[str, str]:
    flat: dict[str, str] = {}
    for entries in statement.condition.values():
        for key, values in entries.items():
            items = values if isinstance(values, list) else [values]
            flat[key] = ",".join(str(v).lower() if isinstance(v, bool) else str(v) for v in items)
    return flat


# Condition keys that name the caller's account, and the operators that pin them to the values given.
_ACCOUNT_KEYS = frozenset(
    {"aws:principalaccount", "kms:calleraccount", "aws:sourceaccount", "aws:sourceowner"}
)
_ORG_KEYS = frozenset({"aws:principalorgid"})
_ARN_KEYS = frozenset({"aws:principalarn"})
_PINNING = frozenset({"StringEquals", "StringLike", "ArnEquals", "ArnLike", "StringEqualsIgnoreCase"})


def _inside_zone(statement: Statement, zone: AbstractSet[str], orgs: AbstractSet[str]) -> bool:
    """Whether a condition of the statement limits callers to accounts of the zone of trust (as the
    AWS managed keys' ``kms:CallerAccount`` does, or ``aws:PrincipalOrgID`` naming the organization)."""
    for operator, entries in statement.condition.items():
        if operator not in _PINNING:
            continue
        for key, raw in entries.items():
            values = [str(v) for v in (raw if isinstance(raw, list) else [raw])]
            lowered = key.lower()
            if lowered in _ACCOUNT_KEYS and all(v in zone for v in values):
                return True
            if lowered in _ORG_KEYS and all(v in orgs for v in values):
                return True
            if lowered in _ARN_KEYS and all(_account_of(v) in zone for v in values):
                return True
    return False


def _denied(policy: Policy, principal: str, action: str) -> bool:
    """An unconditional Deny of ``action`` to everyone or to this principal."""
    for statement in policy.statements:
        if statement.effect != "Deny" or statement.condition or not statement.matches_action(action):
            continue
        if statement.principals and any(v in ("*", principal) for _, v in statement.principals):
            return True
    return False


def external_access(
    resource: Resource, zone: AbstractSet[str], orgs: AbstractSet[str] = frozenset()
) -> list[dict[str, Any]]:
    """Each way someone outside ``zone`` can use ``resource``: principal, actions, condition, source."""
    service = _SERVICE[resource.resource_type]
    found: list[dict[str, Any]] = []
    for document in resource.policies:
        try:
            policy = Policy.parse(document, "resource")
        except PolicyError:
            policy = None  # evaluation reads it as deny-all: no access to report
        if policy is not None:
            public = {id(s) for s in public_statements(policy)}
            for index, statement in enumerate(policy.statements):
                if statement.effect != "Allow":
                    continue
                if statement.resources and not statement.matches_resource(resource.arn, {}):
                    continue
                principals: list[tuple[str, str]] = []
                if _inside_zone(statement, zone, orgs):
                    continue  # whoever the principal, a condition keeps callers inside the zone
                if statement.not_principals is not None:
                    principals = [("AWS", "*")]
                else:
                    for kind, value in statement.principals or ():
                        if kind == "Service" or kind == "CanonicalUser":
                            continue
                        account = _account_of(value) if kind == "AWS" else None
                        if kind == "AWS" and value != "*" and account in zone:
                            continue
                        principals.append((kind, value))
                for kind, value in principals:
                    actions = [a for a in _actions(statement, service) if not _denied(policy, value, a)]
                    if not actions:
                        continue
                    found.append(
                        {
                            "principal": {kind: value},
                            "action": actions,
                            "condition": _condition(statement),
                            "isPublic": value == "*" and id(statement) in public,
                            "source": f"policy:{statement.sid or index}",
                        }
                    )
    for grant in resource.grants:
        account = _account_of(grant["grantee"])
        if account is None or account in zone:
            continue
        condition: dict[str, str] = {}
        # EncryptionContextEquals / EncryptionContextSubset: the context the grant requires
        for pairs in (grant["constraints"] or {}).values():
            for key, value in pairs.items():
                condition[f"kms:EncryptionContext:{key}"] = value
        found.append(
            {
                "principal": {"AWS": grant["grantee"]},
                "action": [f"kms:{op}" for op in grant["operations"]],
                "condition": condition,
                "isPublic": False,
                "source": f"grant:{grant['grant_id']}",
            }
        )
    return found


def _finding_id(analyzer_arn: str, resource_arn: str, access: dict[str, Any]) -> str:
    basis = json.dumps([analyzer_arn, resource_arn, access["principal"], access["source"]], sort_keys=True)
    return str(uuid.UUID(hashlib.sha256(basis.encode()).hexdigest()[:32]))


def refresh(analyzer: AnalyzerBackend, row: Any, now: datetime) -> None:
    """Recompute the analyzer's findings from the current policies and grants, and store them."""
    orgs: set[str] = set()
    accounts = [row.account_id]
    if row.type == "ORGANIZATION":
        org = analyzer.store.organization_accounts(row.account_id)
        if org is not None:
            orgs, accounts = {org[0]}, org[1]
    zone = set(accounts)
    rules = json.loads(row.archive_rules)
    current: dict[str, dict[str, Any]] = {}
    archived: set[str] = set()
    for resource in analyzer.store.resources(accounts, row.region):
        for access in external_access(resource, zone, orgs):
            finding_id = _finding_id(row.arn, resource.arn, access)
            details = {k: access[k] for k in ("principal", "action", "condition", "isPublic")}
            details["via"] = access["source"]  # the policy statement or grant that shares it
            current[finding_id] = {
                "resource_arn": resource.arn,
                "resource_type": resource.resource_type,
                "owner_account": resource.account_id,
                "details": json.dumps(details, sort_keys=True),
            }
            summary = {
                **details,
                "id": finding_id,
                "resource": resource.arn,
                "resourceType": resource.resource_type,
                "resourceOwnerAccount": resource.account_id,
                "status": "ACTIVE",
            }
            if any(archive_matches(rule["filter"], summary) for rule in rules):
                archived.add(finding_id)
    analyzer.store.reconcile(row.arn, current, archived, now.timestamp())


def _time(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def _finding(row: Any) -> dict[str, Any]:
    details = json.loads(row.details)
    finding: dict[str, Any] = {
        "id": row.finding_id,
        "principal": details["principal"],
        "action": details["action"],
        "resource": row.resource_arn,
        "isPublic": details["isPublic"],
        "resourceType": row.resource_type,
        "condition": details["condition"],
        "createdAt": _time(row.created_at),
        "analyzedAt": _time(row.analyzed_at),
        "updatedAt": _time(row.updated_at),
        "status": row.status,
        "resourceOwnerAccount": row.owner_account,
        # FindingSourceType has no value for a KMS grant: only policy access names its source
        "sources": [{"type": "POLICY"}] if details["via"].startswith("policy:") else [],
    }
    return finding


def _filtered(rows: list[Any], params: dict[str, Any]) -> list[dict[str, Any]]:
    findings = [_finding(row) for row in rows]
    criteria = params.get("filter") or {}
    findings = [f for f in findings if archive_matches(criteria, f)]
    sort = params.get("sort")
    if sort and sort.get("attributeName"):
        name = sort["attributeName"]
        findings.sort(key=lambda f: str(f.get(name, "")), reverse=sort.get("orderBy") == "DESC")
    return findings


def _analyzer_for(analyzer: AnalyzerBackend, ctx: RequestContext, arn: str) -> Any:
    row = analyzer_row(analyzer, ctx, arn)
    refresh(analyzer, row, ctx.now)
    return row


def list_findings(analyzer: AnalyzerBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    row = _analyzer_for(analyzer, ctx, params["analyzerArn"])
    findings = _filtered(analyzer.store.findings(row.arn), params)
    fingerprint = json.dumps([row.arn, params.get("filter"), params.get("sort")], sort_keys=True, default=str)
    items, token = page(findings, params.get("maxResults"), params.get("nextToken"), fingerprint)
    result: dict[str, Any] = {"findings": items}
    if token:
        result["nextToken"] = token
    return result


def list_findings_v2(
    analyzer: AnalyzerBackend, ctx: RequestContext, params: dict[str, Any]
) -> dict[str, Any]:
    result = list_findings(analyzer, ctx, params)
    keep = (
        "analyzedAt",
        "createdAt",
        "id",
        "resource",
        "resourceType",
        "resourceOwnerAccount",
        "status",
        "updatedAt",
    )
    result["findings"] = [
        {**{k: f[k] for k in keep}, "findingType": "ExternalAccess"} for f in result["findings"]
    ]
    return result


def _one(analyzer: AnalyzerBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    row = _analyzer_for(analyzer, ctx, params["analyzerArn"])
    for finding in analyzer.store.findings(row.arn):
        if finding.finding_id == params["id"]:
            return _finding(finding)
    raise errors.finding_not_found(params["id"])


def get_finding(analyzer: AnalyzerBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return {"finding": _one(analyzer, ctx, params)}


def get_finding_v2(analyzer: AnalyzerBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    finding = _one(analyzer, ctx, params)
    details = {
        "externalAccessDetails": {
            "action": finding["action"],
            "condition": finding["condition"],
            "isPublic": finding["isPublic"],
            "principal": finding["principal"],
            "sources": finding["sources"],
        }
    }
    keep = (
        "analyzedAt",
        "createdAt",
        "id",
        "resource",
        "resourceType",
        "resourceOwnerAccount",
        "status",
        "updatedAt",
    )
    return {**{k: finding[k] for k in keep}, "findingDetails": [details], "findingType": "ExternalAccess"}


def update_findings(analyzer: AnalyzerBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    ids = params.get("ids")
    resource = params.get("resourceArn")
    if (ids is None) == (resource is None):
        raise errors.validation("Specify either ids or resourceArn, not both.")
    row = _analyzer_for(analyzer, ctx, params["analyzerArn"])
    if resource is not None:
        ids = analyzer.store.ids_for_resource(row.arn, resource)
    known = {f.finding_id for f in analyzer.store.findings(row.arn)}
    for finding_id in ids or []:
        if finding_id not in known:
            raise errors.finding_not_found(finding_id)
    analyzer.store.set_status(row.arn, list(ids or []), params["status"], ctx.now.timestamp())
    return {}


OPERATIONS = {
    "ListFindings": list_findings,
    "ListFindingsV2": list_findings_v2,
    "GetFinding": get_finding,
    "GetFindingV2": get_finding_v2,
    "UpdateFindings": update_findings,
}
