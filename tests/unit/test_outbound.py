"""The one outbound POST (khoa.outbound) against a local receiver: the signature receivers verify,
retries and when there are none, redirects not followed, every call bounded in time, and no secret
(URL credentials, signing key) in results or logs."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from khoa.outbound import SIGNATURE_HEADER, Outcome, Retry, Unreachable, exchange, post, signature, where

TOKEN = "tok-do-not-log-3f9a"
KEY = b"signing-key-do-not-log"


@dataclass
class Receiver:
    """Answers each POST with the next of ``answers`` (then 200), after ``delay`` seconds; with
    ``trickle`` it sends a byte every 0.1 s instead of an answer."""

    answers: list[int] = field(default_factory=list)
    delay: float = 0.0
    trickle: bool = False
    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    port: int = 0
    server: ThreadingHTTPServer | None = None

    def start(self, port: int = 0, tls: ssl.SSLContext | None = None) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver.requests.append((self.command, self.path, headers, body))

            def do_GET(self) -> None:
                self._record()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self) -> None:
                self._record()
                if receiver.trickle:
                    try:
                        for _ in range(600):
                            self.wfile.write(b"H")
                            self.wfile.flush()
                            time.sleep(0.1)
                    except OSError:
                        pass
                    return
                time.sleep(receiver.delay)
                status = receiver.answers.pop(0) if receiver.answers else 200
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", f"http://127.0.0.1:{receiver.port}/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def posts(self) -> int:
        return sum(1 for method, *_ in self.requests if method == "POST")


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    instance = Receiver().start()
    yield instance
    instance.stop()


def closed_port() -> int:
    """A loopback port nothing listens on (just released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def no_sleep(seconds: float) -> None:
    return


# -- what the receiver gets -----------------------------------------------------------------------------


def test_signed_json_post(receiver: Receiver) -> None:
    payload = {"seq": 7, "kind": "VersionCreated", "detail": {"a": [1, 2]}}
    result = post(receiver.url(), payload, timeout=5, signing_key=KEY, headers={"X-Khoa-Alert-Id": "a1"})
    assert result.delivered and result.status == 200 and result.attempts == 1
    method, path, headers, body = receiver.requests[0]
    assert (method, path) == ("POST", "/hook")
    assert body == json.dumps(payload).encode()  # json.dumps defaults: what webhooks and functions send
    expected = "sha256=" + hmac.new(KEY, body, hashlib.sha256).hexdigest()
    assert headers[SIGNATURE_HEADER.lower()] == expected == signature(KEY, body)
    assert SIGNATURE_HEADER == "X-Khoa-Signature"
    assert headers["content-type"] == "application/json"
    assert headers["x-khoa-alert-id"] == "a1"
    assert headers["user-agent"].startswith("Python-urllib/")


def test_bytes_body_is_sent_as_is_and_unsigned_without_a_key(receiver: Receiver) -> None:
    body = b'{"b":1,"a":2}'
    assert post(receiver.url(), body, timeout=5, user_agent="khoa-alerts/1").delivered
    _, _, headers, received = receiver.requests[0]
    assert received == body
    assert SIGNATURE_HEADER.lower() not in headers
    assert headers["user-agent"] == "khoa-alerts/1"


def test_signature_header_name_is_a_parameter(receiver: Receiver) -> None:
    post(receiver.url(), b"x", timeout=5, signing_key=KEY, signature_header="X-Other-Signature")
    headers = receiver.requests[0][2]
    assert headers["x-other-signature"] == signature(KEY, b"x")
    assert SIGNATURE_HEADER.lower() not in headers


# -- retries --------------------------------------------------------------------------------------------


def test_retries_5xx_with_exponential_backoff(receiver: Receiver) -> None:
    receiver.answers = [503, 500, 502]
    sleeps: list[float] = []
    retry = Retry(attempts=4, first_delay=0.25, max_delay=0.6, jitter=0.0)
    result = post(receiver.url(), b"{}", timeout=5, retry=retry, sleep=sleeps.append)
    assert result.delivered and result.attempts == 4 and receiver.posts == 4
    assert sleeps == [0.25, 0.5, 0.6]  # doubling, capped


def test_jitter_only_shortens_the_wait(receiver: Receiver) -> None:
    receiver.answers = [503, 503]
    sleeps: list[float] = []
    retry = Retry(attempts=3, first_delay=1.0, max_delay=10.0, jitter=0.5)
    post(receiver.url(), b"{}", timeout=5, retry=retry, sleep=sleeps.append, draw=lambda: 1.0)
    assert sleeps == [0.5, 1.0]
    assert all(0.5 <= retry.delay(1) <= 1.0 for _ in range(100))
    assert Retry(attempts=0).tries == 1


def test_gives_up_after_the_attempts(receiver: Receiver) -> None:
    receiver.answers = [503] * 10
    result = post(receiver.url(), b"{}", timeout=5, retry=Retry(attempts=3), sleep=no_sleep)
    assert result.outcome is Outcome.UNDELIVERED and result.status == 503 and result.attempts == 3
    assert receiver.posts == 3 and result.describe() == "HTTP 503"


def test_no_retry_by_default(receiver: Receiver) -> None:
    receiver.answers = [500]
    result = post(receiver.url(), b"{}", timeout=5)
    assert not result.delivered and result.status == 500 and receiver.posts == 1


@pytest.mark.parametrize("status", [400, 401, 404, 410])
def test_a_refusal_is_not_retried(receiver: Receiver, status: int) -> None:
    receiver.answers = [status]
    result = post(receiver.url(), b"{}", timeout=5, retry=Retry(attempts=3), sleep=no_sleep)
    assert result.outcome is Outcome.REJECTED and result.status == status and receiver.posts == 1


@pytest.mark.parametrize("status", [408, 429])
def test_not_now_is_retried(receiver: Receiver, status: int) -> None:
    receiver.answers = [status]
    result = post(receiver.url(), b"{}", timeout=5, retry=Retry(attempts=3), sleep=no_sleep)
    assert result.delivered and receiver.posts == 2


def test_connection_refused_is_retried_until_the_receiver_is_up() -> None:
    port = closed_port()
    started: list[Receiver] = []

    def sleep(seconds: float) -> None:  # the receiver comes up during the first wait
        if not started:
            started.append(Receiver().start(port=port))

    try:
        result = post(f"http://127.0.0.1:{port}/hook", b"{}", timeout=5, retry=Retry(attempts=3), sleep=sleep)
        assert result.delivered and result.attempts == 2 and started[0].posts == 1
    finally:
        for instance in started:
            instance.stop()


def test_connection_refused_gives_up() -> None:
    sleeps: list[float] = []
    result = post(
        f"http://127.0.0.1:{closed_port()}/hook",
        b"{}",
        timeout=5,
        retry=Retry(attempts=3),
        sleep=sleeps.append,
    )
    assert result.outcome is Outcome.UNDELIVERED and result.attempts == 3 and len(sleeps) == 2
    assert result.status is None and result.error == "ConnectionRefusedError: Connection refused"


# -- what is not done -----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_are_not_followed(receiver: Receiver, status: int) -> None:
    receiver.answers = [status]
    result = post(receiver.url(), b"{}", timeout=5, signing_key=KEY)
    assert result.outcome is Outcome.UNDELIVERED and result.status == status
    assert [(method, path) for method, path, *_ in receiver.requests] == [("POST", "/hook")]


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/x", "127.0.0.1:80/x", "http://[::1"])
def test_only_http_urls(url: str) -> None:
    result = post(url, b"{}", timeout=1, retry=Retry(attempts=3), sleep=no_sleep)
    assert result.outcome is Outcome.REJECTED and result.attempts == 0


def test_tls_certificates_are_verified(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    receiver = Receiver().start(tls=context)
    try:
        result = post(f"https://127.0.0.1:{receiver.port}/hook", b"{}", timeout=5)
        assert result.outcome is Outcome.UNDELIVERED
        assert result.error is not None and result.error.startswith("SSLCertVerificationError")
        assert receiver.requests == []
    finally:
        receiver.stop()


# -- bounded time ---------------------------------------------------------------------------------------


def test_a_slow_receiver_times_out(receiver: Receiver) -> None:
    receiver.delay = 2.0
    started = time.monotonic()
    result = post(receiver.url(), b"{}", timeout=0.3)
    assert time.monotonic() - started < 1.5
    assert result.outcome is Outcome.UNDELIVERED and result.error == "TimeoutError"


def test_a_trickling_receiver_cannot_hold_the_call(receiver: Receiver) -> None:
    """A byte every 0.1 s beats every socket timeout of 0.5 s; the attempt's deadline still ends it."""
    receiver.trickle = True
    retry = Retry(attempts=2, first_delay=0.1, jitter=0.0)
    started = time.monotonic()
    result = post(receiver.url(), b"{}", timeout=0.5, retry=retry)
    elapsed = time.monotonic() - started
    assert result.outcome is Outcome.UNDELIVERED and result.error == "TimeoutError"
    assert result.attempts == 2 and receiver.posts == 2
    assert retry.worst_case_seconds(0.5) == pytest.approx(1.1)
    assert elapsed < retry.worst_case_seconds(0.5) + 1.0


# -- nothing secret comes out ---------------------------------------------------------------------------


def test_where_keeps_only_scheme_host_and_port() -> None:
    assert where(f"https://user:{TOKEN}@hooks.example:8443/services/{TOKEN}?t={TOKEN}#x") == (
        "https://hooks.example:8443"
    )
    assert where(f"http://[::1]:80/{TOKEN}") == "http://[::1]:80"
    assert where("https://hooks.slack.com/services/T0/B0/secret") == "https://hooks.slack.com"
    assert TOKEN not in where(f"http://host:notaport/{TOKEN}")


def test_no_secret_in_results_or_logs(receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    logger = logging.getLogger("khoa.test-outbound")
    secret_url = f"http://127.0.0.1:{receiver.port}/services/{TOKEN}?token={TOKEN}"
    receiver.answers = [500, 500, 400]
    results = [
        post(
            secret_url,
            b"{}",
            timeout=5,
            retry=Retry(attempts=3),
            signing_key=KEY,
            logger=logger,
            sleep=no_sleep,
        ),
        post(
            f"http://127.0.0.1:{closed_port()}/{TOKEN}",
            b"{}",
            timeout=5,
            retry=Retry(attempts=2),
            signing_key=KEY,
            logger=logger,
            sleep=no_sleep,
        ),
        post(f"file:///{TOKEN}", b"{}", timeout=5, logger=logger),
    ]
    receiver.delay = 1.0
    results.append(post(f"http://127.0.0.1:{receiver.port}/{TOKEN}", b"{}", timeout=0.2, logger=logger))
    outcomes = [r.outcome for r in results]
    assert outcomes == [Outcome.REJECTED, Outcome.UNDELIVERED, Outcome.REJECTED, Outcome.UNDELIVERED]
    assert "answered HTTP 500" in caplog.text and "refused it (HTTP 400)" in caplog.text
    assert "unreachable" in caplog.text and f"http://127.0.0.1:{receiver.port}" in caplog.text
    for text in [caplog.text, *(repr(r) for r in results), *(r.describe() for r in results)]:
        assert TOKEN not in text and KEY.decode() not in text


def test_an_exchange_pinned_to_an_address_connects_there_not_where_the_name_resolves(
    receiver: Receiver,
) -> None:
    """The XKS proxy check resolves a name once and the call connects to the address it checked: a
    name server answering differently the second time (DNS rebinding) is never asked again."""
    reply = exchange(
        f"http://xks.invalid:{receiver.port}/kms/xks/v1/keys/k/encrypt",
        b"{}",
        headers={"Content-Type": "application/json"},
        timeout=5,
        address="127.0.0.1",
    )
    assert reply.status == 200
    method, path, headers, _ = receiver.requests[-1]
    assert (method, path) == ("POST", "/kms/xks/v1/keys/k/encrypt")
    assert headers["host"] == f"xks.invalid:{receiver.port}"  # the name, as signed, not the address
    with pytest.raises(Unreachable):  # unpinned, the name is looked up (and .invalid never resolves)
        exchange(f"http://xks.invalid:{receiver.port}/", b"{}", headers={}, timeout=5)
