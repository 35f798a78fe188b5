"""``khoa review`` for one account, as the API gives it (khoa-ops GetReviewFindings).

The composition root binds :func:`review_account` to the engine and settings and hands it to the
service (services may not import the review). The naming pattern and the unused-access window are the
installation's settings (KHOA_REVIEW_NAMING_PATTERN, KHOA_REVIEW_UNUSED_DAYS), as the command uses
when not told otherwise; an unusable pattern falls back to the default rather than failing every call.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import Engine

from khoa.crypto.barrier import Barrier
from khoa.review.model import Rule
from khoa.review.snapshot import DEFAULT_NAMING_PATTERN, Options
from khoa.settings import Settings


def _pattern(settings: Settings) -> str:
    pattern = settings.review_naming_pattern or DEFAULT_NAMING_PATTERN
    try:
        re.compile(pattern)
    except re.error:
        return DEFAULT_NAMING_PATTERN
    return pattern


def review_account(
    engine: Engine,
    settings: Settings,
    account_id: str,
    installation_wide: bool,
    now: float,
    *,
    barrier: Barrier | None = None,
) -> dict[str, Any]:
    """Run the rules over ``account_id`` (and the installation-wide rules when ``installation_wide``):
    {"Findings": [{"Rule", "Severity", "Title", "Resource", "Message", "Fix"}], "PassedRules": [ids]},
    findings highest severity first."""
    # The rules bring detect-secrets and the services' schedules: loaded only when a review runs.
    from khoa.review.rules import INSTALLATION, RULES
    from khoa.review.runner import run_review

    rules: tuple[Rule, ...] = RULES
    if not installation_wide:
        # An installation-wide rule's finding names khoa://installation/...; its check reads no account.
        rules = tuple(rule for rule in RULES if rule.id not in INSTALLATION_RULES)
    options = Options(
        account=account_id, naming_pattern=_pattern(settings), unused_days=settings.review_unused_days
    )
    result = run_review(engine, settings, options, now, rules, barrier=barrier)
    titles = {rule.id: rule.title for rule in rules}
    findings = [
        {
            "Rule": f.rule,
            "Severity": f.severity.label,
            "Title": titles.get(f.rule, f.rule),
            "Resource": f.resource,
            "Message": f.message,
            "Fix": f.fix,
        }
        for f in result.findings
        if installation_wide or not f.resource.startswith(INSTALLATION)
    ]
    return {"Findings": findings, "PassedRules": list(result.passed)}


# The rules about the installation as a whole rather than an account's resources (docs/review.md).
INSTALLATION_RULES = frozenset({"audit-trail-unverified", "alerts-not-routed"})
