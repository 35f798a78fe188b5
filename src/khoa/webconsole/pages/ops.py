"""Console pages for operators: alerts, the design-review findings and this node's health.

Alerts and findings are read through Khoa's own ``khoa-ops`` API as the signed-in principal (so
``khoa:ListAlerts`` / ``khoa:GetReviewFindings`` decide who sees them, and each view is in the trail);
one API page per console page. Health is this node's readiness report, the same facts
``/_khoa/ready`` gives anyone, so it needs no API call; it is shown to signed-in users only.
"""

from __future__ import annotations

from urllib.parse import urlencode

from khoa.webconsole.http import BadRequest, Page, Request, Route, page_arguments

ALERT_SEVERITIES = ("low", "medium", "high", "critical")
FINDING_SEVERITIES = ("low", "medium", "high")
PAGE_SIZE = 50
MAX_RULE_LENGTH = 64


def _base(path: str, filters: dict[str, str]) -> str:
    """The page's URL with its filters (the pager adds ``next``)."""
    kept = {name: value for name, value in filters.items() if value}
    return f"{path}?{urlencode(kept)}" if kept else path


def _choice(request: Request, name: str, allowed: tuple[str, ...]) -> str:
    value = request.arg(name)
    if value and value not in allowed:
        raise BadRequest(f"{name} must be one of: {', '.join(allowed)}.")
    return value


def alerts(request: Request) -> Page:
    severity = _choice(request, "severity", ALERT_SEVERITIES)
    rule = request.arg("rule").strip()
    if len(rule) > MAX_RULE_LENGTH:
        raise BadRequest(f"A rule name has at most {MAX_RULE_LENGTH} characters.")
    token = request.arg("next")
    arguments = page_arguments(PAGE_SIZE, token)
    if severity:
        arguments["MinimumSeverity"] = severity
    if rule:
        arguments["Rule"] = rule
    answer = request.client_api.client("khoa-ops").list_alerts(**arguments)
    return Page(
        "ops/alerts.html",
        {
            "title": "Alerts",
            "alerts": answer.get("Alerts", []),
            "next_token": answer.get("NextToken"),
            "first": not token,
            "base": _base("/console/alerts", {"severity": severity, "rule": rule}),
            "severity": severity,
            "rule": rule,
            "severities": ALERT_SEVERITIES,
        },
    )


def review(request: Request) -> Page:
    severity = _choice(request, "severity", FINDING_SEVERITIES)
    token = request.arg("next")
    arguments = page_arguments(PAGE_SIZE, token)
    if severity:
        arguments["MinimumSeverity"] = severity
    answer = request.client_api.client("khoa-ops").get_review_findings(**arguments)
    return Page(
        "ops/review.html",
        {
            "title": "Review",
            "findings": answer.get("Findings", []),
            "passed": answer.get("PassedRules", []),
            "counts": answer.get("SeverityCounts", {}),
            "reviewed_at": answer.get("ReviewedAt"),
            "next_token": answer.get("NextToken"),
            "first": not token,
            "base": _base("/console/review", {"severity": severity}),
            "severity": severity,
            "severities": FINDING_SEVERITIES,
        },
    )


def health(request: Request) -> Page:
    identity = request.client_api.client("sts").get_caller_identity()
    return Page("ops/health.html", {"title": "Health", "node": request.tools.node_status(identity)})


ROUTES = [
    Route("GET", "/console/alerts", alerts),
    Route("GET", "/console/review", review),
    Route("GET", "/console/health", health),
]
