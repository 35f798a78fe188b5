"""AWS IAM (awsQuery protocol, XML responses): users, groups, roles, access keys, inline and managed
policies with versions, attachments, permissions boundaries, tags, GetAccountAuthorizationDetails and
policy simulation. Every operation is authorised before its handler runs, as ``iam:<Operation>`` on its
target's ARN, by the table in authtable.py. All SQL is in the ``store`` package."""

from __future__ import annotations

from datetime import timedelta

from khoa.audit.events import is_read_only
from khoa.protocol.awsquery import QueryServiceModel
from khoa.services.base import Service, bind, clearing_caches
from khoa.services.iam import (
    access_keys,
    attachments,
    authtable,
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
from khoa.services.iam.backend import IamBackend


def build_service(iam: IamBackend) -> Service:
    """The IAM service over ``iam``'s collaborators. Every write empties this process's cached
    policies and credentials before and after it runs (other processes learn of it through the
    revocation epoch the pipeline bumps after any IAM write)."""
    handlers = bind(
        iam,
        users.OPERATIONS,
        groups.OPERATIONS,
        roles.OPERATIONS,
        access_keys.OPERATIONS,
        inline.OPERATIONS,
        managed.OPERATIONS,
        attachments.OPERATIONS,
        boundaries.OPERATIONS,
        tags.OPERATIONS,
        details.OPERATIONS,
        simulate.OPERATIONS,
    )
    return Service(
        name="iam",
        signing_name="iam",
        target_prefix="iam",
        model=QueryServiceModel("iam"),
        handlers=clearing_caches(handlers, iam.forget_cached_access, is_read_only),
        authorizer=authtable.table(iam),
        skew=timedelta(minutes=15),
        protocol="query",
    )
