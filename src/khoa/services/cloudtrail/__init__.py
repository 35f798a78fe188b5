"""AWS CloudTrail (``CloudTrail_20131101``): LookupEvents over the audit trail Khoa records."""

from __future__ import annotations

from khoa.services.base import Service, bind
from khoa.services.cloudtrail import authtable, lookup
from khoa.services.cloudtrail.backend import CloudTrailBackend


def build_service(trail: CloudTrailBackend) -> Service:
    return Service(
        name="cloudtrail",
        signing_name="cloudtrail",
        target_prefix="com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101",
        model=lookup.CloudTrailModel(),
        handlers=bind(trail, lookup.OPERATIONS),
        authorizer=authtable.table(trail),
    )
