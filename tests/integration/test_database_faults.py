"""A node over PostgreSQL whose database goes silent, resets, refuses or crawls: it fails closed in time.

The server's database URL points through a TCP proxy the test controls (tests/support/tcpproxy.py),
with short bounds (KHOA_DATABASE_TIMEOUT_SECONDS=1, KHOA_DATABASE_CONNECT_TIMEOUT_SECONDS=2, libpq's
least). Under each fault an API call fails with an AWS-shaped 503 within its bound, ``/_khoa/ready``
answers 503 with a reason within ~1 s, ``/_khoa/health`` answers; once the proxy passes traffic again
the node recovers by itself, and every write acknowledged before is still there. A lock on the trail's
table held by another session refuses a write once the lock timeout ends its wait.

The proxy's kernel acknowledges every byte it reads, so in ``blackhole`` TCP keepalives and
``tcp_user_timeout`` never fire (they do on a real dropped route): what bounds the wait here is the
client-side watchdog (khoa.storage.watchdog), the case a middlebox that goes silent produces.

The upper bounds asserted are correctness bounds (a call must not hang), not performance targets. A
call waits on the database for its handler (a pooled connection found dead, then a new connection
that cannot open), each wait at most the watchdog's bound (timeout + grace) or the connect timeout; a
write also waits for its record made before it runs. The record of the refusal itself is not
waited for.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import urlsplit

import boto3
import psycopg
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from tests.conftest import POSTGRES_ADMIN_URL
from tests.support.console import ConsoleClient
from tests.support.errors import unavailable_within
from tests.support.server import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, KhoaServer
from tests.support.tcpproxy import TcpProxy

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

TIMEOUT = 1.0
CONNECT_TIMEOUT = 2.0  # libpq's least
GRACE = 0.5  # khoa.storage.database.WATCHDOG_GRACE_SECONDS
# Handler (dead pooled connection, then a connect) + audit record (kept connection, then a connect),
# plus slack for a loaded two-core box (the watchdog looks every 0.25 s). Measured: up to 7.4 s.
CALL_BOUND = 2 * ((TIMEOUT + GRACE) + CONNECT_TIMEOUT) + 4.0
READY_BOUND = 1.5
# A scrape waits 1 s for the gauges read from the database (khoa.observe.metrics), then answers without them.
SCRAPE_BOUND = 3.0
RECOVERY_BOUND = 15.0
_T = TypeVar("_T")


class Node:
    """The server under test, its proxy, and what it acknowledged so far."""

    def __init__(self, server: KhoaServer, proxy: TcpProxy, direct_url: str) -> None:
        self.server = server
        self.proxy = proxy
        self.direct_url = direct_url  # the node's database, not through the proxy
        self.acknowledged: dict[str, str] = {}  # secret name -> the value last acknowledged
        self.sm = boto3.client(
            "secretsmanager",
            endpoint_url=server.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
            # One attempt: the time measured is one call's, not an SDK's retries.
            config=Config(retries={"mode": "standard", "total_max_attempts": 1}, read_timeout=60),
        )

    def write(self, name: str, value: str) -> None:
        if name in self.acknowledged:
            self.sm.put_secret_value(SecretId=name, SecretString=value)
        else:
            self.sm.create_secret(Name=name, SecretString=value)
        self.acknowledged[name] = value

    def get(self, path: str) -> tuple[int, dict[str, Any], float]:
        status, body, took = self.get_raw(path)
        return status, json.loads(body), took

    def subscribe(self, secret_id: str) -> dict[str, Any]:
        """Open the change stream of ``secret_id`` (signed as the root): its status, body and time."""
        url = f"{self.server.endpoint}/_khoa/events?SecretId={urllib.parse.quote(secret_id, safe='')}"
        signed = AWSRequest(method="GET", url=url)
        SigV4Auth(Credentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY), "secretsmanager", REGION).add_auth(signed)
        started = time.monotonic()
        request = urllib.request.Request(url, headers=dict(signed.headers.items()))
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, body = response.status, {"first": response.readline().decode()}
        except urllib.error.HTTPError as error:
            status, body = error.code, json.loads(error.read())
        return {"status": status, "body": body, "took": time.monotonic() - started}

    def get_raw(self, path: str) -> tuple[int, bytes, float]:
        return self.server.timed_get(path)


@pytest.fixture(scope="module")
def node(postgres_admin: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    name = f"khoa_faults_{uuid.uuid4().hex[:10]}"
    postgres_admin.execute(f'CREATE DATABASE "{name}"')
    target = urlsplit(POSTGRES_ADMIN_URL)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 5432)
    user = f"{target.username}@" if target.username else ""
    server = KhoaServer(
        tmp_path_factory.mktemp("faults") / "data",
        database_url=f"postgresql+psycopg://{user}127.0.0.1:{proxy.port}/{name}",
        extra_env={
            "KHOA_DATABASE_TIMEOUT_SECONDS": str(TIMEOUT),
            "KHOA_DATABASE_CONNECT_TIMEOUT_SECONDS": str(CONNECT_TIMEOUT),
        },
    )
    try:
        server.start()
        host = f"{target.hostname or '127.0.0.1'}:{target.port or 5432}"
        instance = Node(server, proxy, f"postgresql://{user}{host}/{name}")
        instance.write("before-any-fault", "v0")
        yield instance
    finally:
        server.stop()
        proxy.close()
        postgres_admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def expect_503(call: Any) -> float:
    """Run ``call``; it must fail with the AWS-shaped 503 within CALL_BOUND. Returns its duration."""
    return unavailable_within(CALL_BOUND, call)


def recover(node: Node, fault: str) -> float:
    """Let traffic through again; the node must take a write within RECOVERY_BOUND and still hold every
    value it acknowledged. Returns how long recovery took."""
    node.proxy.set_mode("pass")
    started = time.monotonic()
    name = f"after-{fault}"
    while True:
        try:
            node.write(name, "recovered")
            break
        except ClientError:
            assert time.monotonic() - started < RECOVERY_BOUND, f"no recovery within {RECOVERY_BOUND} s"
            time.sleep(0.2)
    took = time.monotonic() - started
    for secret, value in node.acknowledged.items():
        assert node.sm.get_secret_value(SecretId=secret)["SecretString"] == value
    status, body, _ = node.get("/_khoa/ready")
    deadline = time.monotonic() + RECOVERY_BOUND
    while status != 200 and time.monotonic() < deadline:  # an audit failure keeps it unready a while
        time.sleep(0.5)
        status, body, _ = node.get("/_khoa/ready")
    assert status == 200 or body.get("audit") == "failing", body
    return took


@pytest.mark.parametrize(
    ("fault", "delay"), [("blackhole", 0.0), ("reset", 0.0), ("refuse", 0.0), ("slow", 2.5)]
)
def test_calls_fail_closed_within_the_bound_and_the_node_recovers(
    node: Node, fault: str, delay: float, capsys: pytest.CaptureFixture[str]
) -> None:
    node.write(f"acknowledged-before-{fault}", "kept")
    console = ConsoleClient(node.server.endpoint)
    assert console.sign_in(ACCESS_KEY_ID, SECRET_ACCESS_KEY).status == 200
    node.proxy.set_mode(fault, delay)

    # Reads, side by side: an API call and a change-stream subscription are refused with an AWS-shaped
    # 503 within the bound, and the web console answers a page of its own saying so, within the
    # bound, not a hang or a 500. While they wait on the silent database, liveness still answers at
    # once: on a network database no call waits on the event loop (khoa.blocking), and a
    # subscription's checks never hold it either, so the worker's loop never waits with them.
    health_while_blocked, (read, (page, page_took), subscribed) = alongside(
        node,
        lambda: expect_503(lambda: node.sm.get_secret_value(SecretId="before-any-fault")),
        lambda: _timed(lambda: console.get("/console/secrets")),
        lambda: node.subscribe("before-any-fault"),
    )
    assert page.status == 503 and "did not answer" in page.plain, page.plain[:300]
    assert page_took <= CALL_BOUND
    assert subscribed["status"] == 503 and subscribed["took"] <= CALL_BOUND, subscribed
    assert subscribed["body"]["__type"] == "ServiceUnavailableException", subscribed

    # A write is refused the same way. While it waits, the probes (each on a thread of its own, never
    # behind a call) answer: /_khoa/ready 503 with a reason, /_khoa/health 200, and a scrape with what
    # the node knows (requests, leadership, the trail), without the gauges the database would give:
    # when the database is out is when an operator looks at them.
    with ThreadPoolExecutor(1) as calls:
        writing = calls.submit(
            expect_503, lambda: node.sm.put_secret_value(SecretId="before-any-fault", SecretString="lost?")
        )
        status, body, ready_took = node.get("/_khoa/ready")
        assert status == 503, body
        assert body["status"] == "unavailable" and body["reason"], body
        assert ready_took <= READY_BOUND, f"/_khoa/ready took {ready_took:.2f} s"
        status, _, health_took = node.get("/_khoa/health")
        assert status == 200
        status, text, scrape_took = node.get_raw("/metrics")
        assert status == 200 and b"khoa_requests_total" in text and b"khoa_leader" in text
        assert scrape_took <= SCRAPE_BOUND, f"/metrics took {scrape_took:.2f} s"
        write = writing.result()

    # The write refused above may or may not have been applied (its outcome was never acknowledged);
    # what matters is that the secret holds either the value acknowledged before or that one.
    node.acknowledged.pop("before-any-fault")
    recovered = recover(node, fault)
    value = node.sm.get_secret_value(SecretId="before-any-fault")["SecretString"]
    assert value in ("v0", "lost?")
    node.acknowledged["before-any-fault"] = value
    with capsys.disabled():
        print(
            f"\n[{fault}] read 503 in {read:.2f} s, write 503 in {write:.2f} s,"
            f" ready 503 in {ready_took:.2f} s, metrics in {scrape_took:.2f} s,"
            f" health {health_took:.3f} s (while a call is blocked: {health_while_blocked:.2f} s),"
            f" recovered in {recovered:.2f} s"
        )


def alongside(node: Node, *actions: Callable[[], Any]) -> tuple[float, list[Any]]:
    """Run ``actions`` side by side, each on a thread of its own; ``/_khoa/health`` must answer within
    READY_BOUND meanwhile (asked 0.2 s in, while they wait). Returns how long it took and what each
    action returned (an action's exception is raised here)."""
    with ThreadPoolExecutor(len(actions)) as threads:
        running = [threads.submit(action) for action in actions]
        time.sleep(0.2)
        status, _, took = node.get("/_khoa/health")
        results = [future.result() for future in running]
    assert status == 200
    assert took <= READY_BOUND, f"/_khoa/health took {took:.2f} s"
    return took, results


def _timed(call: Callable[[], _T]) -> tuple[_T, float]:
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def test_a_lock_held_elsewhere_refuses_calls_within_the_bound(
    node: Node, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another session (another node, an operator) holds the trail's table: a write is refused when the
    lock timeout ends its wait, instead of the node freezing for as long as the lock is held."""
    node.write("acknowledged-before-lock", "kept")
    with psycopg.connect(node.direct_url) as holder:
        holder.execute("LOCK TABLE audit_events IN ACCESS EXCLUSIVE MODE")  # held until the block ends
        with ThreadPoolExecutor(1) as calls:  # the readiness probe waits on the lock meanwhile
            writing = calls.submit(
                expect_503,
                lambda: node.sm.put_secret_value(SecretId="acknowledged-before-lock", SecretString="x"),
            )
            status, body, ready_took = node.get("/_khoa/ready")
            assert status == 503 and body["reason"], body
            assert ready_took <= READY_BOUND
            write = writing.result()
        holder.rollback()
    node.acknowledged.pop("acknowledged-before-lock")
    recovered = recover(node, "lock")
    assert node.sm.get_secret_value(SecretId="acknowledged-before-lock")["SecretString"] in ("kept", "x")
    with capsys.disabled():
        print(
            f"\n[lock] write 503 in {write:.2f} s, ready 503 in {ready_took:.2f} s,"
            f" recovered in {recovered:.2f} s"
        )
