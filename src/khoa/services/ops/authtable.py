"""How khoa-ops' operations are authorised (run by the pipeline before the handler).

As khoa-leaks' own actions: each has its own permission, denied unless an identity policy grants it
(the account root is allowed, as for any action in its own account), with no resource-level
permissions (resource ``*``). What a caller may then see is its own account's (see the package
docstring).
"""

from __future__ import annotations

from typing import Any

from khoa.protocol.context import RequestContext
from khoa.services.authorization import AuthorizationTable, rule
from khoa.services.ops.backend import OpsBackend

LIST_ALERTS = "khoa:ListAlerts"
GET_REVIEW_FINDINGS = "khoa:GetReviewFindings"


def table(ops: OpsBackend) -> AuthorizationTable:
    def list_alerts(ctx: RequestContext, params: dict[str, Any]) -> None:
        ops.authorizer.authorize(ctx, LIST_ALERTS, "*")

    def get_review_findings(ctx: RequestContext, params: dict[str, Any]) -> None:
        ops.authorizer.authorize(ctx, GET_REVIEW_FINDINGS, "*")

    return AuthorizationTable(
        "khoa",
        {
            "ListAlerts": rule(list_alerts, LIST_ALERTS),
            "GetReviewFindings": rule(get_review_findings, GET_REVIEW_FINDINGS),
        },
    )
