"""What khoa-ops' handlers and authorisation table are given (by ``build_service``).

The review's rules live above the services (khoa.review, a background package), so the composition
root hands the service a function that runs them (``review``) rather than the service importing them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from khoa.access.authorize import Authorizer
from khoa.services.ops.store import OpsStore


class ReviewRunner(Protocol):
    """Runs ``khoa review`` for one account (khoa.review.accounts.review_account bound to the engine
    and settings)."""

    def __call__(self, account_id: str, installation_wide: bool, now: float) -> dict[str, Any]:
        """{"Findings": [wire findings, highest severity first], "PassedRules": [rule ids]}."""
        ...


@dataclass(frozen=True)
class OpsBackend:
    """``store`` reads the alerts table (the service's SQL is there only); ``authorizer`` authorises
    the calls; ``installation_account`` is the installation's first account (installation-wide alerts
    and findings are its own: see the package docstring); ``review`` runs the review's rules."""

    store: OpsStore
    authorizer: Authorizer
    installation_account: str
    review: ReviewRunner
