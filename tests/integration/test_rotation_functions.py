"""An HTTP rotation function end to end: each step is POSTed as AWS's event with an HMAC-SHA256
``X-Khoa-Signature``; the endpoint calls Khoa back with credentials of its own."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.support.rotation import holder, rotate_now, stages_of, value_of
from tests.support.rotators import simple
from tests.support.server import KhoaServer


class HttpRotator:
    """A rotation service: verifies the signature, then runs ``simple`` with its own client."""

    def __init__(self, server: KhoaServer, key: bytes) -> None:
        self.events: list[dict[str, Any]] = []
        self.bad_signatures = 0
        client = server.client("secretsmanager")
        rotator = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                expected = "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
                if not hmac.compare_digest(self.headers.get("X-Khoa-Signature", ""), expected):
                    rotator.bad_signatures += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                event = json.loads(body)
                rotator.events.append(event)
                try:
                    simple(event, client)
                except Exception:  # noqa: BLE001 - reported to Khoa as a failed step
                    self.send_response(500)
                else:
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/rotate"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def http_rotator(server: KhoaServer) -> Iterator[HttpRotator]:
    rotator = HttpRotator(server, b"the signing key")
    yield rotator
    rotator.close()


def test_http_function_rotates_with_signed_events(server: KhoaServer, http_rotator: HttpRotator) -> None:
    sm = server.client("secretsmanager")
    arn = server.register_function(
        f"http-{uuid.uuid4().hex[:6]}", http_rotator.url, "http", "--hmac-secret", "the signing key"
    )
    name = f"http-function/{uuid.uuid4().hex[:8]}"
    first = sm.create_secret(Name=name, SecretString=json.dumps({"password": "v0"}))["VersionId"]
    token = rotate_now(server, sm, name, RotationLambdaARN=arn)

    assert http_rotator.bad_signatures == 0
    assert [e["Step"] for e in http_rotator.events] == [
        "createSecret",
        "setSecret",
        "testSecret",
        "finishSecret",
    ]
    for event in http_rotator.events:
        assert set(event) == {"SecretId", "ClientRequestToken", "Step", "RotationToken"}
        assert event["SecretId"] == sm.describe_secret(SecretId=name)["ARN"]
        assert event["ClientRequestToken"] == token
    assert len({e["RotationToken"] for e in http_rotator.events}) == 4
    stages = stages_of(sm, name)
    assert holder(stages, "AWSCURRENT") == token and holder(stages, "AWSPREVIOUS") == first
    assert holder(stages, "AWSPENDING") is None
    assert value_of(sm, name)["password"] != "v0"


def test_http_function_with_the_wrong_key_fails(server: KhoaServer, http_rotator: HttpRotator) -> None:
    sm = server.client("secretsmanager")
    arn = server.register_function(
        f"http-{uuid.uuid4().hex[:6]}", http_rotator.url, "http", "--hmac-secret", "another key"
    )
    name = f"http-function/{uuid.uuid4().hex[:8]}"
    first = sm.create_secret(Name=name, SecretString=json.dumps({"password": "v0"}))["VersionId"]
    rotate_now(server, sm, name, RotationLambdaARN=arn)
    assert http_rotator.bad_signatures == 1 and http_rotator.events == []
    assert holder(stages_of(sm, name), "AWSCURRENT") == first
    sm.cancel_rotate_secret(SecretId=name)
