"""Delivering change events to registered webhooks (JSON POST, HMAC-SHA256 signature header).

The job leader delivers in order from each webhook's cursor; a failed POST is retried on the next
pass, so a receiver may see an event more than once but never out of order or not at all.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import urllib.error
import urllib.request
import uuid
from typing import Any

from sqlalchemy import Engine, insert, select, update

from khoa.crypto.barrier import Barrier
from khoa.storage import schema

log = logging.getLogger("khoa.webhooks")
SIGNATURE_HEADER = "X-Khoa-Signature"
_HOOKS = schema.webhooks
_EVENTS = schema.change_events
_BATCH = 100


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


def _post(url: str, body: bytes, key: bytes | None) -> bool:
    request = urllib.request.Request(  # noqa: S310 - an operator-registered http(s) URL
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    if key:
        request.add_header(SIGNATURE_HEADER, "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return bool(response.status < 300)
    except (urllib.error.URLError, TimeoutError, OSError):
        return False


def deliver(engine: Engine, barrier: Barrier) -> int:
    """One delivery pass over every webhook; returns the number of events delivered."""
    delivered = 0
    with engine.connect() as conn:
        hooks = conn.execute(select(_HOOKS)).all()
    for hook in hooks:
        key = barrier.open(hook.secret_sealed, binding(hook.webhook_id)) if hook.secret_sealed else None
        with engine.connect() as conn:
            rows = conn.execute(
                select(_EVENTS)
                .where(_EVENTS.c.seq > hook.delivered_seq)
                .where(_EVENTS.c.account_id == hook.account_id)
                .order_by(_EVENTS.c.seq)
                .limit(_BATCH)
            ).all()
        cursor = hook.delivered_seq
        for row in rows:
            if row.secret_arn.startswith(hook.secret_prefix) or hook.secret_prefix == "*":
                body = json.dumps(event_payload(row)).encode()
                if not _post(hook.url, body, key):
                    log.warning("webhook %s did not accept event %s; will retry", hook.webhook_id, row.seq)
                    break
                delivered += 1
            cursor = row.seq
        if cursor != hook.delivered_seq:
            with engine.begin() as conn:
                conn.execute(
                    update(_HOOKS).where(_HOOKS.c.webhook_id == hook.webhook_id).values(delivered_seq=cursor)
                )
    return delivered
