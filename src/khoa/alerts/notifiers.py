"""Where alerts go: the server log (always), a JSON webhook signed with HMAC-SHA256, and a
Slack-compatible incoming webhook.

The webhook body is the alert as JSON (:func:`webhook_payload`); ``X-Khoa-Signature`` is
``sha256=<hex HMAC-SHA256 of the raw body>`` keyed with ``KHOA_ALERT_WEBHOOK_SECRET`` (as the change
event webhooks sign theirs), ``X-Khoa-Alert-Id`` names the alert so a receiver can drop a repeat.
A POST (made by :mod:`khoa.outbound`) is tried up to ``KHOA_ALERT_WEBHOOK_ATTEMPTS`` times with a
short backoff; if it still fails the engine tries again on later passes (see
:mod:`khoa.alerts.engine`), so a receiver may see an alert more than once but never not at all while
it comes back within a day.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from khoa import outbound
from khoa.alerts.config import AlertSettings
from khoa.outbound import SIGNATURE_HEADER

log = logging.getLogger("khoa.alerts")
ALERT_ID_HEADER = "X-Khoa-Alert-Id"
USER_AGENT = "khoa-alerts/1"

SENT = "sent"
PENDING = "pending"
FAILED = "failed"


@dataclass(frozen=True)
class StoredAlert:
    """An alert as stored (and as every notifier sees it)."""

    alert_id: str
    rule: str
    severity: str
    account_id: str
    region: str
    raised_at: str  # ISO 8601, UTC
    summary: str
    details: dict[str, Any]
    resources: list[dict[str, str]]
    event_ids: list[str]
    audit_event_id: str


def webhook_payload(alert: StoredAlert) -> dict[str, Any]:
    return {
        "type": "AlertRaised",
        "alertId": alert.alert_id,
        "rule": alert.rule,
        "severity": alert.severity,
        "summary": alert.summary,
        "accountId": alert.account_id,
        "region": alert.region,
        "raisedAt": alert.raised_at,
        "resources": alert.resources,
        "details": alert.details,
        "eventIds": alert.event_ids,
        "auditEventId": alert.audit_event_id,
    }


def _escape(text: str) -> str:
    """Slack's mrkdwn control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _field_text(value: Any) -> str:
    if isinstance(value, list | dict):
        value = json.dumps(value, separators=(", ", ": "))
    return _escape(str(value))[:300]


def slack_payload(alert: StoredAlert) -> dict[str, Any]:
    """A Slack incoming-webhook message: ``text`` (the notification fallback) and Block Kit ``blocks``."""
    severity = alert.severity.upper()
    fields = [
        ("Rule", alert.rule),
        ("Severity", severity),
        ("Account", alert.account_id),
        ("Region", alert.region),
        ("Raised", alert.raised_at),
        ("Alert ID", alert.alert_id),
    ]
    for name, value in alert.details.items():
        if len(fields) >= 10:  # Slack allows ten fields per section
            break
        if name not in ("eventId", "eventTime"):
            fields.append((name, value))
    return {
        "text": f"[{severity}] Khoa alert {alert.rule}: {alert.summary}",
        "blocks": [
            {
                "type": "header",
                "text": {"type": "plain_text", "text": f"Khoa alert: {alert.rule} ({alert.severity})"[:150]},
            },
            {"type": "section", "text": {"type": "mrkdwn", "text": _escape(alert.summary)[:3000]}},
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": f"*{_escape(n)}*\n{_field_text(v)}"} for n, v in fields
                ],
            },
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": _escape(
                            f"audit event {alert.audit_event_id}; triggered by "
                            + (", ".join(alert.event_ids[:5]) or "process health")
                        ),
                    }
                ],
            },
        ],
    }


ALERT_RETRY_FIRST_DELAY = 0.25
ALERT_RETRY_MAX_DELAY = 2.0


def post_json(
    url: str,
    payload: dict[str, Any],
    *,
    key: bytes | None,
    attempts: int,
    timeout: float,
    headers: dict[str, str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """POST ``payload``; SENT on a 2xx answer, FAILED when the receiver refuses it for good (a 4xx
    other than 408/429), PENDING when it may work later.

    The body is compact with sorted keys. Retries wait 0.25 s doubling to 2 s, without jitter: only the
    job leader sends alerts, so there are no fellow senders to spread out, and the engine's own
    backoff across passes (see :mod:`khoa.alerts.engine`) covers longer outages.
    """
    result = outbound.post(
        url,
        json.dumps(payload, separators=(",", ":"), sort_keys=True).encode(),
        timeout=timeout,
        retry=outbound.Retry(
            attempts=attempts,
            first_delay=ALERT_RETRY_FIRST_DELAY,
            max_delay=ALERT_RETRY_MAX_DELAY,
            jitter=0.0,
        ),
        signing_key=key,
        signature_header=SIGNATURE_HEADER,
        headers=headers,
        user_agent=USER_AGENT,
        logger=log,
        what="alert receiver",
        sleep=sleep,
    )
    if result.outcome is outbound.Outcome.DELIVERED:
        return SENT
    return FAILED if result.outcome is outbound.Outcome.REJECTED else PENDING


class Notifiers:
    def __init__(self, settings: AlertSettings, sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self.sleep = sleep

    @property
    def webhook_configured(self) -> bool:
        return bool(self.settings.webhook_url)

    @property
    def slack_configured(self) -> bool:
        return bool(self.settings.slack_url)

    @staticmethod
    def to_log(alert: StoredAlert) -> None:
        log.warning(
            "ALERT %s [%s] account %s: %s (alert %s) %s",
            alert.rule,
            alert.severity,
            alert.account_id,
            alert.summary,
            alert.alert_id,
            json.dumps(alert.details, separators=(",", ":"), sort_keys=True, default=str),
        )

    def to_webhook(self, alert: StoredAlert) -> str:
        secret = self.settings.webhook_secret
        return post_json(
            self.settings.webhook_url,
            webhook_payload(alert),
            key=secret.encode() if secret else None,
            attempts=self.settings.webhook_attempts,
            timeout=self.settings.webhook_timeout_seconds,
            headers={ALERT_ID_HEADER: alert.alert_id},
            sleep=self.sleep,
        )

    def to_slack(self, alert: StoredAlert) -> str:
        return post_json(
            self.settings.slack_url,
            slack_payload(alert),
            key=None,
            attempts=self.settings.webhook_attempts,
            timeout=self.settings.webhook_timeout_seconds,
            sleep=self.sleep,
        )
