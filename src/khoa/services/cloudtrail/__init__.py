"""AWS CloudTrail (``CloudTrail_20131101``): LookupEvents over the audit trail Khoa records."""

from __future__ import annotations

from khoa.services.base import Service
from khoa.services.cloudtrail import lookup


def build_service() -> Service:
    return Service(
        name="cloudtrail",
        signing_name="cloudtrail",
        target_prefix="com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101",
        model=lookup.CloudTrailModel(),
        handlers=dict(lookup.OPERATIONS),
    )
