"""How CloudTrail's one operation is authorised (run by the pipeline before the handler)."""

from __future__ import annotations

from typing import Any

from khoa.protocol.context import RequestContext
from khoa.services.authorization import AuthorizationTable, rule
from khoa.services.cloudtrail.backend import CloudTrailBackend


def table(trail: CloudTrailBackend) -> AuthorizationTable:
    def lookup_events(ctx: RequestContext, params: dict[str, Any]) -> None:
        # LookupEvents supports no resource-level permissions: AWS authorises it on "*".
        trail.authorizer.authorize(ctx, "cloudtrail:LookupEvents", "*")

    return AuthorizationTable("cloudtrail", {"LookupEvents": rule(lookup_events, "cloudtrail:LookupEvents")})
