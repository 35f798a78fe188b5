"""AWS CloudTrail (``CloudTrail_20131101``): LookupEvents over the audit trail Khoa records."""

from __future__ import annotations

from typing import Any

from khoa.iam.authorize import authorize
from khoa.protocol.context import RequestContext
from khoa.services.authorization import AuthorizationTable, rule
from khoa.services.base import Service
from khoa.services.cloudtrail import lookup


def _lookup_events(ctx: RequestContext, params: dict[str, Any]) -> None:
    # LookupEvents supports no resource-level permissions: AWS authorises it on "*".
    authorize(ctx, "cloudtrail:LookupEvents", "*")


def authorization_table() -> AuthorizationTable:
    return AuthorizationTable("cloudtrail", {"LookupEvents": rule(_lookup_events, "cloudtrail:LookupEvents")})


def build_service() -> Service:
    return Service(
        name="cloudtrail",
        signing_name="cloudtrail",
        target_prefix="com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101",
        model=lookup.CloudTrailModel(),
        handlers=dict(lookup.OPERATIONS),
        authorizer=authorization_table(),
    )
