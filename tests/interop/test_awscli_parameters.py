"""The aws CLI, unmodified, against Khoa's Parameter Store: create a small parameter tree, read it back
recursively with decryption, label and describe it, and delete it."""

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

AWS = Path(sys.executable).with_name("aws")


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
            "AWS_PAGER": "",
        }
    )
    result = subprocess.run(
        [sys.executable, str(AWS), "--endpoint-url", server.endpoint, "--output", "json", "ssm", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check:
        # The error text only: stdout could hold a decrypted value.
        assert result.returncode == 0, f"aws ssm {args[0]} failed: {result.stderr}"
    return result


def aws_json(server: KhoaServer, *args: str) -> Any:
    output = aws(server, *args).stdout
    return json.loads(output) if output.strip() else {}


@pytest.fixture
def cli_server(server: KhoaServer) -> KhoaServer:
    if not AWS.exists():
        pytest.fail(f"the aws CLI is not installed in the venv ({AWS})")
    return server


def test_parameter_tree(cli_server: KhoaServer) -> None:
    server = cli_server
    root = f"/cli-{uuid.uuid4().hex[:10]}"
    tree = {
        f"{root}/app/url": ("String", "app.example:443"),
        f"{root}/app/hosts": ("StringList", "a.example,b.example"),
        f"{root}/app/db/password": ("SecureString", "cli-db-secret"),
        f"{root}/app/db/user": ("String", "app"),
        f"{root}/top": ("String", "top-level"),
    }
    for name, (kind, value) in tree.items():
        put = aws_json(server, "put-parameter", "--name", name, "--type", kind, "--value", value)
        assert put["Version"] == 1
        assert put["Tier"] == "Standard"
    again = aws(
        server, "put-parameter", "--name", f"{root}/top", "--type", "String", "--value", "x", check=False
    )
    assert again.returncode != 0
    assert "ParameterAlreadyExists" in again.stderr
    aws_json(server, "put-parameter", "--name", f"{root}/top", "--value", "top-2", "--overwrite")

    # The CLI pages through every result itself (PageSize 1 forces several pages).
    found = aws_json(
        server,
        "get-parameters-by-path",
        "--path",
        root,
        "--recursive",
        "--with-decryption",
        "--page-size",
        "1",
    )
    values = {p["Name"]: (p["Type"], p["Value"]) for p in found["Parameters"]}
    assert values == {**tree, f"{root}/top": ("String", "top-2")}
    encrypted = aws_json(server, "get-parameters-by-path", "--path", f"{root}/app/db")
    by_name = {p["Name"]: p["Value"] for p in encrypted["Parameters"]}
    assert by_name[f"{root}/app/db/password"] != "cli-db-secret"
    one_level = aws_json(server, "get-parameters-by-path", "--path", f"{root}/app")
    assert sorted(p["Name"] for p in one_level["Parameters"]) == [f"{root}/app/hosts", f"{root}/app/url"]

    single = aws_json(server, "get-parameter", "--name", f"{root}/app/db/password", "--with-decryption")
    assert single["Parameter"]["Value"] == "cli-db-secret"
    aws_json(
        server,
        "label-parameter-version",
        "--name",
        f"{root}/top",
        "--parameter-version",
        "1",
        "--labels",
        "first",
    )
    labelled = aws_json(server, "get-parameter", "--name", f"{root}/top:first")
    assert labelled["Parameter"]["Value"] == "top-level"
    history = aws_json(server, "get-parameter-history", "--name", f"{root}/top")
    assert [h["Version"] for h in history["Parameters"]] == [1, 2]

    described = aws_json(
        server,
        "describe-parameters",
        "--parameter-filters",
        f"Key=Path,Option=Recursive,Values={root}",
        "Key=Type,Values=SecureString",
    )
    assert [p["Name"] for p in described["Parameters"]] == [f"{root}/app/db/password"]

    names = list(tree)
    deleted = aws_json(server, "delete-parameters", "--names", *names[:4])
    assert sorted(deleted["DeletedParameters"]) == sorted(names[:4])
    aws(server, "delete-parameter", "--name", f"{root}/top")
    gone = aws(server, "get-parameter", "--name", f"{root}/top", check=False)
    assert gone.returncode != 0
    assert "ParameterNotFound" in gone.stderr
    assert aws_json(server, "get-parameters-by-path", "--path", root, "--recursive")["Parameters"] == []
