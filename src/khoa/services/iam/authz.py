"""Every IAM operation authorises ``iam:<Operation>`` on its target's ARN before acting.

The target's tags are offered as ``aws:ResourceTag/…`` (and ``iam:ResourceTag/…``) and tags in the
request as ``aws:RequestTag/…`` and ``aws:TagKeys``, so attribute-based policies work on IAM as well.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Row, select

from khoa.iam.authorize import authorize
from khoa.protocol.context import RequestContext
from khoa.protocol.errors import AWSError
from khoa.services.iam import aws_managed, errors
from khoa.services.iam.store import GROUP, TAGS, entity_arn, find, find_policy, parse_policy_arn


def check(
    ctx: RequestContext,
    resource: str,
    *,
    owner_id: str | None = None,
    request_tags: list[dict[str, str]] | None = None,
    action: str | None = None,
    context: dict[str, list[str]] | None = None,
) -> None:
    context = dict(context or {})
    exempt = ctx.runtime.settings.dev or ctx.principal.is_root
    if not exempt:
        if owner_id:
            with ctx.runtime.engine.connect() as conn:
                rows = conn.execute(
                    select(TAGS.c.tag_key, TAGS.c.tag_value).where(TAGS.c.owner_id == owner_id)
                ).all()
            for key, value in rows:
                context[f"aws:resourcetag/{key}"] = [value]
                context[f"iam:resourcetag/{key}"] = [value]
        if request_tags:
            for tag in request_tags:
                context[f"aws:requesttag/{tag['Key']}"] = [tag["Value"]]
            context["aws:tagkeys"] = [tag["Key"] for tag in request_tags]
    authorize(ctx, action or f"iam:{ctx.operation}", resource, context=context or None)


def entity(
    ctx: RequestContext,
    kind: str,
    name: str,
    *,
    request_tags: list[dict[str, str]] | None = None,
    action: str | None = None,
    context: dict[str, list[str]] | None = None,
) -> Row[Any]:
    """Look up a user, group or role of the caller's account, authorise the operation on it, return it.

    Authorisation comes first (on the ARN it would have), so a caller without permission learns nothing
    about whether the entity exists.
    """
    with ctx.runtime.engine.connect() as conn:
        row = find(conn, ctx.account_id, kind, name)
    check(
        ctx,
        row.arn if row is not None else entity_arn(ctx.account_id, kind, "/", name),
        owner_id=row.principal_id if row is not None and kind != GROUP else None,
        request_tags=request_tags,
        action=action,
        context=context,
    )
    if row is None:
        raise errors.entity_not_found(kind, name)
    return row


def managed_policy(
    ctx: RequestContext,
    arn: str,
    *,
    missing: Callable[[str], AWSError] = errors.policy_not_found,
    action: str | None = None,
    authorise: bool = True,
) -> Row[Any]:
    """Look up a managed policy this account may use (its own, or an AWS-managed one).

    Unless ``authorise`` is false (the operation is authorised on another resource), the operation (or
    ``action``) is authorised on the policy's ARN first.
    """
    account, _path, _name = parse_policy_arn(arn)
    row = None
    if account == aws_managed.ACCOUNT:
        row = aws_managed.ensure(ctx.runtime.engine, arn)
    elif account == ctx.account_id:
        with ctx.runtime.engine.connect() as conn:
            row = find_policy(conn, arn)
    if authorise:
        check(ctx, arn, owner_id=row.policy_id if row is not None else None, action=action)
    if row is None:
        raise missing(arn)
    return row
