"""AWS IAM (awsQuery protocol, XML responses): users, groups, roles, access keys, inline and managed
policies with versions, attachments, permissions boundaries, tags, GetAccountAuthorizationDetails and
policy simulation. Every operation is authorised before its handler runs, as ``iam:<Operation>`` on its
target's ARN, by the table in authz.py."""

from __future__ import annotations

from datetime import timedelta

from khoa.protocol.awsquery import QueryServiceModel
from khoa.services.base import Handler, Service
from khoa.services.iam import (
    access_keys,
    attachments,
    authz,
    boundaries,
    details,
    groups,
    inline,
    managed,
    roles,
    simulate,
    tags,
    users,
)


def build_service() -> Service:
    handlers: dict[str, Handler] = {}
    for module in (
        users,
        groups,
        roles,
        access_keys,
        inline,
        managed,
        attachments,
        boundaries,
        tags,
        details,
        simulate,
    ):
        handlers.update(module.OPERATIONS)
    model = QueryServiceModel("iam")
    service = Service(
        name="iam",
        signing_name="iam",
        target_prefix="iam",
        model=model,
        handlers=handlers,
        authorizer=authz.table(),
        skew=timedelta(minutes=15),
        protocol="query",
    )
    return service
