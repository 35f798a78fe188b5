"""The aws CLI, unmodified, against Khoa's Secrets Manager: create, read, update, list and delete a
secret (string and binary values), and generate a password."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support.server import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, KhoaServer

AWS = str(Path(sys.executable).parent / "aws")


def aws(server: KhoaServer, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_MAX_ATTEMPTS": "1",
        }
    )
    result = subprocess.run(
        [AWS, "--endpoint-url", server.endpoint, "--output", "json", "secretsmanager", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"aws {args[0]} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def aws_json(server: KhoaServer, *args: str) -> Any:
    return json.loads(aws(server, *args).stdout)


@pytest.fixture(autouse=True)
def _cli_present() -> None:
    if not Path(AWS).exists():
        pytest.fail("the aws CLI is not installed in the virtualenv (install the test extra)")


def test_create_read_update_delete(server: KhoaServer) -> None:
    name = f"cli/{uuid.uuid4().hex[:10]}"
    created = aws_json(
        server,
        "create-secret",
        "--name",
        name,
        "--description",
        "made by the CLI",
        "--secret-string",
        '{"user":"cli","password":"first"}',
        "--tags",
        "Key=origin,Value=cli",
    )
    assert created["Name"] == name
    assert created["ARN"].startswith(f"arn:aws:secretsmanager:{REGION}:")

    value = aws_json(server, "get-secret-value", "--secret-id", name)
    assert json.loads(value["SecretString"]) == {"user": "cli", "password": "first"}
    assert value["VersionStages"] == ["AWSCURRENT"]
    text = aws(
        server,
        "get-secret-value",
        "--secret-id",
        created["ARN"],
        "--query",
        "SecretString",
        "--output",
        "text",
    )
    assert json.loads(text.stdout) == {"user": "cli", "password": "first"}

    aws_json(server, "put-secret-value", "--secret-id", name, "--secret-string", "second")
    assert aws_json(server, "get-secret-value", "--secret-id", name)["SecretString"] == "second"
    previous = aws_json(server, "get-secret-value", "--secret-id", name, "--version-stage", "AWSPREVIOUS")
    assert json.loads(previous["SecretString"])["password"] == "first"

    described = aws_json(server, "describe-secret", "--secret-id", name)
    assert described["Description"] == "made by the CLI"
    assert described["Tags"] == [{"Key": "origin", "Value": "cli"}]
    listed = aws_json(server, "list-secrets", "--filters", f"Key=name,Values={name}")
    assert [s["Name"] for s in listed["SecretList"]] == [name]

    deleted = aws_json(server, "delete-secret", "--secret-id", name, "--recovery-window-in-days", "7")
    assert deleted["Name"] == name
    refused = aws(server, "get-secret-value", "--secret-id", name, check=False)
    assert refused.returncode != 0
    assert "InvalidRequestException" in refused.stderr
    aws_json(server, "restore-secret", "--secret-id", name)
    aws_json(server, "delete-secret", "--secret-id", name, "--force-delete-without-recovery")
    missing = aws(server, "describe-secret", "--secret-id", name, check=False)
    assert missing.returncode != 0
    assert "ResourceNotFoundException" in missing.stderr


def test_binary_secret_from_a_file(server: KhoaServer, tmp_path: Path) -> None:
    name = f"cli/{uuid.uuid4().hex[:10]}"
    blob = bytes(range(256)) * 4
    path = tmp_path / "secret.bin"
    path.write_bytes(blob)
    aws_json(server, "create-secret", "--name", name, "--secret-binary", f"fileb://{path}")
    value = aws_json(server, "get-secret-value", "--secret-id", name)
    import base64

    assert base64.b64decode(value["SecretBinary"]) == blob
    aws_json(server, "delete-secret", "--secret-id", name, "--force-delete-without-recovery")


def test_random_password(server: KhoaServer) -> None:
    result = aws_json(server, "get-random-password", "--password-length", "20", "--exclude-punctuation")
    assert len(result["RandomPassword"]) == 20
    assert result["RandomPassword"].isalnum()
