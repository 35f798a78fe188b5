"""AWS STS: GetCallerIdentity, AssumeRole (same- and cross-account) and GetAccessKeyInfo."""

from __future__ import annotations

from datetime import timedelta

from khoa.protocol.model import ServiceModel
from khoa.services.base import Service
from khoa.services.sts import operations


def build_service() -> Service:
    return Service(
        name="sts",
        signing_name="sts",
        target_prefix="sts",
        model=ServiceModel("sts"),
        handlers=dict(operations.OPERATIONS),
        skew=timedelta(minutes=15),
        protocol="query",
    )
