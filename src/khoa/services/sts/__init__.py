"""AWS STS: GetCallerIdentity, AssumeRole (same- and cross-account) and GetAccessKeyInfo."""

from __future__ import annotations

from datetime import timedelta

from khoa.protocol.awsquery import QueryServiceModel
from khoa.services.base import Service
from khoa.services.sts import authtable, operations


def build_service() -> Service:
    model = QueryServiceModel("sts")
    service = Service(
        name="sts",
        signing_name="sts",
        target_prefix="sts",
        model=model,
        handlers=dict(operations.OPERATIONS),
        authorizer=authtable.table(),
        skew=timedelta(minutes=15),
        protocol="query",
    )
    return service
