"""The entity or managed policy a request names, looked up once per request.

The authorisation table (authz.py) looks targets up here before it authorises; handlers then get the
same row through :func:`lookup_entity`, so they act on the entity that was authorised.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Row

from khoa.access import aws_managed
from khoa.protocol.context import RequestContext
from khoa.protocol.errors import AWSError
from khoa.services.iam import errors
from khoa.services.iam.names import parse_policy_arn
from khoa.services.iam.store import IamStore

_TARGETS = "iam:targets"


def cached_entity(store: IamStore, ctx: RequestContext, kind: str, name: str) -> Row[Any] | None:
    """The user, group or role ``name`` of the caller's account (None when there is none), read from
    the store at most once per request (remembered in ``ctx.extras``)."""
    found: dict[tuple[str, str], Row[Any] | None] = ctx.extras.setdefault(_TARGETS, {})
    key = (kind, name.lower())
    if key not in found:
        found[key] = store.entities.find(ctx.account_id, kind, name)
    return found[key]


def lookup_entity(store: IamStore, ctx: RequestContext, kind: str, name: str) -> Row[Any]:
    """The (already authorised) user, group or role ``name``; NoSuchEntity when there is none."""
    row = cached_entity(store, ctx, kind, name)
    if row is None:
        raise errors.entity_not_found(kind, name)
    return row


def lookup_policy(
    store: IamStore,
    ctx: RequestContext,
    arn: str,
    *,
    missing: Callable[[str], AWSError] = errors.policy_not_found,
) -> Row[Any]:
    """A managed policy this account may use (its own, or an AWS-managed one); ``missing`` otherwise.
    Another account's policies are never looked up."""
    account, _path, _name = parse_policy_arn(arn)
    row = None
    if account == aws_managed.ACCOUNT:
        row = store.policies.aws_managed(arn)
    elif account == ctx.account_id:
        row = store.policies.find(arn)
    if row is None:
        raise missing(arn)
    return row
