"""AWS CloudTrail (``CloudTrail_20131101``): LookupEvents over the audit trail Khoa records."""

from __future__ import annotations

from typing import Any

from khoa.protocol.context import RequestContext
from khoa.services.authorization import AuthorizationTable, rule
from khoa.services.base import Service, bind
from khoa.services.cloudtrail import lookup
from khoa.services.cloudtrail.backend import CloudTrailBackend


def authorization_table(trail: CloudTrailBackend) -> AuthorizationTable:
    def lookup_events(ctx: RequestContext, params: dict[str, Any]) -> None:
        # LookupEvents supports no resource-level permissions: AWS authorises it on "*".
        trail.authorizer.authorize(ctx, "cloudtrail:LookupEvents", "*")

    return AuthorizationTable("cloudtrail", {"LookupEvents": rule(lookup_events, "cloudtrail:LookupEvents")})


def build_service(trail: CloudTrailBackend) -> Service:
    return Service(
        name="cloudtrail",
        signing_name="cloudtrail",
        target_prefix="com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101",
        model=lookup.CloudTrailModel(),
        handlers=bind(trail, lookup.OPERATIONS),
        authorizer=authorization_table(trail),
    )
