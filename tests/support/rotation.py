"""Helpers for the rotation tests: the function role, registering functions with it, reading labels,
and Python rotation functions whose behaviour a test steers through the secret's tags.

Outside ``--dev`` a rotation function acts only as the IAM role it was registered with (as a Lambda
function acts as its execution role), so the tests create one through the IAM API with the permissions
AWS's rotation templates ask for.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from tests.support.iam import allow, document, trust
from tests.support.names import unique
from tests.support.rotators import simple
from tests.support.server import ACCOUNT_ID, KhoaServer

ROTATION_ACTIONS = [
    "secretsmanager:DescribeSecret",
    "secretsmanager:GetSecretValue",
    "secretsmanager:PutSecretValue",
    "secretsmanager:UpdateSecretVersionStage",
]
_roles: dict[tuple[str, int], str] = {}


def rotation_role(server: KhoaServer) -> str:
    """An IAM role (made once per server) allowed what a rotation function needs, and no more."""
    key = (str(server.data_dir), server.port)
    if key not in _roles:
        iam = server.client("iam")
        name = unique("rotation-role")
        arn = iam.create_role(
            RoleName=name, AssumeRolePolicyDocument=trust({"Service": "lambda.amazonaws.com"})
        )["Role"]["Arn"]
        iam.put_role_policy(
            RoleName=name,
            PolicyName="rotation",
            PolicyDocument=document(
                allow(ROTATION_ACTIONS, f"arn:aws:secretsmanager:*:{ACCOUNT_ID}:secret:*"),
                allow("secretsmanager:GetRandomPassword"),
            ),
        )
        _roles[key] = arn
    return _roles[key]


def register(server: KhoaServer, name: str, target: str, kind: str = "python", *extra: str) -> str:
    """Register a rotation function acting as the rotation role; returns its Lambda ARN."""
    if server.dev:
        return server.register_function(name, target, kind, *extra)
    return server.register_function(name, target, kind, "--role", rotation_role(server), *extra)


def stages_of(sm: Any, secret_id: str) -> dict[str, list[str]]:
    """Version id → labels, checking the invariants every rotation must keep."""
    versions: dict[str, list[str]] = {}
    kwargs: dict[str, Any] = {"SecretId": secret_id, "IncludeDeprecated": True}
    while True:
        page = sm.list_secret_version_ids(**kwargs)
        for version in page["Versions"]:
            versions[version["VersionId"]] = sorted(version.get("VersionStages", []))
        if not page.get("NextToken"):
            break
        kwargs["NextToken"] = page["NextToken"]
    for label in ("AWSCURRENT", "AWSPREVIOUS", "AWSPENDING"):
        holders = [v for v, labels in versions.items() if label in labels]
        assert len(holders) <= 1, f"{label} on {holders}"
    assert any("AWSCURRENT" in labels for labels in versions.values()), "no AWSCURRENT"
    return versions


def holder(stages: dict[str, list[str]], label: str) -> str | None:
    return next((v for v, labels in stages.items() if label in labels), None)


def value_of(sm: Any, secret_id: str, **kwargs: Any) -> dict[str, Any]:
    data = json.loads(sm.get_secret_value(SecretId=secret_id, **kwargs)["SecretString"])
    assert isinstance(data, dict)
    return data


def rotate_now(server: KhoaServer, sm: Any, secret_id: str, **kwargs: Any) -> str:
    """RotateSecret, then wait for the job pass it started (run_jobs waits for a running pass)."""
    token: str = sm.rotate_secret(SecretId=secret_id, **kwargs)["VersionId"]
    server.run_jobs()
    return token


def wait_for(check: Any, seconds: float = 10.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {seconds} seconds")
        time.sleep(interval)


# -- Python rotation functions steered by the secret's tags (the server imports these) ---------------------
def _tags(client: Any, arn: str) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in client.describe_secret(SecretId=arn).get("Tags", [])}


def controlled(event: dict[str, Any], client: Any) -> None:
    """``simple`` (tests.support.rotators), except that:

    - tag ``fail-at`` = a step name: that step raises;
    - tag ``hold`` = ``<before|after>:<path>``: finishSecret writes ``<path>.entered`` and then waits,
      before or after moving AWSCURRENT, while ``<path>`` exists (up to 60 s), to be killed there;
    - tag ``record`` = a path: each invocation appends ``<pid> <step> <token>`` to it;
    - tag ``finished`` = a path: once finishSecret has moved AWSCURRENT, it writes ``time.time()`` there.
    """
    tags = _tags(client, event["SecretId"])
    step = event["Step"]
    if tags.get("record"):
        with open(tags["record"], "a") as record:
            record.write(f"{os.getpid()} {step} {event['ClientRequestToken']}\n")
    if tags.get("fail-at") == step:
        raise RuntimeError(f"told to fail at {step}")
    hold = tags.get("hold", "")
    when, _, path = hold.partition(":")
    if step == "finishSecret" and path and when == "before":
        _hold(Path(path))
    simple(event, client)
    if step == "finishSecret" and tags.get("finished"):
        Path(tags["finished"]).write_text(repr(time.time()))
    if step == "finishSecret" and path and when == "after":
        _hold(Path(path))


def _hold(path: Path) -> None:
    Path(f"{path}.entered").write_text(str(os.getpid()))
    deadline = time.monotonic() + 60
    while path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
