"""How khoa-leaks' operations are authorised (run by the pipeline before the handler).

The check is an oracle, so it has its own permission, denied unless an identity policy grants it
(the account root is allowed, as for any action in its own account); it supports no resource-level
permissions (resource ``*``). A call that is allowed then takes a token from the caller's identity's
bucket (limits.py): over the rate it is refused with ThrottlingException, audited like every refusal.
The identity is what is granted the permission, not the session: a role's ARN for all its sessions
(a new RoleSessionName is no new bucket), a user's ARN, the account for its root.
EmergencyRotateSecret needs ``khoa:EmergencyRotateSecret`` and passes Secrets Manager's own check of
RotateSecret on the secret.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from khoa.audit.events import acting_principal
from khoa.protocol.context import RequestContext
from khoa.services.authorization import AuthorizationTable, rule
from khoa.services.leaks.backend import LeaksBackend

CHECK = "khoa:CheckLeakedValues"
REPORT = "khoa:ReportLeakedValues"
EMERGENCY_ROTATE = "khoa:EmergencyRotateSecret"
ROTATE_SECRET = "secretsmanager:RotateSecret"


def rate_key(ctx: RequestContext) -> str:
    """Whose bucket a call takes from: the identity behind the caller (acting_principal: the role of
    an assumed-role session, a user's ARN, the root's), or the account when there is none."""
    return acting_principal(ctx.principal) or ctx.principal.account_id


def _limit(leaks: LeaksBackend, ctx: RequestContext) -> None:
    leaks.limiter.take(rate_key(ctx))


def table(leaks: LeaksBackend) -> AuthorizationTable:
    def check(ctx: RequestContext, params: dict[str, Any]) -> None:
        leaks.authorizer.authorize(ctx, CHECK, "*")
        _limit(leaks, ctx)

    def report(ctx: RequestContext, params: dict[str, Any]) -> None:
        leaks.authorizer.authorize(ctx, REPORT, "*")
        _limit(leaks, ctx)

    def emergency_rotate(ctx: RequestContext, params: dict[str, Any]) -> None:
        leaks.authorizer.authorize(ctx, EMERGENCY_ROTATE, "*")
        # Secrets Manager's own rule for RotateSecret: identity and resource policies on the secret
        # and the function's invoke permission; for a secret that does not exist, the action on
        # "*", so only a caller allowed to learn it hears that it does not exist.
        rotate = dataclasses.replace(ctx, service="secretsmanager", operation="RotateSecret")
        leaks.services["secretsmanager"].authorizer(rotate, {"SecretId": params["SecretId"]})
        _limit(leaks, ctx)

    return AuthorizationTable(
        "khoa",
        {
            "CheckLeakedValues": rule(check, CHECK),
            "ReportLeakedValues": rule(report, REPORT),
            "EmergencyRotateSecret": rule(emergency_rotate, EMERGENCY_ROTATE, ROTATE_SECRET),
        },
    )
