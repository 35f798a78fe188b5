"""Delivering change events to registered webhooks (JSON POST, HMAC-SHA256 signature header).

The job leader delivers in order from each webhook's cursor; a failed POST is retried on the next
pass, so a receiver may see an event more than once but never out of order or not at all (an event
that commits late is waited for: see :mod:`khoa.changes.follow`).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Engine, delete, insert, select, update

from khoa import outbound
from khoa.changes.follow import gap_policy, read_in_order
from khoa.crypto.barrier import Barrier
from khoa.outbound import SIGNATURE_HEADER
from khoa.sequence import SequenceCursor
from khoa.storage import schema

log = logging.getLogger("khoa.webhooks")
POST_TIMEOUT_SECONDS = 5.0  # one try per event per pass: a failed delivery is retried on the next pass
_HOOKS = schema.webhooks
_EVENTS = schema.change_events
_BATCH = 100
_GAPS = gap_policy("webhooks")


def binding(webhook_id: str) -> str:
    return f"webhooks:{webhook_id}"


def register(
    engine: Engine,
    barrier: Barrier,
    *,
    account_id: str,
    url: str,
    secret: str | None,
    secret_prefix: str,
    now: float,
) -> str:
    webhook_id = str(uuid.uuid4())
    with engine.connect() as conn:
        latest = conn.execute(select(_EVENTS.c.seq).order_by(_EVENTS.c.seq.desc()).limit(1)).scalar() or 0
    with engine.begin() as conn:
        conn.execute(
            insert(_HOOKS).values(
                webhook_id=webhook_id,
                account_id=account_id,
                url=url,
                secret_sealed=barrier.seal(secret.encode(), binding(webhook_id)) if secret else None,
                secret_prefix=secret_prefix,
                delivered_seq=latest,
                created_at=now,
            )
        )
    return webhook_id


def list_webhooks(engine: Engine) -> list[Any]:
    """Every registered webhook (rows; ``secret_sealed`` is never shown)."""
    with engine.connect() as conn:
        return list(conn.execute(select(_HOOKS).order_by(_HOOKS.c.account_id, _HOOKS.c.created_at)).all())


def delete_webhook(engine: Engine, webhook_id: str) -> bool:
    """Remove a webhook (it receives nothing more); whether there was one."""
    with engine.begin() as conn:
        return bool(conn.execute(delete(_HOOKS).where(_HOOKS.c.webhook_id == webhook_id)).rowcount)


def event_payload(row: Any) -> dict[str, Any]:
    return {
        "seq": row.seq,
        "kind": row.kind,
        "secretArn": row.secret_arn,
        "accountId": row.account_id,
        "region": row.region,
        "time": row.created_at,
        "detail": json.loads(row.detail),
    }


class WebhookDeliverer:
    """Delivers change events to every registered webhook, one pass at a time (a background job).

    Each webhook's ``delivered_seq`` is the position of its :class:`~khoa.sequence.SequenceCursor`;
    the gap each waits at (an event that has not committed yet), with when it gives up on it, is kept
    here in memory: only the job leader delivers, and a new leader simply waits for gaps afresh.
    """

    def __init__(self, engine: Engine, barrier: Barrier) -> None:
        self._engine = engine
        self._barrier = barrier
        self._waiting: dict[str, Mapping[int, float]] = {}

    def deliver(self, *, now: float | None = None) -> int:
        """One delivery pass over every webhook; returns the number of events delivered."""
        engine = self._engine
        at = time.monotonic() if now is None else now
        delivered = 0
        with engine.connect() as conn:
            hooks = conn.execute(select(_HOOKS)).all()
        for hook in hooks:
            key = (
                self._barrier.open(hook.secret_sealed, binding(hook.webhook_id))
                if hook.secret_sealed
                else None
            )
            start = SequenceCursor(hook.delivered_seq, self._waiting.pop(hook.webhook_id, {}))
            moved, rows = read_in_order(
                engine, start, at, _GAPS, where=_EVENTS.c.account_id == hook.account_id, limit=_BATCH
            )
            cursor = moved.position
            for row in rows:
                if row.secret_arn.startswith(hook.secret_prefix) or hook.secret_prefix == "*":
                    result = outbound.post(
                        hook.url,
                        event_payload(row),
                        timeout=POST_TIMEOUT_SECONDS,
                        signing_key=key,
                        signature_header=SIGNATURE_HEADER,
                    )
                    if not result.delivered:
                        log.warning(
                            "webhook %s did not accept event %s (%s); will retry",
                            hook.webhook_id,
                            row.seq,
                            result.describe(),
                        )
                        cursor = row.seq - 1
                        break
                    delivered += 1
            if moved.held:
                self._waiting[hook.webhook_id] = moved.held
            if cursor != hook.delivered_seq:
                with engine.begin() as conn:
                    conn.execute(
                        update(_HOOKS)
                        .where(_HOOKS.c.webhook_id == hook.webhook_id)
                        .values(delivered_seq=cursor)
                    )
        return delivered
