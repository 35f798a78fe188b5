"""Analyzers: CreateAnalyzer, ListAnalyzers, GetAnalyzer, DeleteAnalyzer (external access analyzers,
zone of trust ACCOUNT or ORGANIZATION), and the filters their archive rules and ListFindings use."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from khoa.protocol.context import RequestContext
from khoa.services.accessanalyzer import errors
from khoa.services.accessanalyzer.backend import AnalyzerBackend
from khoa.services.accessanalyzer.paging import page

SUPPORTED_TYPES = ("ACCOUNT", "ORGANIZATION")


def analyzer_arn(ctx: RequestContext, name: str) -> str:
    return f"arn:aws:access-analyzer:{ctx.region}:{ctx.account_id}:analyzer/{name}"


def analyzer_row(analyzer: AnalyzerBackend, ctx: RequestContext, arn: str) -> Any:
    """The caller's analyzer with this ARN (in the request's account and Region), or ResourceNotFound."""
    row = analyzer.store.analyzer_by_arn(arn)
    if row is None or row.account_id != ctx.account_id or row.region != ctx.region:
        raise errors.analyzer_not_found(arn.rpartition("/")[2])
    return row


def _flatten(finding: dict[str, Any]) -> dict[str, list[str]]:
    """Filter keys as AWS names them (``principal.AWS``, ``condition.aws:SourceIp``...) to their values."""
    flat: dict[str, list[str]] = {}
    for key, value in finding.items():
        if isinstance(value, dict):
            for inner, item in value.items():
                flat[f"{key}.{inner}"] = [str(item)]
        elif isinstance(value, list):
            flat[key] = [str(v) for v in value if not isinstance(v, dict)]
        elif isinstance(value, bool):
            flat[key] = ["true" if value else "false"]
        elif isinstance(value, datetime):
            continue
        else:
            flat[key] = [str(value)]
    return flat


def archive_matches(criteria: dict[str, Any], finding: dict[str, Any]) -> bool:
    """Whether a finding meets every criterion (eq, neq, contains, exists) of a filter."""
    flat = _flatten(finding)
    for key, criterion in criteria.items():
        values = flat.get(key, [])
        if "eq" in criterion and not any(v in criterion["eq"] for v in values):
            return False
        if "neq" in criterion and any(v in criterion["neq"] for v in values):
            return False
        if "contains" in criterion and not any(c in v for v in values for c in criterion["contains"]):
            return False
        if "exists" in criterion and bool(values) != criterion["exists"]:
            return False
    return True


def _summary(row: Any) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "arn": row.arn,
        "name": row.name,
        "type": row.type,
        "createdAt": datetime.fromtimestamp(row.created_at, UTC),
        "status": "ACTIVE",
    }
    tags = json.loads(row.tags)
    summary["tags"] = tags
    return summary


def create_analyzer(analyzer: AnalyzerBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    kind = params["type"]
    name = params["analyzerName"]
    if kind not in SUPPORTED_TYPES:
        raise errors.validation(
            f"Analyzer type {kind} is not supported. Khoa supports ACCOUNT and ORGANIZATION."
        )
    if params.get("configuration"):
        raise errors.validation("configuration is only valid for unused and internal access analyzers.")
    tags = params.get("tags") or {}
    for key in tags:
        if key.lower().startswith("aws:"):
            raise errors.validation("Tag keys cannot start with aws:.")
    if kind == "ORGANIZATION" and analyzer.store.organization_accounts(ctx.account_id) is None:
        if analyzer.store.member_of_organization(ctx.account_id):
            raise errors.validation(
                "You must be signed in to the management account of the organization to create an "
                "organization analyzer."
            )
        raise errors.validation("You must create an organization to create an analyzer of type ORGANIZATION.")
    rules = params.get("archiveRules") or []
    names = [rule["ruleName"] for rule in rules]
    if len(set(names)) != len(names):
        raise errors.validation("Archive rule names must be unique.")
    if analyzer.store.analyzers(ctx.account_id, ctx.region, kind):
        if analyzer.store.analyzer(ctx.account_id, ctx.region, name) is not None:
            raise errors.analyzer_exists(name)
        raise errors.one_per_zone(kind)
    arn = analyzer_arn(ctx, name)
    created = analyzer.store.create(
        {
            "arn": arn,
            "account_id": ctx.account_id,
            "region": ctx.region,
            "name": name,
            "type": kind,
            "created_at": ctx.now.timestamp(),
            "tags": json.dumps(tags, sort_keys=True),
            "archive_rules": json.dumps(rules, sort_keys=True),
        }
    )
    if not created:
        raise errors.analyzer_exists(name)
    return {"arn": arn}


def list_analyzers(analyzer: AnalyzerBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    rows = analyzer.store.analyzers(ctx.account_id, ctx.region, params.get("type"))
    summaries = [_summary(row) for row in rows]
    items, token = page(summaries, params.get("maxResults"), params.get("nextToken"), str(params.get("type")))
    result: dict[str, Any] = {"analyzers": items}
    if token:
        result["nextToken"] = token
    return result


def _by_name(analyzer: AnalyzerBackend, ctx: RequestContext, name: str) -> Any:
    row = analyzer.store.analyzer(ctx.account_id, ctx.region, name)
    if row is None:
        raise errors.analyzer_not_found(name)
    return row


def get_analyzer(analyzer: AnalyzerBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return {"analyzer": _summary(_by_name(analyzer, ctx, params["analyzerName"]))}


def delete_analyzer(analyzer: AnalyzerBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    analyzer.store.delete(_by_name(analyzer, ctx, params["analyzerName"]).arn)
    return {}


OPERATIONS = {
    "CreateAnalyzer": create_analyzer,
    "ListAnalyzers": list_analyzers,
    "GetAnalyzer": get_analyzer,
    "DeleteAnalyzer": delete_analyzer,
}
