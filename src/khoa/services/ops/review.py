"""GetReviewFindings: ``khoa review``'s checklist for the caller's account, through the API.

The rules run (``OpsBackend.review``) on every call: findings describe the installation now, and a
stored copy would go stale the moment someone fixes a finding. Installation-wide rules are evaluated
only for the installation's first account (see the package docstring). Findings are returned highest
severity first, a page at a time (the review of a large account can find thousands); ``NextToken`` is
an offset into the same ordering, so a page may shift if findings change between calls, which is
acceptable for a checklist re-run on every visit.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from khoa.protocol.context import RequestContext
from khoa.services.ops import paging
from khoa.services.ops.backend import OpsBackend

SEVERITIES = ("low", "medium", "high")
DEFAULT_MAX_RESULTS = 50


def get_review_findings(ops: OpsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    """Authorised before it runs, as ``khoa:GetReviewFindings`` on ``*`` (authtable.py)."""
    minimum = params.get("MinimumSeverity", "low")
    filters = {"severity": minimum}
    offset = paging.decode(params["NextToken"], filters) if params.get("NextToken") else 0
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise paging.invalid_next_token()
    limit = params.get("MaxResults", DEFAULT_MAX_RESULTS)
    now = ctx.now.timestamp()
    installation_wide = bool(ops.installation_account) and ctx.account_id == ops.installation_account
    review = ops.review(ctx.account_id, installation_wide, now)
    findings: list[dict[str, Any]] = review["Findings"]
    counts = {label.capitalize(): 0 for label in SEVERITIES}
    for finding in findings:
        counts[finding["Severity"].capitalize()] += 1
    floor = SEVERITIES.index(minimum)
    shown = [f for f in findings if SEVERITIES.index(f["Severity"]) >= floor]
    result: dict[str, Any] = {
        "Findings": shown[offset : offset + limit],
        "PassedRules": review["PassedRules"],
        "SeverityCounts": counts,
        "ReviewedAt": datetime.fromtimestamp(now, UTC),
    }
    if len(shown) > offset + limit:
        result["NextToken"] = paging.encode(offset + limit, filters)
    return result


OPERATIONS = {"GetReviewFindings": get_review_findings}
