"""khoa.client without a server: the connection helper's retry order after authentication failures, the
failure classification for psycopg and PyMySQL, and the reader's change-stream invalidation."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import psycopg
import pymysql
import pytest

from khoa.client import SecretReader
from khoa.client.database import (
    _is_auth_failure_mysql,
    _is_auth_failure_postgres,
    _with_rotation_retry,
)

OLD = {"username": "app", "password": "old"}
NEW = {"username": "app", "password": "new"}
CLONE = {"username": "app_clone", "password": "other"}


class Refused(Exception):
    """What the fake database raises for a wrong password."""


class FakeReader:
    """Serves AWSCURRENT from a "cache" that only follows ``current`` once invalidated."""

    def __init__(self, cached: dict[str, Any], current: list[dict[str, Any]], pending: Any = None) -> None:
        self.cached = cached
        self.current = current  # successive fresh AWSCURRENT values
        self.pending = pending
        self.calls: list[str] = []

    def get_json(self, secret_id: str) -> dict[str, Any]:
        self.calls.append("current")
        return self.cached

    def invalidate(self, secret_id: str) -> None:
        self.calls.append("invalidate")
        if self.current:
            self.cached = self.current.pop(0)

    def get_pending_json(self, secret_id: str) -> Any:
        self.calls.append("pending")
        return self.pending


def database(accepts: dict[str, Any], tried: list[str]) -> Any:
    def open_with(secret: dict[str, Any]) -> str:
        tried.append(secret["password"])
        if secret != accepts:
            raise Refused("password authentication failed")
        return f"connection as {secret['username']}"

    return open_with


def is_refused(exc: Exception) -> bool:
    return isinstance(exc, Refused)


def test_cached_credentials_that_work_are_used_once() -> None:
    tried: list[str] = []
    reader = FakeReader(OLD, [])
    assert _with_rotation_retry(reader, "s", database(OLD, tried), is_refused) == "connection as app"  # type: ignore[arg-type]
    assert tried == ["old"] and reader.calls == ["current"]


def test_current_moved_since_cached() -> None:
    tried: list[str] = []
    reader = FakeReader(OLD, [NEW])
    assert _with_rotation_retry(reader, "s", database(NEW, tried), is_refused)  # type: ignore[arg-type]
    assert tried == ["old", "new"]
    assert reader.calls == ["current", "invalidate", "current"]


def test_password_set_but_not_yet_promoted_uses_pending() -> None:
    tried: list[str] = []
    reader = FakeReader(OLD, [OLD], pending=NEW)
    assert _with_rotation_retry(reader, "s", database(NEW, tried), is_refused)  # type: ignore[arg-type]
    # the same refused credentials are never sent twice
    assert tried == ["old", "new"]
    assert reader.calls == ["current", "invalidate", "current", "pending"]


def test_rotation_finished_between_the_reads() -> None:
    """AWSCURRENT was still old, and by the time AWSPENDING is asked for it is gone: current again."""
    tried: list[str] = []
    reader = FakeReader(OLD, [OLD, NEW], pending=None)
    assert _with_rotation_retry(reader, "s", database(NEW, tried), is_refused)  # type: ignore[arg-type]
    assert tried == ["old", "new"]
    assert reader.calls == ["current", "invalidate", "current", "pending", "invalidate", "current"]


def test_wrong_everywhere_raises_after_trying_each_once() -> None:
    tried: list[str] = []
    reader = FakeReader(OLD, [NEW, CLONE], pending=NEW)
    with pytest.raises(Refused):
        _with_rotation_retry(reader, "s", database({"username": "x", "password": "x"}, tried), is_refused)  # type: ignore[arg-type]
    assert tried == ["old", "new", "other"]


def test_other_errors_are_not_retried() -> None:
    reader = FakeReader(OLD, [NEW])

    def down(secret: dict[str, Any]) -> Any:
        raise ConnectionRefusedError("the database is down")

    with pytest.raises(ConnectionRefusedError):
        _with_rotation_retry(reader, "s", down, is_refused)  # type: ignore[arg-type]
    assert reader.calls == ["current"]


def test_auth_failure_classification() -> None:
    assert _is_auth_failure_postgres(
        psycopg.OperationalError('FATAL:  password authentication failed for user "app"')
    )
    assert not _is_auth_failure_postgres(psycopg.OperationalError("connection refused"))
    assert not _is_auth_failure_postgres(ValueError("password authentication failed"))
    assert _is_auth_failure_mysql(pymysql.err.OperationalError(1045, "Access denied for user 'app'"))
    assert not _is_auth_failure_mysql(pymysql.err.OperationalError(2003, "Can't connect"))


# -- the reader ---------------------------------------------------------------------------------------------
class FakeSecretsManager:
    """Just what aws-secretsmanager-caching calls: DescribeSecret and GetSecretValue by version."""

    class exceptions:
        class ResourceNotFoundException(Exception):
            pass

    def __init__(self) -> None:
        self.versions = {"v1": json.dumps(OLD)}
        self.stages = {"v1": ["AWSCURRENT"]}
        self.calls = 0
        self.lock = threading.Lock()

    def describe_secret(self, SecretId: str) -> dict[str, Any]:
        self.calls += 1
        return {"ARN": SecretId, "VersionIdsToStages": {k: list(v) for k, v in self.stages.items()}}

    def get_secret_value(self, SecretId: str, VersionId: str = "", VersionStage: str = "") -> dict[str, Any]:
        self.calls += 1
        if VersionStage:
            found = [v for v, labels in self.stages.items() if VersionStage in labels]
            if not found:
                raise self.exceptions.ResourceNotFoundException(VersionStage)
            VersionId = found[0]
        return {"ARN": SecretId, "VersionId": VersionId, "SecretString": self.versions[VersionId]}

    def rotate(self) -> None:
        self.versions["v2"] = json.dumps(NEW)
        self.stages = {"v1": ["AWSPREVIOUS"], "v2": ["AWSCURRENT"]}


def test_reader_drops_its_cache_when_current_moves() -> None:
    client = FakeSecretsManager()
    reader = SecretReader(client)
    assert reader.get_json("s") == OLD
    client.rotate()
    assert reader.get_json("s") == OLD  # cached (one hour by default)
    reader._on_event("s", "StagesMoved", {"detail": {"currentMoved": False, "moved": {"AWSPENDING": "v3"}}})
    assert reader.get_json("s") == OLD
    reader._on_event("s", "StagesMoved", {"detail": {"currentMoved": True, "currentVersionId": "v2"}})
    assert reader.get_json("s") == NEW


def test_reader_refreshes_after_rotation_succeeded_and_reads_pending_uncached() -> None:
    client = FakeSecretsManager()
    reader = SecretReader(client)
    assert reader.get_json("s") == OLD
    assert reader.get_pending_json("s") is None
    client.versions["v2"] = json.dumps(NEW)
    client.stages["v2"] = ["AWSPENDING"]
    assert reader.get_pending_json("s") == NEW
    client.rotate()
    reader._on_event("s", "RotationSucceeded", {"detail": {"versionId": "v2"}})
    assert reader.get_json("s") == NEW
    reader.close()  # nothing to close without watch=True


def test_invalidate_does_not_sleep() -> None:
    """SecretCache.refresh_secret_now sleeps 2.5-5 s; invalidate() must not."""
    import time

    client = FakeSecretsManager()
    reader = SecretReader(client)
    reader.get_json("s")
    started = time.monotonic()
    reader.invalidate("s")
    reader.get_json("s")
    assert time.monotonic() - started < 0.5


def test_a_watching_reader_never_follows_a_redirect_with_its_signature() -> None:
    """A change stream answered with a 307 elsewhere: the signed request (Authorization, replayable for
    minutes, and the session token) must not be sent where the answer points."""
    seen: dict[str, list[dict[str, str]]] = {"origin": [], "elsewhere": []}

    def serve(name: str, location: str | None) -> ThreadingHTTPServer:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen[name].append({k.lower(): v for k, v in self.headers.items()})
                if location is None:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.end_headers()
                    self.wfile.write(b": hello\n\n")
                    return
                self.send_response(307)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        return server

    elsewhere = serve("elsewhere", None)
    origin = serve("origin", f"http://127.0.0.1:{elsewhere.server_address[1]}/steal")
    client = boto3.client(
        "secretsmanager",
        endpoint_url=f"http://127.0.0.1:{origin.server_address[1]}",
        region_name="us-east-1",
        aws_access_key_id="AKIAEXAMPLE000000001",
        aws_secret_access_key="example-secret",
        aws_session_token="example-session-token",
    )
    reader = SecretReader(client, watch=True)
    try:
        reader._subscribe("prod/db")
        deadline = time.monotonic() + 10
        while not seen["origin"] and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        reader.close()
        origin.shutdown()
        elsewhere.shutdown()
    assert seen["origin"] and "authorization" in seen["origin"][0]
    assert seen["elsewhere"] == []
