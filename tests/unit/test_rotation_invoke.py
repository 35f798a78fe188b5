"""Invoking rotation functions without a server: HTTP functions (signed POST, errors, timeout), Python
callables (what their failures reveal), and the built-in rotator's step logic against a fake client."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from khoa.secret_rotation.builtin import DatabaseRotator, RotationStepError, _alternate
from khoa.secret_rotation.functions import RotationFunction
from khoa.secret_rotation.invoke import SIGNATURE_HEADER, InvocationError, invoke

EVENT = {"SecretId": "arn:secret", "ClientRequestToken": "tok", "Step": "setSecret", "RotationToken": "r"}


def function(kind: str, target: str, timeout: float = 2.0) -> RotationFunction:
    return RotationFunction("111122223333", "us-east-1", "f", kind, target, None, None, timeout)


class Endpoint:
    def __init__(self) -> None:
        self.status = 200
        self.delay = 0.0
        self.received: list[tuple[dict[str, str], bytes]] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                endpoint.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                time.sleep(endpoint.delay)
                self.send_response(endpoint.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/rotate"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    instance = Endpoint()
    yield instance
    instance.httpd.shutdown()
    instance.httpd.server_close()


def test_http_function_gets_the_signed_event(endpoint: Endpoint) -> None:
    invoke(function("http", endpoint.url), EVENT, None, b"key")
    headers, body = endpoint.received[0]
    assert json.loads(body) == EVENT
    assert headers["content-type"] == "application/json"
    assert headers[SIGNATURE_HEADER.lower()] == "sha256=" + hmac.new(b"key", body, hashlib.sha256).hexdigest()


def test_http_function_without_a_key_is_unsigned(endpoint: Endpoint) -> None:
    invoke(function("http", endpoint.url), EVENT, None, None)
    assert SIGNATURE_HEADER.lower() not in endpoint.received[0][0]


def test_http_function_failures(endpoint: Endpoint) -> None:
    endpoint.status = 500
    with pytest.raises(InvocationError, match="HTTP 500"):
        invoke(function("http", endpoint.url), EVENT, None, None)
    endpoint.status, endpoint.delay = 200, 1.5
    with pytest.raises(InvocationError, match="could not be reached"):
        invoke(function("http", endpoint.url, timeout=0.3), EVENT, None, None)
    with pytest.raises(InvocationError, match="could not be reached"):
        invoke(function("http", "http://127.0.0.1:9/closed"), EVENT, None, None)


def leaky(event: dict[str, Any], client: Any) -> None:
    raise RuntimeError("could not set password hunter2")


def test_python_function_failures_reveal_only_the_type() -> None:
    with pytest.raises(InvocationError) as info:
        invoke(function("python", f"{__name__}:leaky"), EVENT, None, None)
    assert "RuntimeError" in str(info.value) and "hunter2" not in str(info.value)
    assert "setSecret" in str(info.value)
    with pytest.raises(InvocationError, match="ModuleNotFoundError"):
        invoke(function("python", "no.such.module:f"), EVENT, None, None)
    with pytest.raises(InvocationError, match="not a callable"):
        invoke(function("python", f"{__name__}:EVENT"), EVENT, None, None)


# -- the built-in rotator's steps ------------------------------------------------------------------------
class FakeClient:
    class exceptions:
        class ResourceNotFoundException(Exception):
            pass

    def __init__(self, current: dict[str, Any]) -> None:
        self.values = {"v1": json.dumps(current)}
        self.stages = {"v1": ["AWSCURRENT"]}
        self.calls: list[str] = []

    def describe_secret(self, SecretId: str) -> dict[str, Any]:
        return {"VersionIdsToStages": {k: list(v) for k, v in self.stages.items() if v}}

    def get_secret_value(self, SecretId: str, VersionStage: str = "", VersionId: str = "") -> dict[str, Any]:
        for version, labels in self.stages.items():
            wanted = (not VersionId or version == VersionId) and (not VersionStage or VersionStage in labels)
            if wanted and version in self.values:
                return {"SecretString": self.values[version]}
        raise self.exceptions.ResourceNotFoundException()

    def get_random_password(self, **kwargs: Any) -> dict[str, str]:
        self.calls.append(f"random {kwargs}")
        return {"RandomPassword": "n3w"}

    def put_secret_value(
        self, SecretId: str, ClientRequestToken: str, SecretString: str, VersionStages: list[str]
    ) -> None:
        self.calls.append(f"put {ClientRequestToken}")
        self.values[ClientRequestToken] = SecretString
        for labels in self.stages.values():
            for stage in VersionStages:
                if stage in labels:
                    labels.remove(stage)
        self.stages[ClientRequestToken] = list(VersionStages)

    def update_secret_version_stage(
        self, SecretId: str, VersionStage: str, MoveToVersionId: str, RemoveFromVersionId: str
    ) -> None:
        self.calls.append(f"move {VersionStage} {RemoveFromVersionId}->{MoveToVersionId}")
        self.stages[RemoveFromVersionId].remove(VersionStage)
        self.stages[MoveToVersionId].append(VersionStage)


SECRET = {
    "engine": "postgres",
    "host": "127.0.0.1",
    "port": 9,
    "username": "app",
    "password": "old",
    "dbname": "d",
}


def step(rotator: DatabaseRotator, client: FakeClient, name: str, token: str = "tok") -> None:
    rotator({"SecretId": "arn", "ClientRequestToken": token, "Step": name, "RotationToken": "r"}, client)


def test_create_secret_makes_the_pending_version_once() -> None:
    client = FakeClient(SECRET)
    step(DatabaseRotator("postgresql-single-user"), client, "createSecret")
    assert json.loads(client.values["tok"]) == dict(SECRET, password="n3w")
    assert client.stages["tok"] == ["AWSPENDING"]
    excluded = client.calls[0]
    assert "ExcludeCharacters" in excluded and "@" in excluded and "/" in excluded
    step(DatabaseRotator("postgresql-single-user"), client, "createSecret")  # repeated after a crash
    assert [c for c in client.calls if c.startswith("put")] == ["put tok"]


def test_create_secret_alternates_the_user() -> None:
    client = FakeClient(dict(SECRET, masterarn="arn:master"))
    step(DatabaseRotator("mysql-alternating-users"), client, "createSecret")
    assert json.loads(client.values["tok"])["username"] == "app_clone"
    assert _alternate("app_clone") == "app" and _alternate("app") == "app_clone"


def test_later_steps_need_the_pending_version() -> None:
    client = FakeClient(SECRET)
    with pytest.raises(RotationStepError, match="no stage for rotation"):
        step(DatabaseRotator("postgresql-single-user"), client, "setSecret")


def test_finish_moves_current_and_is_idempotent() -> None:
    client = FakeClient(SECRET)
    rotator = DatabaseRotator("postgresql-single-user")
    step(rotator, client, "createSecret")
    step(rotator, client, "finishSecret")
    assert client.calls[-1] == "move AWSCURRENT v1->tok"
    assert "AWSCURRENT" in client.stages["tok"]
    calls = len(client.calls)
    step(rotator, client, "finishSecret")
    step(rotator, client, "setSecret")  # a version already current has nothing left to do
    assert len(client.calls) == calls


def test_alternating_needs_a_master_secret() -> None:
    client = FakeClient(SECRET)  # no masterarn
    rotator = DatabaseRotator("postgresql-alternating-users")
    step(rotator, client, "createSecret")
    # the pending credentials are refused (nothing listens on port 9), so setSecret needs the master
    with pytest.raises(RotationStepError, match="masterarn"):
        step(rotator, client, "setSecret")
