"""AWS STS: GetCallerIdentity and GetAccessKeyInfo (identity.py), AssumeRole, same- and cross-account
(sessions.py). How each is authorised is in authtable.py; all SQL is in store.py."""

from __future__ import annotations

from datetime import timedelta

from khoa.protocol.awsquery import QueryServiceModel
from khoa.services.base import Service, bind
from khoa.services.sts import authtable, identity, sessions
from khoa.services.sts.backend import StsBackend


def build_service(sts: StsBackend) -> Service:
    return Service(
        name="sts",
        signing_name="sts",
        target_prefix="sts",
        model=QueryServiceModel("sts"),
        handlers=bind(sts, identity.OPERATIONS, sessions.OPERATIONS),
        authorizer=authtable.table(sts),
        skew=timedelta(minutes=15),
        protocol="query",
    )
