"""ListAlerts: the alerts the alert engine stored (``alerts`` table), of the caller's account, newest
first, one keyset page per call (``raised_at``, ``alert_id``), so a page costs the same with a
million stored alerts.

An alert is a raised notification, not a case: Khoa's alerts have no open/resolved state, so the
filters are the severity floor and the rule. Alerts hold metadata only (khoa.alerts.model), so
nothing listed here can carry a secret value. Region is not a filter: an operator's alerts are the
account's, in every Region (as khoa-leaks' checks are).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from khoa.protocol.context import RequestContext
from khoa.services.ops import paging
from khoa.services.ops.backend import OpsBackend

SEVERITIES = ("low", "medium", "high", "critical")
DEFAULT_MAX_RESULTS = 50


def _alert(row: Any) -> dict[str, Any]:
    try:
        body = json.loads(row.details)
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    alert: dict[str, Any] = {
        "AlertId": row.alert_id,
        "Rule": row.rule,
        "Severity": row.severity,
        "AccountId": row.account_id,
        "Region": row.region,
        "RaisedAt": datetime.fromtimestamp(float(row.raised_at), UTC),
        "Summary": row.summary,
        "Details": json.dumps(body.get("details") or {}, sort_keys=True),
        "Resources": [
            {"Type": str(r.get("type", "")), "ARN": str(r.get("ARN", ""))}
            for r in body.get("resources") or []
            if isinstance(r, dict)
        ],
        "EventIds": [str(e) for e in body.get("eventIds") or []],
        "AuditEventId": row.audit_event_id,
        "Audited": bool(row.audited),
    }
    if row.webhook_status:
        alert["WebhookStatus"] = row.webhook_status
    if row.slack_status:
        alert["SlackStatus"] = row.slack_status
    return alert


def list_alerts(ops: OpsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    """Authorised before it runs, as ``khoa:ListAlerts`` on ``*`` (authtable.py)."""
    minimum = params.get("MinimumSeverity")
    rule = params.get("Rule")
    filters = {"severity": minimum, "rule": rule}
    after = paging.decode(params["NextToken"], filters) if params.get("NextToken") else None
    limit = params.get("MaxResults", DEFAULT_MAX_RESULTS)
    position = None
    if after is not None:
        if not (
            isinstance(after, list)
            and len(after) == 2
            and isinstance(after[0], int | float)
            and isinstance(after[1], str)
        ):
            raise paging.invalid_next_token()
        position = (float(after[0]), after[1])
    rows = ops.store.alerts_page(
        ctx.account_id,
        severities=SEVERITIES[SEVERITIES.index(minimum) :] if minimum is not None else None,
        rule=rule,
        after=position,
        limit=limit + 1,  # one more: whether there is a next page
    )
    result: dict[str, Any] = {"Alerts": [_alert(row) for row in rows[:limit]]}
    if len(rows) > limit:
        last = rows[limit - 1]
        result["NextToken"] = paging.encode([float(last.raised_at), last.alert_id], filters)
    return result


OPERATIONS = {"ListAlerts": list_alerts}
