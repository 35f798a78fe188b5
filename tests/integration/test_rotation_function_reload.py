"""A Python rotation function is reloaded when its file changes, so a fixed function is used by the
next attempt without restarting the server; a failure is reported with the exception's type and
message, never with a secret value.

The function lives in a module of this test's own, on the PYTHONPATH of a server of its own.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.rotation import holder, register, rotate_now, stages_of
from tests.support.server import HOOKS_DIR, KhoaServer

BACKOFF_SECONDS = 2 * 60 + 1  # the first retry waits two minutes

# createSecret of AWS's template (docs/rotation.md), then finishSecret; BODY is the broken or fixed part.
_MODULE = """
import json


def handler(event, client):
    arn, token, step = event["SecretId"], event["ClientRequestToken"], event["Step"]
    if step == "createSecret":
        current = json.loads(client.get_secret_value(SecretId=arn)["SecretString"])
{body}
        current["password"] = client.get_random_password(PasswordLength=24)["RandomPassword"]
        client.put_secret_value(SecretId=arn, ClientRequestToken=token,
                                SecretString=json.dumps(current), VersionStages=["AWSPENDING"])
    elif step == "finishSecret":
        stages = client.describe_secret(SecretId=arn)["VersionIdsToStages"]
        old = next(v for v, labels in stages.items() if "AWSCURRENT" in labels)
        if old != token:
            client.update_secret_version_stage(SecretId=arn, VersionStage="AWSCURRENT",
                                               MoveToVersionId=token, RemoveFromVersionId=old)
"""
BROKEN = "        conect(current['host'])  # a typo: NameError"
LEAKY = "        raise RuntimeError(f\"login refused for {current['username']} with {current['password']}\")"
FIXED = "        pass"


@pytest.fixture(scope="module")
def modules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rotation-modules")


@pytest.fixture(scope="module")
def own_server(tmp_path_factory: pytest.TempPathFactory, modules: Path) -> Iterator[KhoaServer]:
    instance = KhoaServer(
        tmp_path_factory.mktemp("rotation-reload") / "data",
        extra_env={"PYTHONPATH": os.pathsep.join([str(HOOKS_DIR), str(modules)])},
    ).start()
    yield instance
    instance.stop()


def _write(modules: Path, module: str, body: str) -> None:
    path = modules / f"{module}.py"
    before = path.stat() if path.exists() else None
    path.write_text(_MODULE.format(body=body))
    if before is not None and path.stat().st_mtime_ns == before.st_mtime_ns:  # a coarse clock
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))


def _failures(server: KhoaServer, name: str) -> list[str]:
    events = server.client("cloudtrail").lookup_events(
        LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "RotationFailed"}]
    )["Events"]
    records = [json.loads(e["CloudTrailEvent"]) for e in events]
    return [
        r["additionalEventData"]["error"]
        for r in records
        if any(name in res.get("ARN", "") for res in r.get("resources", []))
    ]


def _function(server: KhoaServer, modules: Path, body: str) -> tuple[str, str]:
    module = f"rotator_{uuid.uuid4().hex[:8]}"
    _write(modules, module, body)
    return module, register(server, module.replace("_", "-"), f"{module}:handler")


def _secret(sm: Any, password: str) -> str:
    name = f"reload/{uuid.uuid4().hex[:8]}"
    sm.create_secret(
        Name=name, SecretString=json.dumps({"host": "db.internal", "username": "app", "password": password})
    )
    return name


def test_a_fixed_function_is_used_without_a_restart(own_server: KhoaServer, modules: Path) -> None:
    sm = own_server.client("secretsmanager")
    module, arn = _function(own_server, modules, BROKEN)
    name = _secret(sm, "first-password-0")
    first = holder(stages_of(sm, name), "AWSCURRENT")
    token = rotate_now(own_server, sm, name, RotationLambdaARN=arn)

    # the failure says what went wrong: the exception's type and its message
    assert _failures(own_server, name) == ["createSecret failed: NameError: name 'conect' is not defined"]
    assert holder(stages_of(sm, name), "AWSCURRENT") == first

    # the file is fixed; the retry after the backoff runs the new code, in the same server process
    pid = own_server.process.pid if own_server.process else None
    _write(modules, module, FIXED)
    own_server.advance_clock(BACKOFF_SECONDS)
    own_server.run_jobs()
    stages = stages_of(sm, name)
    assert holder(stages, "AWSCURRENT") == token and holder(stages, "AWSPREVIOUS") == first
    assert own_server.process is not None and own_server.process.pid == pid
    assert len(_failures(own_server, name)) == 1
    assert "reloaded rotation function module" in own_server.log_path.read_text()

    # and broken again: the next rotation sees that too
    _write(modules, module, BROKEN)
    rotate_now(own_server, sm, name)
    assert len(_failures(own_server, name)) == 2


def test_a_failure_message_never_holds_the_secret_value(own_server: KhoaServer, modules: Path) -> None:
    sm = own_server.client("secretsmanager")
    _, arn = _function(own_server, modules, LEAKY)
    password = f"s3cret-{uuid.uuid4().hex[:10]}"
    name = _secret(sm, password)
    rotate_now(own_server, sm, name, RotationLambdaARN=arn)

    (error,) = _failures(own_server, name)
    # the type and the message, the user named (a connection field), the password replaced
    assert error == "createSecret failed: RuntimeError: login refused for app with [redacted]"
    assert password not in own_server.log_path.read_text()
