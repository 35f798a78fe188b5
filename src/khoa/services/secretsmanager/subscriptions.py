"""What a change-stream subscription asks of Secrets Manager: the subscribed secret, authorised as
DescribeSecret on it. The server's change-stream endpoint receives this check from the composition
root, so it needs nothing else of how secrets are named, stored or authorised."""

from __future__ import annotations

from collections.abc import Callable

from khoa.protocol.context import RequestContext
from khoa.services.secretsmanager import names
from khoa.services.secretsmanager.authz import authorize_secret
from khoa.services.secretsmanager.backend import SecretsBackend


def subscription_check(sm: SecretsBackend) -> Callable[[RequestContext, str], tuple[str, str]]:
    """``check(ctx, secret_ref) -> (secret id, ARN)``; raises the AWSError DescribeSecret would (a
    deleted secret may still be watched, as DescribeSecret still answers for it)."""

    def check(ctx: RequestContext, secret_ref: str) -> tuple[str, str]:
        record = names.require(ctx, sm.store, secret_ref, allow_deleted=True)
        authorize_secret(sm, ctx, "secretsmanager:DescribeSecret", record, {})
        return record.secret_id, record.arn

    return check
