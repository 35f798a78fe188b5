"""Change events on PostgreSQL with several writers: the change stream and the webhook deliverer
see every event once, in sequence order, even one that commits after a higher number was read.

Writers on their own connections publish events for two secrets in two accounts while a reader
follows them. Some transactions stay open after taking their number, so later numbers commit first;
one of them is held open for longer than several polls (``late_pair``), which a reader following
"the highest number read" passes for good. SQLite hands out rowids in commit order, so these run on
PostgreSQL only (skipped visibly without it, failed under KHOA_REQUIRE_SERVICES=1).
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections.abc import Callable, Iterator, MutableMapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

import pytest
from sqlalchemy import Connection, Engine, insert, select

from khoa.changes import webhooks
from khoa.changes.stream import stream
from khoa.crypto.barrier import Barrier
from khoa.storage import schema
from khoa.storage.database import create_database_engine, migrate

_EVENTS = schema.change_events
ACCOUNTS = ("111111111111", "222222222222")
SECRETS = ("00000000-0000-0000-0000-00000000000a", "00000000-0000-0000-0000-00000000000b")
WRITERS = 4
EVENTS_PER_WRITER = 40
LATE_SECONDS = 0.8  # several polls of the stream (0.2 s) and of the webhook reader below


@pytest.fixture
def engine(private_postgres: str) -> Iterator[Engine]:
    db = create_database_engine(private_postgres)
    migrate(db)
    yield db
    db.dispose()


def _insert(conn: Connection, account_id: str, secret_id: str) -> int:
    return int(
        conn.execute(
            insert(_EVENTS)
            .values(
                account_id=account_id,
                region="us-east-1",
                secret_id=secret_id,
                secret_arn=f"arn:aws:secretsmanager:us-east-1:{account_id}:secret:{secret_id}",
                kind="VersionCreated",
                detail=json.dumps({"versionId": "v"}),
                created_at=time.time(),
            )
            .returning(_EVENTS.c.seq)
        ).scalar_one()
    )


def _writer(engine: Engine, seed: int) -> None:
    """Publish events, now and then keeping the transaction open a while after taking a number."""
    rng = random.Random(seed)
    with engine.connect() as conn:
        for _ in range(EVENTS_PER_WRITER):
            with conn.begin():
                _insert(conn, rng.choice(ACCOUNTS), rng.choice(SECRETS))
                if rng.random() < 0.3:
                    time.sleep(rng.uniform(0.01, 0.15))


def _late_pair(engine: Engine) -> tuple[int, int]:
    """Take a number, let a higher one commit and be read, then commit: the late commit itself."""
    with engine.connect() as late, engine.connect() as prompt, late.begin():
        first = _insert(late, ACCOUNTS[0], SECRETS[0])
        with prompt.begin():
            second = _insert(prompt, ACCOUNTS[0], SECRETS[0])
        time.sleep(LATE_SECONDS)
    assert second > first
    return first, second


def _run_writers(engine: Engine) -> tuple[list[threading.Thread], list[tuple[int, int]]]:
    pairs: list[tuple[int, int]] = []
    threads = [threading.Thread(target=_writer, args=(engine, seed)) for seed in range(WRITERS)]
    threads.append(threading.Thread(target=lambda: pairs.append(_late_pair(engine))))
    for thread in threads:
        thread.start()
    return threads, pairs


def _committed(engine: Engine, *where: Any) -> list[int]:
    with engine.connect() as conn:
        return list(conn.execute(select(_EVENTS.c.seq).where(*where).order_by(_EVENTS.c.seq)).scalars())


def _wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    """Wait until ``condition()`` holds or the time is up (the caller's assertion then says why)."""
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_the_change_stream_sends_every_event_once_in_order(engine: Engine) -> None:
    ids: list[int] = []

    async def follow() -> list[tuple[int, int]]:
        left = asyncio.Event()

        async def receive() -> MutableMapping[str, Any]:
            await left.wait()
            return {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            for line in message.get("body", b"").decode().splitlines():
                if line.startswith("id: "):
                    ids.append(int(line[4:]))

        subscription = asyncio.create_task(
            stream(
                engine,
                SECRETS[0],
                0,
                receive,
                send,
                still_allowed=lambda: True,
                recheck_seconds=60.0,
                revocation_epoch=lambda: 0,
            )
        )
        threads, pairs = _run_writers(engine)
        for thread in threads:
            await asyncio.to_thread(thread.join)
        wanted = _committed(engine, _EVENTS.c.secret_id == SECRETS[0])
        await asyncio.to_thread(_wait_for, lambda: len(ids) >= len(wanted))
        await asyncio.sleep(0.5)  # anything sent twice would come now
        left.set()
        await subscription
        assert ids == wanted
        return pairs

    pairs = asyncio.run(follow())
    assert len(ids) == len(set(ids)) and ids == sorted(ids)
    first, second = pairs[0]
    assert first in ids and second in ids  # the late commit was sent after all


class _Receiver(ThreadingHTTPServer):
    """A webhook receiver on loopback noting the sequence number of each event posted to it."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seqs: list[int] = []


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        cast(_Receiver, self.server).seqs.append(json.loads(body)["seq"])
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_the_webhook_deliverer_posts_every_event_once_in_order(engine: Engine) -> None:
    receiver = _Receiver()
    serving = threading.Thread(target=receiver.serve_forever, daemon=True)
    serving.start()
    try:
        url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
        webhooks.register(
            engine,
            cast(Barrier, None),  # no signing secret: the barrier is not used
            account_id=ACCOUNTS[0],
            url=url,
            secret=None,
            secret_prefix="*",
            now=time.time(),
        )
        stop = threading.Event()

        deliverer = webhooks.WebhookDeliverer(engine, cast(Barrier, None))

        def deliver() -> None:
            while not stop.is_set():
                deliverer.deliver()
                time.sleep(0.05)

        reader = threading.Thread(target=deliver)
        reader.start()
        try:
            threads, pairs = _run_writers(engine)
            for thread in threads:
                thread.join()
            wanted = _committed(engine, _EVENTS.c.account_id == ACCOUNTS[0])
            seqs = receiver.seqs
            _wait_for(lambda: len(seqs) >= len(wanted))
            time.sleep(0.5)  # anything posted twice would come now
        finally:
            stop.set()
            reader.join()
        assert seqs == wanted
        first, second = pairs[0]
        assert first in seqs and second in seqs  # the late commit was posted after all
    finally:
        receiver.shutdown()
        receiver.server_close()
