"""What khoa-ops' handlers and authorisation table are given (by ``build_service``).

The review's rules live above the services (khoa.review, a background package), so the composition
root hands the service a function that runs them (``review``) rather than the service importing them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from khoa.access.authorize import Authorizer
from khoa.cache import TTLCache
from khoa.services.ops.store import OpsStore


class ReviewRunner(Protocol):
    """Runs ``khoa review`` for one account (khoa.review.accounts.review_account bound to the engine
    and settings)."""

    def __call__(self, account_id: str, installation_wide: bool, now: float) -> dict[str, Any]:
        """{"Findings": [wire findings, highest severity first], "PassedRules": [rule ids]}."""
        ...


# How long a review's findings stay for the pages after its first (NextToken), and how many reviews
# are kept: a large installation's review takes seconds, and paging through its findings re-ran it
# for every page (with pages that shifted when findings changed in between). Few: the review of
# 100,000 secrets holds ~100,000 findings (tens of MB); a token whose review is gone re-runs it.
REVIEW_PAGES_SECONDS = 300.0
REVIEWS_KEPT = 2

ReviewKey = tuple[str, bool, float]  # (account, installation-wide, reviewed at)


@dataclass(frozen=True)
class OpsBackend:
    """``store`` reads the alerts table (the service's SQL is there only); ``authorizer`` authorises
    the calls; ``installation_account`` is the installation's first account (installation-wide alerts
    and findings are its own: see the package docstring); ``review`` runs the review's rules;
    ``reviews`` keeps recent reviews for their later pages."""

    store: OpsStore
    authorizer: Authorizer
    installation_account: str
    review: ReviewRunner
    reviews: TTLCache[ReviewKey, dict[str, Any]] = field(
        default_factory=lambda: TTLCache(REVIEW_PAGES_SECONDS, REVIEWS_KEPT)
    )
