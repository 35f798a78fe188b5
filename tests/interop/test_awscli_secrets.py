"""The aws CLI, unmodified, against Khoa's Secrets Manager: create, read, update, list and delete a
secret (string and binary values), and generate a password."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path

import pytest

from tests.support.awscli import AwsCli, aws_cli
from tests.support.server import REGION, KhoaServer


@pytest.fixture
def secretsmanager(server: KhoaServer) -> AwsCli:
    return aws_cli(server.endpoint, service="secretsmanager")


def test_create_read_update_delete(secretsmanager: AwsCli) -> None:
    name = f"cli/{uuid.uuid4().hex[:10]}"
    created = secretsmanager.json(
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

    value = secretsmanager.json("get-secret-value", "--secret-id", name)
    assert json.loads(value["SecretString"]) == {"user": "cli", "password": "first"}
    assert value["VersionStages"] == ["AWSCURRENT"]
    text = secretsmanager.text("get-secret-value", "--secret-id", created["ARN"], "--query", "SecretString")
    assert json.loads(text) == {"user": "cli", "password": "first"}

    secretsmanager.json("put-secret-value", "--secret-id", name, "--secret-string", "second")
    assert secretsmanager.json("get-secret-value", "--secret-id", name)["SecretString"] == "second"
    previous = secretsmanager.json("get-secret-value", "--secret-id", name, "--version-stage", "AWSPREVIOUS")
    assert json.loads(previous["SecretString"])["password"] == "first"

    described = secretsmanager.json("describe-secret", "--secret-id", name)
    assert described["Description"] == "made by the CLI"
    assert described["Tags"] == [{"Key": "origin", "Value": "cli"}]
    listed = secretsmanager.json("list-secrets", "--filters", f"Key=name,Values={name}")
    assert [s["Name"] for s in listed["SecretList"]] == [name]

    deleted = secretsmanager.json("delete-secret", "--secret-id", name, "--recovery-window-in-days", "7")
    assert deleted["Name"] == name
    refused = secretsmanager.run("get-secret-value", "--secret-id", name, check=False)
    assert refused.returncode != 0
    assert "InvalidRequestException" in refused.stderr
    secretsmanager.json("restore-secret", "--secret-id", name)
    secretsmanager.json("delete-secret", "--secret-id", name, "--force-delete-without-recovery")
    missing = secretsmanager.run("describe-secret", "--secret-id", name, check=False)
    assert missing.returncode != 0
    assert "ResourceNotFoundException" in missing.stderr


def test_binary_secret_from_a_file(secretsmanager: AwsCli, tmp_path: Path) -> None:
    name = f"cli/{uuid.uuid4().hex[:10]}"
    blob = bytes(range(256)) * 4
    path = tmp_path / "secret.bin"
    path.write_bytes(blob)
    secretsmanager.json("create-secret", "--name", name, "--secret-binary", f"fileb://{path}")
    value = secretsmanager.json("get-secret-value", "--secret-id", name)
    assert base64.b64decode(value["SecretBinary"]) == blob
    secretsmanager.json("delete-secret", "--secret-id", name, "--force-delete-without-recovery")


def test_random_password(secretsmanager: AwsCli) -> None:
    result = secretsmanager.json("get-random-password", "--password-length", "20", "--exclude-punctuation")
    assert len(result["RandomPassword"]) == 20
    assert result["RandomPassword"].isalnum()
