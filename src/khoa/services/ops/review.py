"""GetReviewFindings: ``khoa review``'s checklist for the caller's account, through the API.

The rules run (``OpsBackend.review``) on every call without a NextToken: findings describe the
installation now, and a stored copy would go stale the moment someone fixes a finding.
Installation-wide rules are evaluated only for the installation's first account (see the package
docstring). Findings are returned highest severity first, a page at a time (the review of a large
account can find thousands, and takes seconds); ``NextToken`` names the review and an offset into it,
and the later pages come from that review as kept by this process (``OpsBackend.reviews``, for
minutes), so paging neither re-runs the rules per page nor sees pages shift. A token whose review is
no longer kept (another worker, or later) re-runs the rules, as the first page did.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from khoa.cache import MISSING, Missing
from khoa.protocol.context import RequestContext
from khoa.services.ops import paging
from khoa.services.ops.backend import OpsBackend

SEVERITIES = ("low", "medium", "high")
DEFAULT_MAX_RESULTS = 50


def get_review_findings(ops: OpsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    """Authorised before it runs, as ``khoa:GetReviewFindings`` on ``*`` (authtable.py)."""
    minimum = params.get("MinimumSeverity", "low")
    filters = {"severity": minimum}
    limit = params.get("MaxResults", DEFAULT_MAX_RESULTS)
    installation_wide = bool(ops.installation_account) and ctx.account_id == ops.installation_account
    review: dict[str, Any] | Missing = MISSING
    offset = 0
    if params.get("NextToken"):  # a later page: of the review the token names, while it is kept
        offset, reviewed_at = _position(params["NextToken"], filters)
        review = ops.reviews.get((ctx.account_id, installation_wide, reviewed_at))
    if review is MISSING:
        reviewed_at = ctx.now.timestamp()
        review = ops.review(ctx.account_id, installation_wide, reviewed_at)
        ops.reviews.put((ctx.account_id, installation_wide, reviewed_at), review)
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
        "ReviewedAt": datetime.fromtimestamp(reviewed_at, UTC),
    }
    if len(shown) > offset + limit:
        result["NextToken"] = paging.encode([offset + limit, reviewed_at], filters)
    return result


def _position(token: str, filters: dict[str, Any]) -> tuple[int, float]:
    """The offset and the review a NextToken names (InvalidNextTokenException for anything else)."""
    position = paging.decode(token, filters)
    if not (isinstance(position, list) and len(position) == 2):
        raise paging.invalid_next_token()
    offset, reviewed_at = position
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise paging.invalid_next_token()
    if (
        not isinstance(reviewed_at, (int, float))
        or isinstance(reviewed_at, bool)
        or not math.isfinite(reviewed_at)
    ):
        raise paging.invalid_next_token()
    return offset, float(reviewed_at)


OPERATIONS = {"GetReviewFindings": get_review_findings}
