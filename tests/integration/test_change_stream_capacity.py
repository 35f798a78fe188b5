"""The change stream's capacity: caps on open subscriptions, and one shared poller per worker.

A worker keeps at most ``KHOA_STREAM_MAX_SUBSCRIPTIONS`` streams open, and at most
``KHOA_STREAM_MAX_SUBSCRIPTIONS_PER_PRINCIPAL`` for one principal (every session of a role counts as
the role); one more is refused ``429 ThrottlingException`` in the API's JSON error shape. Every
stream of a worker is fed by one poller (khoa.changes.stream.ChangeHub), so many subscribers of one
secret each get every event once, in order; a client resuming with ``Last-Event-ID`` still gets what it
missed, whether the poller ran on meanwhile or stopped. Streams alike share their re-checks, and a
revocation still ends each of them. The last tests drive the hub in process: its database reads do not
grow with the number of subscribers, and a subscriber that stops reading catches up from the database.

Before the poller, 3000 idle subscriptions of one principal polled the database 15,000 times a second
and slowed every call of the worker (/work/redteam/dos finding 4).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from sqlalchemy import Engine, event, insert
from sqlalchemy.exc import OperationalError

from khoa.changes import stream as change_stream
from khoa.changes.stream import ChangeHub
from khoa.protocol.errors import AWSError
from khoa.storage import schema
from khoa.storage.database import create_database_engine, migrate
from tests.support.identity import Caller, new_user, session
from tests.support.server import ACCESS_KEY_ID, ACCOUNT_ID, REGION, SECRET_ACCESS_KEY, KhoaServer

READ_SECRETS = {"Effect": "Allow", "Action": "secretsmanager:DescribeSecret", "Resource": "*"}
WAIT = 15.0  # how long a test waits for something that should happen (never a timing assertion)


def _root(server: KhoaServer) -> Caller:
    return Caller(server, f"arn:aws:iam::{ACCOUNT_ID}:root", ACCESS_KEY_ID, SECRET_ACCESS_KEY)


def _wait(check: Callable[[], bool], seconds: float = WAIT) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


class Stream:
    """An open ``GET /_khoa/events`` read on a thread: its events as (id, kind), comment lines, end."""

    def __init__(
        self, server: KhoaServer, caller: Caller, secret: str, last_event_id: int | str | None = None
    ):
        url = f"{server.endpoint}/_khoa/events?SecretId={urllib.parse.quote(secret, safe='')}"
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        request = AWSRequest(method="GET", url=url, headers=headers)
        credentials = Credentials(caller.access_key_id, caller.secret_access_key, caller.session_token)
        SigV4Auth(credentials, "secretsmanager", REGION).add_auth(request)
        # Raises HTTPError when refused.
        self.response = urllib.request.urlopen(
            urllib.request.Request(url, headers=dict(request.headers.items())), timeout=60
        )
        self.events: list[tuple[int, str]] = []
        self.comments: list[str] = []
        self.ended = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        assert _wait(lambda: ": subscribed" in self.comments), "no ': subscribed' line"

    def _read(self) -> None:
        seq = 0
        try:
            for raw in self.response:
                line = raw.decode().rstrip("\n")
                if line.startswith("id: "):
                    seq = int(line[4:])
                elif line.startswith("event: "):
                    self.events.append((seq, line[7:]))
                elif line.startswith(":"):
                    self.comments.append(line)
        except (OSError, ValueError):
            pass
        self.ended = True

    def ids(self) -> list[int]:
        return [seq for seq, _ in self.events]

    def close(self) -> None:
        """Drop the connection (shutting the socket down wakes the reading thread)."""
        sock = getattr(getattr(getattr(self.response, "fp", None), "raw", None), "_sock", None)
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(10)
        self.response.close()


def _refusal(
    server: KhoaServer, caller: Caller, secret: str, last_event_id: int | str | None = None
) -> tuple[int, dict[str, Any]]:
    """Subscribe expecting a refusal: its status and JSON body."""
    with pytest.raises(urllib.error.HTTPError) as refused:
        Stream(server, caller, secret, last_event_id).close()
    return refused.value.code, json.loads(refused.value.read())


def _secret(server: KhoaServer) -> str:
    name = f"capacity/{uuid.uuid4().hex[:8]}"
    server.client("secretsmanager").create_secret(Name=name, SecretString="v0")
    return name


def _put(server: KhoaServer, secret: str) -> None:
    server.client("secretsmanager").put_secret_value(SecretId=secret, SecretString=uuid.uuid4().hex)


def _close_all(streams: list[Stream]) -> None:
    for stream in streams:
        stream.close()


# -- caps ------------------------------------------------------------------------------------------------


@pytest.fixture
def capped(tmp_path: Path) -> Iterator[KhoaServer]:
    env = {"KHOA_STREAM_MAX_SUBSCRIPTIONS_PER_PRINCIPAL": "3", "KHOA_STREAM_MAX_SUBSCRIPTIONS": "7"}
    instance = KhoaServer(tmp_path / "data", extra_env=env).start()
    yield instance
    instance.stop()


def test_one_principal_gets_at_most_its_cap_and_the_next_is_refused_429(capped: KhoaServer) -> None:
    secret = _secret(capped)
    user = new_user(capped, capped.client("iam"), READ_SECRETS)
    other = new_user(capped, capped.client("iam"), READ_SECRETS)
    streams = [Stream(capped, user, secret) for _ in range(3)]
    try:
        status, body = _refusal(capped, user, secret)
        assert status == 429
        assert body["__type"] == "ThrottlingException", body
        assert "for this principal" in body["message"] and "3" in body["message"], body
        # The refusal is the principal's alone: another user still subscribes, and the three go on.
        streams.append(Stream(capped, other, secret))
        _put(capped, secret)
        assert _wait(lambda: all(len(s.events) == 2 for s in streams)), [s.events for s in streams]
        assert len({tuple(s.events) for s in streams}) == 1
        # A closed stream gives its place back (once the server has seen the client leave).
        streams.pop(0).close()
        reopened: list[Stream] = []

        def reopen() -> bool:
            try:
                reopened.append(Stream(capped, user, secret))
            except urllib.error.HTTPError as refused:
                assert refused.code == 429
                return False
            return True

        assert _wait(reopen)
        streams.extend(reopened)
    finally:
        _close_all(streams)


def test_the_sessions_of_a_role_share_its_cap(capped: KhoaServer) -> None:
    iam = capped.client("iam")
    secret = _secret(capped)
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_ID}:root"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    role = iam.create_role(
        RoleName=f"streamer-{uuid.uuid4().hex[:8]}", AssumeRolePolicyDocument=json.dumps(trust)
    )["Role"]
    iam.put_role_policy(
        RoleName=role["RoleName"],
        PolicyName="read",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [READ_SECRETS]}),
    )
    assumer = new_user(capped, iam, {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"})
    first, second = session(assumer, role["Arn"], "one"), session(assumer, role["Arn"], "two")
    streams = [Stream(capped, first, secret), Stream(capped, first, secret), Stream(capped, second, secret)]
    try:
        # A new session is the same principal: minting sessions buys no more streams.
        third = session(assumer, role["Arn"], "three")
        status, body = _refusal(capped, third, secret)
        assert status == 429 and body["__type"] == "ThrottlingException", body
    finally:
        _close_all(streams)


def test_a_worker_keeps_at_most_its_cap_in_all(capped: KhoaServer) -> None:
    iam = capped.client("iam")
    secret = _secret(capped)
    users = [new_user(capped, iam, READ_SECRETS) for _ in range(4)]
    # 3 + 3 + 1 = 7, the worker's cap; each user is within its own.
    streams = [Stream(capped, user, secret) for user in (users[0],) * 3 + (users[1],) * 3 + (users[2],)]
    try:
        status, body = _refusal(capped, users[3], secret)
        assert status == 429 and body["__type"] == "ThrottlingException", body
        assert "server process" in body["message"] and "for this principal" not in body["message"], body
        assert all(not s.ended for s in streams)
    finally:
        _close_all(streams)


# -- one poller, many subscribers --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KhoaServer]:
    instance = KhoaServer(tmp_path_factory.mktemp("capacity") / "data").start()
    yield instance
    instance.stop()


def test_many_subscribers_each_get_every_event_once_in_order(node: KhoaServer) -> None:
    watched, other = _secret(node), _secret(node)
    user = new_user(node, node.client("iam"), READ_SECRETS)
    # Root and a user, alike and not: the streams alike share their re-checks, the others do not.
    streams = [Stream(node, _root(node), watched) for _ in range(30)]
    streams += [Stream(node, user, watched) for _ in range(10)]
    bystanders = [Stream(node, _root(node), other) for _ in range(5)]
    try:
        _put(node, watched)  # VersionCreated, StagesMoved
        assert _wait(lambda: all(len(s.events) >= 2 for s in streams)), [len(s.events) for s in streams]
        _put(node, watched)
        # Anything sent twice would come before the second put's events, which come in order.
        assert _wait(lambda: all(len(s.events) >= 4 for s in streams)), [len(s.events) for s in streams]
        expected = streams[0].events
        assert [kind for _, kind in expected] == ["VersionCreated", "StagesMoved"] * 2, expected
        assert streams[0].ids() == sorted(set(streams[0].ids()))
        for stream in streams:
            assert stream.events == expected
        assert all(s.events == [] for s in bystanders)  # another secret's events are not theirs

        # Half leave; the rest (and the bystanders, for their secret) go on.
        _close_all(streams[::2])
        staying = streams[1::2]
        _put(node, watched)
        _put(node, other)
        assert _wait(lambda: all(len(s.events) == 6 for s in staying))
        assert _wait(lambda: all(len(s.events) == 2 for s in bystanders))
        assert (
            len({tuple(s.events) for s in staying}) == 1 and len({tuple(s.events) for s in bystanders}) == 1
        )
        assert set(staying[0].ids()).isdisjoint(bystanders[0].ids())
    finally:
        _close_all(streams + bystanders)


def test_a_resuming_client_gets_what_it_missed_once(node: KhoaServer) -> None:
    secret = _secret(node)
    root = _root(node)
    keeper = Stream(node, root, secret)  # keeps the poller running, and moving past what is missed
    try:
        first = Stream(node, root, secret)
        _put(node, secret)
        assert _wait(lambda: len(first.events) == 2)
        first.close()
        seen = first.ids()[-1]
        _put(node, secret)
        _put(node, secret)
        assert _wait(lambda: len(keeper.events) == 6)  # the poller is past the missed events
        resumed = Stream(node, root, secret, last_event_id=seen)
        try:
            assert _wait(lambda: len(resumed.events) == 4), resumed.events
            _put(node, secret)
            assert _wait(lambda: len(resumed.events) == 6 and len(keeper.events) == 8), resumed.events
            assert resumed.events == keeper.events[2:]
            assert resumed.ids() == sorted(set(resumed.ids()))
        finally:
            resumed.close()
    finally:
        keeper.close()


def test_resuming_from_the_start_when_no_one_else_subscribes(node: KhoaServer) -> None:
    """With nobody subscribed the poller stops; the next subscriber starts it again, and a
    Last-Event-ID of 0 still gets the secret's whole history, then what comes."""
    secret = _secret(node)
    watcher = Stream(node, _root(node), secret)
    _put(node, secret)
    assert _wait(lambda: len(watcher.events) == 2)
    live = watcher.events
    watcher.close()
    time.sleep(1.0)  # let the server see it leave (the poller may stop; either way the answer is the same)
    history = Stream(node, _root(node), secret, last_event_id=0)
    try:
        assert _wait(lambda: len(history.events) == 3), history.events
        assert history.events[0][1] == "VersionCreated" and history.events[1:] == live
        _put(node, secret)
        assert _wait(lambda: len(history.events) == 5), history.events
        assert history.ids() == sorted(set(history.ids()))
    finally:
        history.close()


# "²" and "¹" are what the bytes B2 and B9 read as (headers are decoded as latin-1): str.isdigit takes
# them, int() refuses them and more than 4,300 digits, and reads "1_0" as 10.
NOT_EVENT_IDS = ["\xb2", "1\xb9", "9" * 4301, "1_0", "abc", "-1", "9" * 20, str(2**63)]


def test_a_last_event_id_that_is_no_event_id_is_refused_400(node: KhoaServer) -> None:
    """Not a 500, and not silently read as something the client did not send (README and
    docs/rotation.md leave such a value unspecified: refused as the bad input it is)."""
    secret = _secret(node)
    for value in NOT_EVENT_IDS:
        status, body = _refusal(node, _root(node), secret, last_event_id=value)
        assert (status, body["__type"]) == (400, "ValidationException"), (value[:20], body)
        assert "Last-Event-ID" in body["message"]
    Stream(node, _root(node), secret, last_event_id=str(2**63 - 1)).close()  # the largest id


def test_last_event_ids_are_ascii_digits_of_a_64_bit_number() -> None:
    from khoa.server.subscriptions import _event_id

    assert [_event_id(v) for v in ("0", "42", "0042", str(2**63 - 1))] == [0, 42, 42, 2**63 - 1]
    for value in [*NOT_EVENT_IDS, "\u0663", " 1"]:  # (no header carries these: int() reads 3 and 1)
        with pytest.raises(AWSError) as excinfo:
            _event_id(value)
        assert (excinfo.value.code, excinfo.value.status) == ("ValidationException", 400)


@pytest.fixture
def rechecking(tmp_path: Path) -> Iterator[KhoaServer]:
    env = {"KHOA_STREAM_RECHECK_SECONDS": "1", "KHOA_CREDENTIAL_CACHE_SECONDS": "300"}
    instance = KhoaServer(tmp_path / "data", extra_env=env).start()
    yield instance
    instance.stop()


def test_a_revocation_ends_every_stream_sharing_a_recheck(rechecking: KhoaServer) -> None:
    iam = rechecking.client("iam")
    secret = _secret(rechecking)
    user = new_user(rechecking, iam, READ_SECRETS)
    streams = [Stream(rechecking, user, secret) for _ in range(3)]
    survivor = Stream(rechecking, _root(rechecking), secret)
    try:
        _put(rechecking, secret)
        assert _wait(lambda: all(len(s.events) == 2 for s in [*streams, survivor]))
        streams.pop().close()  # one of the three leaves; the other two still share the check
        iam.delete_user_policy(UserName=user.name, PolicyName="inline")
        assert _wait(lambda: all(s.ended for s in streams)), [s.comments for s in streams]
        assert all(s.comments[-1] == ": access revoked" for s in streams), [s.comments for s in streams]
        _put(rechecking, secret)
        assert _wait(lambda: len(survivor.events) == 4)
        assert all(len(s.events) == 2 for s in streams)  # nothing after the revocation
        assert not survivor.ended
    finally:
        _close_all([*streams, survivor])


# -- the hub in process ------------------------------------------------------------------------------------

SECRET_ID = "00000000-0000-0000-0000-0000000000aa"


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    db = create_database_engine(f"sqlite:///{tmp_path / 'khoa.db'}")
    migrate(db)
    yield db
    db.dispose()


def _publish(engine: Engine, count: int, secret_id: str = SECRET_ID) -> None:
    with engine.begin() as conn:
        for _ in range(count):
            conn.execute(
                insert(schema.change_events).values(
                    account_id=ACCOUNT_ID,
                    region=REGION,
                    secret_id=secret_id,
                    secret_arn=f"arn:aws:secretsmanager:{REGION}:{ACCOUNT_ID}:secret:{secret_id}",
                    kind="VersionCreated",
                    detail=json.dumps({"versionId": "v"}),
                    created_at=time.time(),
                )
            )


class _Client:
    """An in-process ASGI client of one subscription: its event ids; ``gate`` holds its reading."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.left = asyncio.Event()
        self.gate = asyncio.Event()
        self.gate.set()

    async def receive(self) -> MutableMapping[str, Any]:
        await self.left.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: MutableMapping[str, Any]) -> None:
        for line in message.get("body", b"").decode().splitlines():
            if line.startswith("id: "):
                await self.gate.wait()
                self.ids.append(int(line[4:]))


async def _until(check: Callable[[], bool], seconds: float = WAIT) -> None:
    deadline = time.monotonic() + seconds
    while not check() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


def _serve(hub: ChangeHub, client: _Client, secret_id: str = SECRET_ID) -> asyncio.Task[None]:
    return asyncio.get_running_loop().create_task(
        hub.serve(
            secret_id,
            0,
            client.receive,
            client.send,
            still_allowed=lambda: True,
            recheck_seconds=300.0,
            check_key="alike",
        )
    )


def test_the_database_is_read_once_per_poll_whatever_the_subscribers(engine: Engine) -> None:
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))

    async def run() -> None:
        hub = ChangeHub(engine, revocation_epoch=lambda: 0, poll_seconds=0.02)
        clients = [_Client() for _ in range(300)]
        tasks = [_serve(hub, client) for client in clients]
        await _until(lambda: hub.reads >= 3)
        assert hub.subscribers == 300
        before, reads = len(statements), hub.reads
        await _until(lambda: hub.reads >= reads + 20)
        # One statement per read (nothing new: the numbers only), at most one more in flight.
        assert len(statements) - before <= hub.reads - reads + 1, statements[before:]
        _publish(engine, 3)
        await _until(lambda: all(len(c.ids) == 3 for c in clients))
        assert {tuple(c.ids) for c in clients} == {(1, 2, 3)}
        for client in clients:
            client.left.set()
        await asyncio.gather(*tasks)
        assert hub.subscribers == 0
        hub.close()

    asyncio.run(run())


def test_a_subscriber_that_stops_reading_catches_up_from_the_database(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(change_stream, "QUEUE_LIMIT", 5)

    async def run() -> None:
        hub = ChangeHub(engine, revocation_epoch=lambda: 0, poll_seconds=0.02)
        slow, fast = _Client(), _Client()
        slow.gate.clear()  # takes the first event, then waits
        tasks = [_serve(hub, slow), _serve(hub, fast)]
        await _until(lambda: hub.reads >= 2)
        for _ in range(10):
            _publish(engine, 4)
            await asyncio.sleep(0.05)  # a few polls apart
        await _until(lambda: len(fast.ids) == 40)
        assert fast.ids == list(range(1, 41))
        slow.gate.set()
        await _until(lambda: len(slow.ids) == 40)
        assert slow.ids == list(range(1, 41))  # each once, in order, though most were dropped from its queue
        _publish(engine, 2)
        await _until(lambda: len(slow.ids) == 42 and len(fast.ids) == 42)
        assert slow.ids == fast.ids == list(range(1, 43))
        slow.left.set()
        fast.left.set()
        await asyncio.gather(*tasks)
        hub.close()

    asyncio.run(run())


def test_a_poll_that_hangs_or_fails_holds_up_no_one(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """The poller's read waits on the database (bounded there, by the engine); meanwhile the hub
    still notices a revocation and ends the stream it concerns, and after failed reads it reads on."""
    real_read = change_stream.read_in_order
    silent = threading.Event()  # set: the database answers nothing until released
    released = threading.Event()
    failures = [0]

    def read(*args: Any, **kwargs: Any) -> Any:
        if silent.is_set():
            released.wait(WAIT)
            raise OperationalError("SELECT", {}, Exception("the watchdog shut the socket"))
        if failures[0]:
            failures[0] -= 1
            raise OperationalError("SELECT", {}, Exception("server closed the connection"))
        return real_read(*args, **kwargs)

    monkeypatch.setattr(change_stream, "read_in_order", read)
    epoch = [0]
    allowed = {"kept": True, "revoked": True}

    async def run() -> None:
        hub = ChangeHub(engine, revocation_epoch=lambda: epoch[0], poll_seconds=0.02)
        kept, revoked = _Client(), _Client()
        tasks = {
            name: asyncio.get_running_loop().create_task(
                hub.serve(
                    SECRET_ID,
                    0,
                    client.receive,
                    client.send,
                    still_allowed=lambda name=name: allowed[name],  # type: ignore[misc]
                    recheck_seconds=300.0,
                )
            )
            for name, client in (("kept", kept), ("revoked", revoked))
        }
        await _until(lambda: hub.reads >= 2)
        silent.set()
        reads = hub.reads
        await asyncio.sleep(0.2)  # the poller's read is out, waiting
        allowed["revoked"] = False
        epoch[0] += 1
        await asyncio.wait_for(tasks["revoked"], WAIT)  # ended while the read still waits
        assert hub.reads == reads and not tasks["kept"].done()
        failures[0] = 3
        silent.clear()
        released.set()
        _publish(engine, 2)
        await _until(lambda: len(kept.ids) == 2)
        assert kept.ids == [1, 2] and revoked.ids == []
        kept.left.set()
        await tasks["kept"]
        hub.close()

    asyncio.run(run())
