"""Parameter policies: Expiration, ExpirationNotification and NoChangeNotification (Advanced tier only)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from khoa.services.ssm import errors

_KNOWN = {"Expiration", "ExpirationNotification", "NoChangeNotification"}
MAX_POLICIES = 10


def parse(text: str) -> list[dict[str, Any]]:
    """Validate a Policies document (a JSON array) and return its policies."""
    try:
        policies = json.loads(text)
    except ValueError:
        raise errors.code("InvalidPolicyTypeException", "The policies document is not valid JSON.") from None
    if isinstance(policies, dict):
        policies = [policies]
    if not isinstance(policies, list):
        raise errors.code("InvalidPolicyTypeException", "Policies must be a JSON array of policy objects.")
    if len(policies) > MAX_POLICIES:
        raise errors.code(
            "PoliciesLimitExceededException", f"A parameter can have at most {MAX_POLICIES} policies."
        )
    seen = set()
    for policy in policies:
        kind = policy.get("Type") if isinstance(policy, dict) else None
        if kind not in _KNOWN:
            raise errors.code(
                "InvalidPolicyTypeException",
                f"The policy type {kind} is not supported. Supported "
                "types: Expiration, ExpirationNotification, NoChangeNotification.",
            )
        if kind in seen:
            raise errors.code("IncompatiblePolicyException", f"There are multiple policies of type {kind}.")
        seen.add(kind)
        attributes = policy.get("Attributes")
        if not isinstance(attributes, dict):
            raise errors.code("InvalidPolicyAttributeException", f"The {kind} policy needs Attributes.")
        if kind == "Expiration":
            expiration_time(policy)
        else:
            amount = attributes.get("Before" if kind == "ExpirationNotification" else "After")
            unit = attributes.get("Unit")
            if not str(amount or "").isdigit() or int(str(amount)) < 1 or unit not in ("Days", "Hours"):
                raise errors.code(
                    "InvalidPolicyAttributeException",
                    f"The {kind} policy needs a whole number and a Unit of Days or Hours.",
                )
    return policies


def expiration_time(policy: dict[str, Any]) -> datetime:
    stamp = policy.get("Attributes", {}).get("Timestamp")
    try:
        moment = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        raise errors.code(
            "InvalidPolicyAttributeException", "The Expiration policy needs a Timestamp in ISO 8601 format."
        ) from None
    if moment.tzinfo is None:
        raise errors.code(
            "InvalidPolicyAttributeException", "The Expiration Timestamp must include a time zone."
        )
    return moment


def expires_at(policies: list[dict[str, Any]]) -> float | None:
    for policy in policies:
        if policy.get("Type") == "Expiration":
            return expiration_time(policy).timestamp()
    return None


def describe(text: str | None, now: float) -> list[dict[str, Any]]:
    """The Policies list DescribeParameters and GetParameterHistory return."""
    if not text:
        return []
    result = []
    for policy in json.loads(text):
        status = "Pending"
        if policy.get("Type") == "Expiration" and expiration_time(policy).timestamp() <= now:
            status = "Finished"
        result.append(
            {
                "PolicyText": json.dumps(policy, separators=(",", ":")),
                "PolicyType": policy["Type"],
                "PolicyStatus": status,
            }
        )
    return result
