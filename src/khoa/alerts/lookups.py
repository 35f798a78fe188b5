"""What rules look up in the database beyond the batch of events they are given: the secret an event
names (and its primary, creation time and rotation function), the role a rotation function runs as,
when a KMS key was last used, and the error events of a window.

Every lookup runs through the pass (:meth:`PassContext.read`), and the ones a batch repeats are
memoised on it, so a busy secret is resolved once per pass, not once per event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from khoa.alerts.context import PassContext
from khoa.alerts.model import Event
from khoa.alerts.reader import event_columns, event_from_row
from khoa.audit.usage import UsageReader
from khoa.secret_rotation.functions import parse_arn
from khoa.storage import schema

_EVENTS = schema.audit_events
_SECRETS = schema.sm_secrets
_FUNCTIONS = schema.rotation_functions

# -- secrets --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SecretInfo:
    arn: str  # the primary secret's ARN (a replica shares its primary's readers)
    created_at: float
    rotation_lambda_arn: str | None


def _secret_row(ctx: PassContext, account_id: str, region: str, secret_id: str) -> Any:
    s = _SECRETS.c
    columns = (s.secret_id, s.arn, s.created_at, s.rotation_lambda_arn, s.primary_secret_id)
    if not secret_id.startswith("arn:"):
        query = select(*columns).where(s.account_id == account_id, s.region == region, s.name == secret_id)
    else:
        query = select(*columns).where(s.arn == secret_id)
        rows = ctx.read(query)
        if rows:
            return rows[0]
        prefix = f"arn:aws:secretsmanager:{region}:{account_id}:secret:"
        if not secret_id.startswith(prefix):
            return None
        name = secret_id[len(prefix) :]
        query = select(*columns).where(s.account_id == account_id, s.region == region, s.name == name)
        rows = [r for r in ctx.read(query) if r.arn[:-7] == secret_id]
        return rows[0] if rows else None
    rows = ctx.read(query)
    return rows[0] if rows else None


def resolve_secret(ctx: PassContext, account_id: str, region: str, secret_id: str) -> SecretInfo | None:
    """The secret a name, ARN or partial ARN names (as its primary, for a replica); None when it no
    longer exists."""
    key = ("secret", account_id, region, secret_id)
    if key not in ctx.memo:
        ctx.memo[key] = _resolve_secret(ctx, account_id, region, secret_id)
    found: SecretInfo | None = ctx.memo[key]
    return found


def _resolve_secret(ctx: PassContext, account_id: str, region: str, secret_id: str) -> SecretInfo | None:
    row = _secret_row(ctx, account_id, region, secret_id)
    if row is None:
        return None
    if row.primary_secret_id:
        s = _SECRETS.c
        primary = ctx.read(
            select(s.arn, s.created_at, s.rotation_lambda_arn).where(s.secret_id == row.primary_secret_id)
        )
        if primary:
            return SecretInfo(primary[0].arn, float(primary[0].created_at), primary[0].rotation_lambda_arn)
    return SecretInfo(row.arn, float(row.created_at), row.rotation_lambda_arn)


def rotation_role(ctx: PassContext, lambda_arn: str | None) -> str | None:
    """The IAM role a secret's registered rotation function runs as."""
    parsed = parse_arn(lambda_arn or "")
    if parsed is None:
        return None
    key = ("rotation-role", *parsed)
    if key not in ctx.memo:
        region, account_id, name = parsed
        f = _FUNCTIONS.c
        rows = ctx.read(
            select(f.role_arn).where(f.account_id == account_id, f.region == region, f.name == name)
        )
        ctx.memo[key] = rows[0].role_arn if rows and rows[0].role_arn else None
    role: str | None = ctx.memo[key]
    return role


# -- the trail ------------------------------------------------------------------------------------


def key_last_used(ctx: PassContext, key_arn: str) -> float | None:
    """When the key was last used by a successful cryptographic operation (None: never), from the
    last-use tables the leader keeps (:mod:`khoa.audit.usage`): counting its uses over the last
    days read every event the account recorded in them, on a busy account past the statement
    timeout, and a failing lookup stops the alert engine's pass for good."""
    use = UsageReader(ctx.engine).key_last_use(key_arn, since=0.0)
    return None if use is None else use.event_time


def error_count(ctx: PassContext, account_id: str, codes: tuple[str, ...], start: float, end: float) -> int:
    """How many of the account's events after ``start`` up to ``end`` failed with one of ``codes``."""
    c = _EVENTS.c
    rows = ctx.read(
        select(func.count())
        .select_from(_EVENTS)
        .where(c.account_id == account_id)
        .where(c.error_code.in_(codes))
        .where(c.event_time > start, c.event_time <= end)
    )
    return int(rows[0][0]) if rows else 0


def recent_errors(
    ctx: PassContext, account_id: str, codes: tuple[str, ...], start: float, end: float, limit: int = 1000
) -> list[Event]:
    """The newest ``limit`` of the account's events after ``start`` up to ``end`` that failed with one
    of ``codes``, newest first."""
    c = _EVENTS.c
    rows = ctx.read(
        select(*event_columns())
        .where(c.account_id == account_id)
        .where(c.error_code.in_(codes))
        .where(c.event_time > start, c.event_time <= end)
        .order_by(c.seq.desc())
        .limit(limit)
    )
    return [event_from_row(row) for row in rows]
