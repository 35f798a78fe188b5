"""What rules read (audit events, as stored) and what they raise (alerts).

An alert carries only metadata: rule, severity, account, ARNs of principals and resources, addresses,
counts, error codes and event ids. Rules never copy request parameters, response elements or error
messages into it, so no alert or notification can carry a secret value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import orjson

SEVERITIES = ("low", "medium", "high", "critical")


@dataclass
class Event:
    """One row of ``audit_events``.

    The columns written since migration 0011 (event type, acting principal, source address) answer
    what rules ask of every event; the CloudTrail record is parsed only when a rule needs more, or
    for an older row where those columns are NULL.
    """

    seq: int
    event_id: str
    account_id: str
    region: str
    event_time: float
    event_source: str
    event_name: str
    read_only: bool
    error_code: str | None
    access_key_id: str | None
    raw: str
    resource_names: str | None = None
    stored_event_type: str | None = None
    stored_principal: str | None = None
    stored_source_ip: str | None = None

    @cached_property
    def record(self) -> dict[str, Any]:
        try:
            parsed = orjson.loads(self.raw)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}

    @property
    def service(self) -> str:
        return self.event_source.removesuffix(".amazonaws.com")

    @property
    def event_type(self) -> str:
        if self.stored_event_type is not None:
            return self.stored_event_type
        return str(self.record.get("eventType") or "")

    @property
    def identity(self) -> dict[str, Any]:
        identity = self.record.get("userIdentity")
        return identity if isinstance(identity, dict) else {}

    @property
    def authenticated(self) -> bool:
        """Whether a known principal made this call (authentication succeeded)."""
        if self.stored_event_type is not None:
            return self.stored_event_type == "AwsApiCall" and self.stored_principal is not None
        return self.event_type == "AwsApiCall" and self.identity.get("type") not in (None, "", "Unknown")

    @property
    def principal(self) -> str | None:
        """Who acted, as an IAM ARN: the role for an assumed-role session (sessions come and go; the
        role is what is granted access), the user, or the account root."""
        if self.stored_event_type is not None:
            return self.stored_principal
        identity = self.identity
        kind = identity.get("type")
        if kind == "AssumedRole":
            issuer = (identity.get("sessionContext") or {}).get("sessionIssuer") or {}
            arn = issuer.get("arn") or identity.get("arn")
        elif kind == "Root":
            arn = identity.get("arn") or f"arn:aws:iam::{identity.get('accountId', '')}:root"
        elif kind in (None, "", "Unknown", "AWSService"):
            return None
        else:
            arn = identity.get("arn")
        return str(arn) if arn else None

    @property
    def caller_arn(self) -> str | None:
        """The exact caller (the session ARN for an assumed role)."""
        arn = self.identity.get("arn")
        return str(arn) if arn else None

    @property
    def source_ip(self) -> str:
        if self.stored_source_ip is not None:
            return self.stored_source_ip
        return str(self.record.get("sourceIPAddress") or "")

    @property
    def resource_arns(self) -> list[str]:
        if self.stored_event_type is not None:
            return self.resource_names.split("\n") if self.resource_names else []
        resources = self.record.get("resources") or []
        return [str(r["ARN"]) for r in resources if isinstance(r, dict) and r.get("ARN")]

    @property
    def time_iso(self) -> str:
        return iso(self.event_time)


@dataclass
class Alert:
    """A raised alert, before it is stored."""

    rule: str
    severity: str
    account_id: str
    region: str
    summary: str
    dedupe_key: str
    # an alert with the same rule and dedupe key raised less than this long ago suppresses this one
    # (None: any earlier one does)
    suppress_seconds: float | None
    details: dict[str, Any] = field(default_factory=dict)
    resources: list[dict[str, str]] = field(default_factory=list)  # {"type": ..., "ARN": ...}
    event_ids: list[str] = field(default_factory=list)


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
