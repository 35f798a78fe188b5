"""The change stream: ``GET /_khoa/events?SecretId=<id>`` as server-sent events.

Signed with SigV4 for ``secretsmanager`` and authorised like DescribeSecret on the secret. Each event
is ``id: <seq>``, ``event: <kind>`` and ``data: <json>``; a reconnecting client sends ``Last-Event-ID``
and resumes where it stopped. Rows are polled from the database, so events from every node arrive.

A subscription is not a licence: the subscriber's credential (present, active, session unexpired) and
its permission (DescribeSecret on the secret, authorised as at subscription) are checked again every
``KHOA_STREAM_RECHECK_SECONDS`` and whenever this node revokes anything (the revocation epoch), always
before the next delivery; once they no longer hold, the stream ends (a reconnect is refused as usual).

Events go out in sequence order, each once: with several writers on PostgreSQL an event can commit
after one with a higher number was already visible, so the stream waits at such a gap (up to
:data:`khoa.changes.follow.GAP_SECONDS`) rather than pass it; otherwise the late event would
never be sent, and a client resuming with ``Last-Event-ID`` could not say what it had missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

from sqlalchemy import Engine, func, select

from khoa.changes.follow import gap_policy, read_in_order
from khoa.changes.webhooks import event_payload
from khoa.sequence import SequenceCursor
from khoa.storage import schema

_EVENTS = schema.change_events
POLL_SECONDS = 0.2
KEEPALIVE_SECONDS = 15.0
_GAPS = gap_policy("change stream")

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


def requested_secret(scope: MutableMapping[str, Any]) -> str:
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    return (query.get("SecretId") or [""])[0]


def latest_seq(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.coalesce(func.max(_EVENTS.c.seq), 0))).scalar_one())


async def stream(
    engine: Engine,
    secret_id: str,
    start_after: int,
    receive: Receive,
    send: Send,
    *,
    still_allowed: Callable[[], bool],
    recheck_seconds: float,
    revocation_epoch: Callable[[], int],
) -> None:
    """Serve the subscription until the client leaves or ``still_allowed()`` stops holding.

    ``still_allowed`` re-authenticates and re-authorises the subscriber; it runs every
    ``recheck_seconds`` and as soon as ``revocation_epoch()`` moves, and always before events are
    fetched, so nothing is delivered after a check fails.
    """
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
        }
    )
    disconnected = asyncio.Event()

    async def watch_disconnect() -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected.set()
                return

    watcher = asyncio.get_running_loop().create_task(watch_disconnect())
    cursor = SequenceCursor(start_after)
    idle = 0.0
    loop = asyncio.get_running_loop()
    checked_at = loop.time()
    epoch = revocation_epoch()
    try:
        await send({"type": "http.response.body", "body": b": subscribed\n\n", "more_body": True})
        while not disconnected.is_set():
            now_epoch = revocation_epoch()
            if now_epoch != epoch or loop.time() - checked_at >= recheck_seconds:
                epoch, checked_at = now_epoch, loop.time()
                if not await loop.run_in_executor(None, still_allowed):
                    await send(
                        {"type": "http.response.body", "body": b": access revoked\n\n", "more_body": True}
                    )
                    break
            # Off the event loop: a slow database delays this subscriber only.
            cursor, rows = await loop.run_in_executor(
                None,
                functools.partial(
                    read_in_order, engine, cursor, loop.time(), _GAPS, where=_EVENTS.c.secret_id == secret_id
                ),
            )
            for row in rows:
                data = json.dumps(event_payload(row))
                chunk = f"id: {row.seq}\nevent: {row.kind}\ndata: {data}\n\n".encode()
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            idle = 0.0 if rows else idle + POLL_SECONDS
            if idle >= KEEPALIVE_SECONDS:
                await send({"type": "http.response.body", "body": b": keepalive\n\n", "more_body": True})
                idle = 0.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(disconnected.wait(), timeout=POLL_SECONDS)
        if not disconnected.is_set():
            await send({"type": "http.response.body", "body": b"", "more_body": False})
    except OSError:
        pass
    finally:
        watcher.cancel()
