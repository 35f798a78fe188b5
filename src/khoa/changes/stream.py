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

One :class:`ChangeHub` per worker process serves every subscription: a single poller reads the new
events of every secret once per :data:`POLL_SECONDS` (on a thread of its own, bounded like every
database call by the engine) and hands each to the subscribers of its secret. An idle subscriber
costs no database read and no wake-up between its re-checks and keepalives; the poll costs the same
for one subscriber as for a thousand. Each subscriber keeps its own position: one that starts behind
the poller (``Last-Event-ID``, or a subscription that began while the poller moved on) first reads
its own secret's events up to the poller's position, with the same gap waits, then takes the
poller's; one that falls far behind (a client not reading) is moved back to reading on its own.
Subscribers with the same credential, secret and request facts share their re-checks: the check's
inputs, hence its answer, are the same.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs

from sqlalchemy import Engine, func, select

from khoa.changes.follow import gap_policy, read_in_order
from khoa.changes.webhooks import event_payload
from khoa.logs import LogLimiter
from khoa.sequence import SequenceCursor
from khoa.storage import schema
from khoa.storage.database import is_unavailable

log = logging.getLogger("khoa.changes")

_EVENTS = schema.change_events
POLL_SECONDS = 0.2
KEEPALIVE_SECONDS = 15.0
# Events waiting for one subscriber (a client that does not read as fast as they come) before it is
# moved back to reading its secret's events from the database itself, from where it stopped.
QUEUE_LIMIT = 1000
CATCH_UP_ROWS = 500  # rows of one secret per read while a subscriber catches up with the poller
_GAPS = gap_policy("change stream")

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


def requested_secret(scope: MutableMapping[str, Any]) -> str:
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    return (query.get("SecretId") or [""])[0]


def latest_seq(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.coalesce(func.max(_EVENTS.c.seq), 0))).scalar_one())


def _chunk(row: Any) -> bytes:
    data = json.dumps(event_payload(row))
    return f"id: {row.seq}\nevent: {row.kind}\ndata: {data}\n\n".encode()


def _body(chunk: bytes) -> dict[str, Any]:
    return {"type": "http.response.body", "body": chunk, "more_body": True}


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
    """Serve one subscription with a hub of its own (the server's endpoint shares one hub among all
    its subscriptions: :class:`ChangeHub`)."""
    hub = ChangeHub(engine, revocation_epoch=revocation_epoch)
    try:
        await hub.serve(
            secret_id,
            start_after,
            receive,
            send,
            still_allowed=still_allowed,
            recheck_seconds=recheck_seconds,
        )
    finally:
        hub.close()


class _Recheck:
    """The re-check of one or more subscriptions whose check has the same inputs: when it last
    passed (loop time it started, and the revocation epoch then), and whether it still holds."""

    def __init__(
        self, key: Hashable | None, still_allowed: Callable[[], bool], now: float, epoch: int
    ) -> None:
        self.key = key
        self.still_allowed = still_allowed
        self.checked_at = now
        self.epoch = epoch
        self.allowed = True
        self.members = 0
        self._pending: asyncio.Task[None] | None = None

    def due(self, recheck_seconds: float) -> float:
        return self.checked_at + recheck_seconds

    async def holds(self, revocation_epoch: Callable[[], int], recheck_seconds: float) -> bool:
        """Whether the subscription may go on: re-checked first when the period is up or the epoch
        moved (once for every subscription sharing the check, on a thread)."""
        loop = asyncio.get_running_loop()
        asked = loop.time()
        while self.allowed:
            epoch = revocation_epoch()
            # A check begun since this was asked answers it, even one slower than the period.
            if epoch == self.epoch and (
                loop.time() - self.checked_at < recheck_seconds or self.checked_at >= asked
            ):
                return True
            if self._pending is None:
                self._pending = loop.create_task(self._check(epoch, loop.time()))
            # Shielded: one subscriber leaving must not cancel the check the others wait for.
            await asyncio.shield(self._pending)
        return False

    async def _check(self, epoch: int, started: float) -> None:
        loop = asyncio.get_running_loop()
        try:
            allowed = bool(await loop.run_in_executor(None, self.still_allowed))
        except Exception:  # fail closed
            log.exception("change stream: re-check failed")
            allowed = False
        finally:
            self._pending = None
        if not allowed:
            self.allowed = False
        elif started >= self.checked_at:
            self.checked_at, self.epoch = started, epoch


class _Subscriber:
    """One open stream: its secret, how far it has gone (``position``: every event of its secret up
    to it was sent or is not to be), what the poller has handed it, and whether it reads on its own
    (``catch_up_to``: up to that number, then the poller's events after it)."""

    def __init__(self, secret_id: str, position: int, recheck: _Recheck, now: float) -> None:
        self.secret_id = secret_id
        self.position = position
        self.recheck = recheck
        # The poller's events numbered above this go in the queue (None: not placed yet, the poller
        # has not read where it starts).
        self.floor: int | None = None
        self.queue: deque[tuple[int, bytes]] = deque()
        self.catch_up_to: int | None = None
        self.catch_up_cursor: SequenceCursor | None = None
        self.last_sent = now
        self.gone = False
        self._signalled = False
        self._waiter: asyncio.Future[None] | None = None

    def wake(self) -> None:
        self._signalled = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def sleep(self, deadline: float) -> None:
        """Until woken (an event, a revocation, the client leaving) or ``deadline`` (loop time)."""
        if self._signalled:
            self._signalled = False
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiter = waiter
        timer = loop.call_at(deadline, _resolve, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None
            self._signalled = False

    def push(self, seq: int, chunk: bytes, poller_position: int) -> None:
        if len(self.queue) >= QUEUE_LIMIT:
            # Too far behind: read the rest from the database, from where it stopped.
            self.queue.clear()
            if self.catch_up_to is None:
                self.catch_up_cursor = None
            self.catch_up_to = self.floor = poller_position
        else:
            self.queue.append((seq, chunk))
        self.wake()

    def place(self, poller_position: int) -> None:
        """Join the poller, which has handed out every event up to ``poller_position``."""
        if self.position >= poller_position:
            self.floor = self.position
        else:
            self.floor = self.catch_up_to = poller_position
            self.catch_up_cursor = None
            self.wake()


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class ChangeHub:
    """Every change-stream subscription of a worker process, fed by one poller.

    The poller runs while anyone subscribes; it reads, in sequence order and waiting at gaps like
    every subscriber did, the events of every secret after its own cursor, and queues each for the
    subscribers of that secret. Each subscriber's task re-checks its access, sends what is queued and
    keeps the connection alive; it reads the database itself only to catch up (see the module).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        revocation_epoch: Callable[[], int],
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.engine = engine
        self.revocation_epoch = revocation_epoch
        self.poll_seconds = poll_seconds
        self.reads = 0  # database reads made by the poller (each covers every subscriber)
        self._by_secret: dict[str, set[_Subscriber]] = {}
        self._count = 0
        self._rechecks: dict[Hashable, _Recheck] = {}
        self._cursor: SequenceCursor | None = None  # None: to be read (the newest event) first
        self._task: asyncio.Task[None] | None = None
        self._polling: asyncio.Future[tuple[SequenceCursor, list[Any]]] | None = None
        self._generation = 0
        self._epoch = 0
        self._threads: ThreadPoolExecutor | None = None
        # During an outage every poll fails the same way: one line per interval.
        self._logs = LogLimiter(log)

    @property
    def subscribers(self) -> int:
        return self._count

    async def serve(
        self,
        secret_id: str,
        start_after: int,
        receive: Receive,
        send: Send,
        *,
        still_allowed: Callable[[], bool],
        recheck_seconds: float,
        check_key: Hashable | None = None,
    ) -> None:
        """Serve the subscription until the client leaves or ``still_allowed()`` stops holding.

        ``still_allowed`` re-authenticates and re-authorises the subscriber; it runs every
        ``recheck_seconds`` and as soon as the revocation epoch moves, and always before the next
        events are sent, so nothing is delivered after a check fails. Subscriptions given the same
        ``check_key`` share that check (the key must cover everything the check reads).
        """
        loop = asyncio.get_running_loop()
        subscriber = _Subscriber(
            secret_id, start_after, self._recheck_for(check_key, still_allowed, loop.time()), loop.time()
        )
        self._join(subscriber)
        watcher: asyncio.Task[None] | None = None
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
                }
            )
            watcher = loop.create_task(_watch_disconnect(subscriber, receive))
            await send(_body(b": subscribed\n\n"))
            await self._follow(subscriber, send, recheck_seconds)
            if not subscriber.gone:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass
        finally:
            self._leave(subscriber)
            if watcher is not None:
                watcher.cancel()

    async def _follow(self, subscriber: _Subscriber, send: Send, recheck_seconds: float) -> None:
        loop = asyncio.get_running_loop()
        recheck = subscriber.recheck
        while not subscriber.gone:
            if not await recheck.holds(self.revocation_epoch, recheck_seconds):
                await send(_body(b": access revoked\n\n"))
                return
            waiting = False
            if subscriber.catch_up_to is not None:
                waiting = await self._catch_up(subscriber, send)
            else:
                await _drain(subscriber, send)
            now = loop.time()
            if now - subscriber.last_sent >= KEEPALIVE_SECONDS:
                await send(_body(b": keepalive\n\n"))
                subscriber.last_sent = now
            if subscriber.gone:
                return
            if not waiting and (subscriber.catch_up_to is not None or subscriber.queue):
                continue
            deadline = min(recheck.due(recheck_seconds), subscriber.last_sent + KEEPALIVE_SECONDS)
            if waiting:
                deadline = min(deadline, now + self.poll_seconds)
            await subscriber.sleep(deadline)

    async def _catch_up(self, subscriber: _Subscriber, send: Send) -> bool:
        """Read and send one page of the subscriber's own events up to its ``catch_up_to``; once
        there, it takes the poller's events. True when it has to wait (a gap, or the database)."""
        loop = asyncio.get_running_loop()
        target = subscriber.catch_up_to
        assert target is not None
        cursor = subscriber.catch_up_cursor or SequenceCursor(subscriber.position)
        try:
            # Off the event loop: a slow database delays this subscriber only.
            moved, rows = await loop.run_in_executor(
                None, functools.partial(self._read_secret, subscriber.secret_id, cursor, loop.time(), target)
            )
        except Exception:  # noqa: BLE001 - logged on the thread; tried again after a poll interval
            return True
        for row in rows:
            if row.seq > subscriber.position:
                await send(_body(_chunk(row)))
                subscriber.position = row.seq
                subscriber.last_sent = loop.time()
        subscriber.position = max(subscriber.position, moved.position)
        subscriber.catch_up_cursor = moved
        progressed = moved.position != cursor.position
        if moved.position >= target or (not progressed and not moved.held):
            if subscriber.catch_up_to == target:  # not moved on meanwhile (the queue overflowed)
                subscriber.position = max(subscriber.position, target)
                subscriber.catch_up_to = subscriber.catch_up_cursor = None
            return False
        return not progressed

    def _read_secret(
        self, secret_id: str, cursor: SequenceCursor, now: float, upto: int
    ) -> tuple[SequenceCursor, list[Any]]:
        try:
            return read_in_order(
                self.engine,
                cursor,
                now,
                _GAPS,
                where=_EVENTS.c.secret_id == secret_id,
                limit=CATCH_UP_ROWS,
                upto=upto,
            )
        except Exception as exc:
            self._log_failure("catch-up", exc)
            raise

    # -- subscribers joining and leaving --------------------------------------------------------------
    def _recheck_for(self, key: Hashable | None, still_allowed: Callable[[], bool], now: float) -> _Recheck:
        recheck = self._rechecks.get(key) if key is not None else None
        if recheck is None or not recheck.allowed:
            recheck = _Recheck(key, still_allowed, now, self.revocation_epoch())
            if key is not None:
                self._rechecks[key] = recheck
        recheck.members += 1
        return recheck

    def _join(self, subscriber: _Subscriber) -> None:
        self._by_secret.setdefault(subscriber.secret_id, set()).add(subscriber)
        self._count += 1
        if self._cursor is not None:
            subscriber.place(self._cursor.position)
        if self._task is None:
            self._epoch = self.revocation_epoch()
            self._task = asyncio.get_running_loop().create_task(self._run())

    def _leave(self, subscriber: _Subscriber) -> None:
        subscriber.gone = True
        subscribers = self._by_secret.get(subscriber.secret_id)
        if subscribers is not None and subscriber in subscribers:
            subscribers.discard(subscriber)
            self._count -= 1
            if not subscribers:
                del self._by_secret[subscriber.secret_id]
        recheck = subscriber.recheck
        recheck.members -= 1
        if recheck.members <= 0 and recheck.key is not None and self._rechecks.get(recheck.key) is recheck:
            del self._rechecks[recheck.key]

    def _everyone(self) -> list[_Subscriber]:
        return [subscriber for subscribers in self._by_secret.values() for subscriber in subscribers]

    # -- the poller ----------------------------------------------------------------------------------
    async def _run(self) -> None:
        """Each interval while anyone subscribes: wake everyone if the revocation epoch moved, and
        start a read unless the last one is still out (a slow database holds no tick)."""
        generation = self._generation
        try:
            while self._count:
                epoch = self.revocation_epoch()
                if epoch != self._epoch:
                    self._epoch = epoch
                    for subscriber in self._everyone():
                        subscriber.wake()
                if self._polling is None:
                    self._start_read(generation)
                await asyncio.sleep(self.poll_seconds)
        finally:
            # Nobody left (or the loop is closing): the next subscriber starts the poller afresh.
            self._generation += 1
            if self._polling is not None:
                self._polling.cancel()
            self._polling = None
            self._cursor = None
            self._task = None

    def _start_read(self, generation: int) -> None:
        loop = asyncio.get_running_loop()
        if self._threads is None:
            # A thread of its own: the poll never queues behind subscriptions' checks.
            self._threads = ThreadPoolExecutor(1, thread_name_prefix="khoa-changes")
        polling = loop.run_in_executor(self._threads, self._read, self._cursor, loop.time())
        self._polling = polling
        polling.add_done_callback(functools.partial(self._read_done, generation))

    def _read(self, cursor: SequenceCursor | None, now: float) -> tuple[SequenceCursor, list[Any]]:
        """One read for every subscriber (on the poller's thread): where to start, the first time."""
        try:
            if cursor is None:
                return SequenceCursor(latest_seq(self.engine)), []
            result = read_in_order(self.engine, cursor, now, _GAPS)
        except Exception as exc:
            self._log_failure("poll", exc)
            raise
        self._logs.recovered("poll", "change stream: reading change events again")
        return result

    def _read_done(self, generation: int, polling: asyncio.Future[tuple[SequenceCursor, list[Any]]]) -> None:
        if generation != self._generation or polling.cancelled():
            return  # the poller stopped meanwhile
        self._polling = None
        if polling.exception() is not None:
            return  # logged on the thread; read again at the next tick
        self.reads += 1
        moved, rows = polling.result()
        starting = self._cursor is None
        self._cursor = moved
        if starting:
            for subscriber in self._everyone():
                if subscriber.floor is None:
                    subscriber.place(moved.position)
            return
        for row in rows:
            subscribers = self._by_secret.get(row.secret_id)
            if not subscribers:
                continue
            chunk: bytes | None = None
            for subscriber in subscribers:
                if subscriber.floor is None or row.seq <= subscriber.floor:
                    continue
                if chunk is None:
                    chunk = _chunk(row)
                subscriber.push(row.seq, chunk, moved.position)

    def _log_failure(self, what: str, exc: Exception) -> None:
        if is_unavailable(exc):
            self._logs.warning(
                what, "change stream: database unavailable (%s); reading again shortly", type(exc).__name__
            )
        else:
            self._logs.exception(what, "change stream: reading change events failed")

    def close(self) -> None:
        """Stop the poller and its thread (a hub serving no one)."""
        if self._task is not None:
            self._task.cancel()
        if self._threads is not None:
            self._threads.shutdown(wait=False)
            self._threads = None


async def _drain(subscriber: _Subscriber, send: Send) -> None:
    """Send what the poller queued when this began (not what arrives meanwhile: the caller re-checks
    access between batches, as it did between reads)."""
    loop = asyncio.get_running_loop()
    for _ in range(len(subscriber.queue)):
        if subscriber.gone or subscriber.catch_up_to is not None or not subscriber.queue:
            return
        seq, chunk = subscriber.queue.popleft()
        if seq <= subscriber.position:
            continue
        await send(_body(chunk))
        subscriber.position = seq
        subscriber.last_sent = loop.time()


async def _watch_disconnect(subscriber: _Subscriber, receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            subscriber.gone = True
            subscriber.wake()
            return
