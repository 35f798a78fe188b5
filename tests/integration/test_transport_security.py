"""The request pipeline refuses what AWS refuses before any handler runs (issue 11, findings 6, 7, 11a).

- Regions: only the regions the installation serves (``KHOA_REGIONS``) may appear in a credential
  scope; any other is refused with AWS's error, recorded in the default region, and gets no audit chain.
- Payload signing: ``UNSIGNED-PAYLOAD`` is S3's alone; a declared ``x-amz-content-sha256`` must be the
  body's hash.
- Slow bodies and heads: a request whose body, or whose request line and headers, do not arrive in
  time is answered 408 and closed; a connection that sends nothing is closed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.test_auth import SIGNATURE_MISMATCH, Reply, assert_error, build_request, call, send
from tests.support.server import KhoaServer

REGION_REFUSAL = "Credential should be scoped to a valid region, not '{}'. "
QUERY_NS = "{https://sts.amazonaws.com/doc/2011-06-15/}"


def _query(server: KhoaServer, region: str, action: str = "GetCallerIdentity") -> Reply:
    request = build_request(
        server.endpoint,
        None,
        f"Action={action}&Version=2011-06-15".encode(),
        service="sts",
        region=region,
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
    )
    return send(request)


def _query_error(reply: Reply) -> tuple[str, str]:
    root = ET.fromstring(reply.body)
    error = root.find(f"{QUERY_NS}Error")
    if error is None:
        error = root.find("Error")
    assert error is not None, reply.body
    code = error.findtext(f"{QUERY_NS}Code") or error.findtext("Code") or ""
    message = error.findtext(f"{QUERY_NS}Message") or error.findtext("Message") or ""
    return code, message


def _audit_regions(server: KhoaServer) -> dict[str, list[str | None]]:
    """Every region that has audit events, with the events' error codes."""
    with sqlite3.connect(server.data_dir / "khoa.db") as conn:
        rows = conn.execute("SELECT region, error_code FROM audit_events").fetchall()
    found: dict[str, list[str | None]] = {}
    for region, error_code in rows:
        found.setdefault(region, []).append(error_code)
    return found


# -- regions (finding 6) -----------------------------------------------------------------------------


@pytest.mark.parametrize("region", ["xx-yyy-9", "us-east-9", "us-gov-west-1", "cn-north-1"])
def test_a_json_call_scoped_to_an_unknown_region_is_refused(server: KhoaServer, region: str) -> None:
    reply = call(server.endpoint, "TrentService.ListKeys", region=region)
    assert_error(reply, "InvalidSignatureException", REGION_REFUSAL.format(region), 400)


def test_a_query_call_scoped_to_an_unknown_region_is_refused(server: KhoaServer) -> None:
    reply = _query(server, "xx-yyy-9")
    assert reply.status == 403, reply.body
    assert _query_error(reply) == ("SignatureDoesNotMatch", REGION_REFUSAL.format("xx-yyy-9"))
    assert _query(server, "ap-southeast-7").status == 200  # every commercial region is served by default


@pytest.fixture
def two_region_server(impatient_server: KhoaServer) -> KhoaServer:
    """A server serving two regions only: the module's impatient server (below). Its other tests call
    it unsigned or in us-east-1, and never with a credential scope it would refuse."""
    return impatient_server


def test_refused_regions_are_recorded_in_the_default_region_and_get_no_chain(
    two_region_server: KhoaServer,
) -> None:
    server = two_region_server
    for index in range(8):
        region = f"xx-yyy-{index}"
        assert_error(
            call(server.endpoint, "TrentService.ListKeys", region=region),
            "InvalidSignatureException",
            REGION_REFUSAL.format(region),
        )
    # A real AWS region this installation does not serve is refused the same way.
    assert_error(
        call(server.endpoint, "TrentService.CreateKey", region="us-west-2"),
        "InvalidSignatureException",
        REGION_REFUSAL.format("us-west-2"),
    )
    # The configured ones work.
    assert call(server.endpoint, "TrentService.ListKeys", region="eu-west-1").status == 200
    server.client("kms", region="us-east-1").create_key()

    regions = _audit_regions(server)
    assert set(regions) == {"us-east-1", "eu-west-1"}
    assert regions["us-east-1"].count("InvalidSignatureException") == 9
    # Closing the period (khoa audit digest) makes chains only for the served regions that saw calls.
    subprocess.run(
        [sys.executable, "-m", "khoa", "audit", "digest", "--data-dir", str(server.data_dir)],
        env=server.env(),
        check=True,
        capture_output=True,
        timeout=120,
    )
    digests = server.data_dir / "audit"
    chains = {p.name for p in digests.glob("AWSLogs/*/CloudTrail-Digest/*")}
    assert chains == {"us-east-1", "eu-west-1"}
    assert not list(digests.glob("**/xx-yyy-*"))


def test_dev_mode_serves_the_same_regions(tmp_path: Path) -> None:
    instance = KhoaServer(tmp_path / "data", dev=True).start()
    try:
        assert_error(
            call(instance.endpoint, "TrentService.ListKeys", region="xx-yyy-9", access_key="anything"),
            "InvalidSignatureException",
            REGION_REFUSAL.format("xx-yyy-9"),
        )
        assert call(instance.endpoint, "TrentService.ListKeys", region="eu-west-3").status == 200
        assert set(_audit_regions(instance)) == {"us-east-1", "eu-west-3"}
    finally:
        instance.stop()


@pytest.mark.parametrize(
    ("env", "complaint"),
    [
        ({"KHOA_REGIONS": "us-east-1,Not A Region"}, "KHOA_REGIONS"),
        ({"KHOA_REGIONS": ""}, "KHOA_REGIONS"),
        ({"KHOA_REGIONS": "eu-west-1"}, "KHOA_DEFAULT_REGION"),
    ],
)
def test_bad_region_settings_refuse_to_start(tmp_path: Path, env: dict[str, str], complaint: str) -> None:
    instance = KhoaServer(tmp_path / "data", extra_env=env)
    result = subprocess.run(
        [sys.executable, "-m", "khoa", "server", "--port", str(instance.port), "--data-dir", str(tmp_path)],
        env=instance.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert complaint in result.stderr
    assert "Traceback" not in result.stderr


# -- payload signing (finding 7) ---------------------------------------------------------------------


def test_unsigned_payload_with_a_swapped_body_is_refused(server: KhoaServer) -> None:
    kms = server.client("kms")
    key_id = kms.create_key(Description="unsigned-payload target")["KeyMetadata"]["KeyId"]
    request = build_request(
        server.endpoint,
        "TrentService.DescribeKey",
        {"KeyId": key_id},
        headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"},
    )
    # Unchanged, and with the body swapped for a call with effects: both refused.
    assert_error(send(request), "InvalidSignatureException", SIGNATURE_MISMATCH, 400)
    swapped = json.dumps({"KeyId": key_id, "Description": "swapped"}).encode()
    reply = send(request, body=swapped, headers={"X-Amz-Target": "TrentService.UpdateKeyDescription"})
    assert_error(reply, "InvalidSignatureException", SIGNATURE_MISMATCH, 400)
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["Description"] == "unsigned-payload target"


def test_unsigned_payload_is_refused_by_the_query_services(server: KhoaServer) -> None:
    request = build_request(
        server.endpoint,
        None,
        b"Action=GetCallerIdentity&Version=2011-06-15",
        service="sts",
        headers={
            "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
            "X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD",
        },
    )
    reply = send(request)
    assert reply.status == 403, reply.body
    assert _query_error(reply) == ("SignatureDoesNotMatch", SIGNATURE_MISMATCH)


def test_a_declared_payload_hash_must_be_the_bodys(server: KhoaServer) -> None:
    body = b'{"Limit": 2}'
    right = hashlib.sha256(body).hexdigest()
    ok = build_request(
        server.endpoint, "TrentService.ListKeys", body, headers={"X-Amz-Content-SHA256": right}
    )
    assert send(ok).status == 200
    # Signed over the real body, but the header claims another one.
    signed = build_request(server.endpoint, "TrentService.ListKeys", body)
    lying = send(signed, headers={"X-Amz-Content-SHA256": hashlib.sha256(b"other").hexdigest()})
    assert_error(lying, "InvalidSignatureException", SIGNATURE_MISMATCH, 400)


# -- slow bodies (finding 11a) -----------------------------------------------------------------------

BODY_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def impatient_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KhoaServer]:
    """Bodies and heads must arrive within BODY_TIMEOUT; only us-east-1 and eu-west-1 are served (for
    the regions test above, which shares this server)."""
    data = tmp_path_factory.mktemp("impatient") / "data"
    env = {"KHOA_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT), "KHOA_REGIONS": "us-east-1,eu-west-1"}
    instance = KhoaServer(data, extra_env=env).start()
    yield instance
    instance.stop()


def _raw_exchange(server: KhoaServer, head: bytes, parts: list[tuple[bytes, float]]) -> tuple[bytes, float]:
    """Send ``head`` then each (bytes, pause-after) part; read until the server closes. Returns what it
    answered and how long after the head it closed the connection."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head)
        started = time.monotonic()
        for data, pause in parts:
            try:
                sock.sendall(data)
            except OSError:
                break
            time.sleep(pause)
        received = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        return received, time.monotonic() - started


def _head(target: str, length: int) -> bytes:
    return (
        "POST / HTTP/1.1\r\n"
        "Host: 127.0.0.1\r\n"
        f"X-Amz-Target: {target}\r\n"
        "Content-Type: application/x-amz-json-1.1\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def _status_and_json(raw: bytes) -> tuple[int, dict[str, str], dict[str, object]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, json.loads(body)


def a_body_that_never_completes_is_answered_408_and_closed(impatient_server: KhoaServer) -> None:
    raw, elapsed = _raw_exchange(impatient_server, _head("TrentService.ListKeys", 1000), [(b'{"Limit":', 0)])
    status, headers, body = _status_and_json(raw)
    assert status == 408
    assert body["__type"] == "RequestTimeout"
    assert "timeout period" in str(body["message"])
    assert headers["connection"] == "close"
    assert headers.get("x-amzn-requestid")
    assert BODY_TIMEOUT - 0.5 <= elapsed < BODY_TIMEOUT + 5


def a_trickled_body_does_not_extend_the_deadline(impatient_server: KhoaServer) -> None:
    """One byte every half second: each arrives well within the timeout, the whole body does not."""
    parts = [(b"{", 0.5)] + [(b" ", 0.5)] * 20
    raw, elapsed = _raw_exchange(impatient_server, _head("TrentService.ListKeys", 100), parts)
    status, _, body = _status_and_json(raw)
    assert status == 408
    assert body["__type"] == "RequestTimeout"
    assert elapsed < BODY_TIMEOUT + 5


def the_server_stays_healthy_after_abandoned_bodies(impatient_server: KhoaServer) -> None:
    sockets = [socket.create_connection(("127.0.0.1", impatient_server.port), timeout=30) for _ in range(20)]
    try:
        for sock in sockets:
            sock.sendall(_head("TrentService.ListKeys", 5000) + b"{")
        # Meanwhile ordinary calls are answered.
        assert impatient_server.client("kms").list_keys()["ResponseMetadata"]["HTTPStatusCode"] == 200
        for sock in sockets:  # every abandoned request is answered and its connection closed
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            assert data.startswith(b"HTTP/1.1 408 ")
    finally:
        for sock in sockets:
            sock.close()


# -- request heads: the same bound, for the request line and headers (khoa.server.connections) ----------
# A head past its deadline is found by a sweep once a second.
HEAD_CLOSED_WITHIN = BODY_TIMEOUT + 1.0 + 3.0


def _until_closed(sock: socket.socket) -> tuple[bytes, float]:
    started = time.monotonic()
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received, time.monotonic() - started


def a_connection_that_sends_nothing_is_closed(impatient_server: KhoaServer) -> None:
    with socket.create_connection(("127.0.0.1", impatient_server.port), timeout=30) as sock:
        received, elapsed = _until_closed(sock)
    assert received == b""  # no request began: nothing to answer
    assert BODY_TIMEOUT - 0.5 <= elapsed < HEAD_CLOSED_WITHIN


def a_head_that_never_completes_is_answered_408_and_closed(impatient_server: KhoaServer) -> None:
    with socket.create_connection(("127.0.0.1", impatient_server.port), timeout=30) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Amz-Target: TrentService.ListKeys\r\n")
        received, elapsed = _until_closed(sock)
    assert received.startswith(b"HTTP/1.1 408 ")
    assert b"connection: close" in received.lower()
    assert elapsed < HEAD_CLOSED_WITHIN


def a_trickled_head_does_not_extend_the_deadline(impatient_server: KhoaServer) -> None:
    """One header line every half second, each well within the bound, the whole head never."""
    parts = [(f"X-Slow-{n}: a\r\n".encode(), 0.5) for n in range(int(BODY_TIMEOUT * 2) + 10)]
    raw, elapsed = _raw_exchange(impatient_server, b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n", parts)
    assert raw.startswith(b"HTTP/1.1 408 ")
    assert elapsed < HEAD_CLOSED_WITHIN + 1.0


def a_busy_keep_alive_connection_is_not_cut_off(impatient_server: KhoaServer) -> None:
    """The deadline is per head: a connection used for longer than the bound, each request's head
    sent at once, keeps being served (pauses shorter than uvicorn's 5 s keep-alive)."""
    request = _head("TrentService.ListKeys", 2) + b"{}"
    with socket.create_connection(("127.0.0.1", impatient_server.port), timeout=30) as sock:
        started = time.monotonic()
        answered = 0
        while time.monotonic() - started < BODY_TIMEOUT * 2 + 1:
            sock.sendall(request)
            reply = sock.recv(65536)
            assert reply.startswith(b"HTTP/1.1 "), reply  # an unsigned call's refusal, on the same connection
            answered += 1
            time.sleep(0.7)
    assert answered >= 6


def idle_connections_are_shed_and_the_server_stays_healthy(impatient_server: KhoaServer) -> None:
    sockets = [socket.create_connection(("127.0.0.1", impatient_server.port), timeout=30) for _ in range(300)]
    try:
        for n, sock in enumerate(sockets):
            if n % 2:
                sock.sendall(b"GET /_khoa/health HTTP/1.1\r\n")  # a head begun and abandoned
        assert impatient_server.client("kms").list_keys()["ResponseMetadata"]["HTTPStatusCode"] == 200
        for n, sock in enumerate(sockets):  # every one is closed: answered 408 if its head had begun
            received, _ = _until_closed(sock)
            assert received.startswith(b"HTTP/1.1 408 ") if n % 2 else received == b""
        assert impatient_server.client("kms").list_keys()["ResponseMetadata"]["HTTPStatusCode"] == 200
    finally:
        for sock in sockets:
            sock.close()


def test_slow_bodies_slow_heads_and_idle_connections_are_cut_off(impatient_server: KhoaServer) -> None:
    """Each scenario above waits for the server to give up on a connection of its own (a few seconds):
    they wait at the same time, each on its own thread and connections. A failure names its scenario."""
    scenarios: list[Callable[[KhoaServer], None]] = [
        a_body_that_never_completes_is_answered_408_and_closed,
        a_trickled_body_does_not_extend_the_deadline,
        the_server_stays_healthy_after_abandoned_bodies,
        a_connection_that_sends_nothing_is_closed,
        a_head_that_never_completes_is_answered_408_and_closed,
        a_trickled_head_does_not_extend_the_deadline,
        a_busy_keep_alive_connection_is_not_cut_off,
        idle_connections_are_shed_and_the_server_stays_healthy,
    ]
    failures: dict[str, str] = {}

    def run(scenario: Callable[[KhoaServer], None]) -> None:
        try:
            scenario(impatient_server)
        except Exception:  # noqa: BLE001 - reported below, with its scenario's name
            failures[scenario.__name__] = traceback.format_exc()

    threads = [threading.Thread(target=run, args=(scenario,), daemon=True) for scenario in scenarios]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a scenario did not finish"
    assert not failures, "\n".join(f"{name} failed:\n{text}" for name, text in failures.items())


def _exchange(server: KhoaServer, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        with contextlib.suppress(OSError):  # the server may close before taking it all
            sock.sendall(request)
        received = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                received += chunk
        return received


def test_a_head_still_incomplete_past_64_kib_is_refused_431(impatient_server: KhoaServer) -> None:
    endless = b"GET /_khoa/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * (8 * 1024 * 1024)
    assert _exchange(impatient_server, endless).startswith(b"HTTP/1.1 431 ")
    many = b"GET /_khoa/health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Many: a\r\n" * 100_000
    assert _exchange(impatient_server, many).startswith(b"HTTP/1.1 431 ")


def test_a_request_target_over_16_kib_is_refused_414(impatient_server: KhoaServer) -> None:
    """httptools.parse_url keeps offsets in 16 bits: a 70,001-byte path was seen as 4,465 bytes and its
    query read from inside the path, then routed and signature-checked as such. Refused, on every route,
    however the target arrives; one of 16 KiB is served."""
    head = b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    mangled = b"/" + b"A" * 70_000 + b"?Action=GetCallerIdentity&Version=2011-06-15"
    assert _exchange(impatient_server, b"GET " + mangled + head).startswith(b"HTTP/1.1 414 ")
    health = b"/_khoa/health?x="
    within = health + b"a" * (16 * 1024 - len(health))
    assert _exchange(impatient_server, b"GET " + within + head).startswith(b"HTTP/1.1 200 ")
    assert _exchange(impatient_server, b"GET " + within + b"a" + head).startswith(b"HTTP/1.1 414 ")
    console = b"/console/signin?next=" + b"a" * 20_000
    assert _exchange(impatient_server, b"GET " + console + head).startswith(b"HTTP/1.1 414 ")


def test_a_head_over_64_kib_is_refused_431_even_when_it_arrives_whole(impatient_server: KhoaServer) -> None:
    head = b"GET /_khoa/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    head += b"".join(f"X-Filler-{n}: {'a' * 1000}\r\n".encode() for n in range(100)) + b"\r\n"
    assert _exchange(impatient_server, head).startswith(b"HTTP/1.1 431 ")
    assert impatient_server.client("kms").list_keys()["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_a_large_head_within_the_limit_and_a_body_in_the_same_packets_are_served(
    impatient_server: KhoaServer,
) -> None:
    head = b"GET /_khoa/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    head += b"".join(f"X-Filler-{n}: {'a' * 1000}\r\n".encode() for n in range(50)) + b"\r\n"
    assert _exchange(impatient_server, head).startswith(b"HTTP/1.1 200 ")
    body = json.dumps({"Limit": 10, "Padding": "x" * 900_000}).encode()
    request = _head("TrentService.ListKeys", len(body)).replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
    status, _, answer = _status_and_json(_exchange(impatient_server, request + body))
    assert status == 400 and answer["__type"] == "MissingAuthenticationTokenException", answer  # read whole


FORM = "application/x-www-form-urlencoded; charset=utf-8"


@pytest.mark.parametrize(
    ("service", "target", "body", "content_type", "status"),
    [
        (  # too many ids: ValidationException, after validation
            "secretsmanager",
            "secretsmanager.BatchGetSecretValue",
            json.dumps({"SecretIdList": ["x"] * 200_000}).encode(),
            "application/x-amz-json-1.1",
            400,
        ),
        (  # an awsQuery form of 65,000 members, parsed before the call is even known (unknown
            # members are ignored, as AWS ignores them)
            "iam",
            None,
            b"Action=ListUsers&Version=2010-05-08&" + b"&".join(b"Marker.%d=x" % n for n in range(65_000)),
            FORM,
            200,
        ),
    ],
    ids=["json", "query"],
)
def test_large_bodies_are_decoded_off_the_event_loop(
    impatient_server: KhoaServer,
    service: str,
    target: str | None,
    body: bytes,
    content_type: str,
    status: int,
) -> None:
    """A 1 MiB body of 100,000 members takes a few tenths of a second to decode and validate: on a
    heavy thread (khoa.server.pipeline.LARGE_BODY_BYTES), so liveness answers meanwhile. On the loop,
    four at once held it for most of a second."""
    replies: list[int] = []

    def large() -> None:
        request = build_request(
            impatient_server.endpoint, target, body, service=service, headers={"Content-Type": content_type}
        )
        replies.append(send(request).status)

    impatient_server.client("secretsmanager").list_secrets()  # up, caches warm
    began = time.monotonic()
    workers = [threading.Thread(target=large) for _ in range(4)]
    for worker in workers:
        worker.start()
    slowest = 0.0
    while any(worker.is_alive() for worker in workers):
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", impatient_server.port), timeout=30) as sock:
            sock.sendall(b"GET /_khoa/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            answered, _ = _until_closed(sock)
        assert answered.startswith(b"HTTP/1.1 200 ")
        slowest = max(slowest, time.monotonic() - started)
    assert replies == [status] * 4
    # Judged against the decoding's own time, so a loaded machine slows both alike: decoded on the
    # loop, the four run one after another there and a probe waits out about one of them (a quarter of
    # the whole); off it, a probe waits only for its turn at the interpreter.
    bound = max(0.25, (time.monotonic() - began) / 6)
    assert slowest < bound, f"/_khoa/health took {slowest:.2f} s (bound {bound:.2f} s) during decoding"
