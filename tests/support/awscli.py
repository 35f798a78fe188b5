"""Run the unmodified aws CLI (v1, installed in the venv by the test extra) against a Khoa server.

One runner for every interop test that drives the CLI, so they all isolate it the same way: none of
the caller's AWS_* settings, no config or credentials file unless a test names one, the test region,
no pager, and one attempt (a refused call fails at once instead of being retried).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.server import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY

AWS = Path(sys.executable).with_name("aws")
ROOT_CREDENTIALS = (ACCESS_KEY_ID, SECRET_ACCESS_KEY)


def aws_env(credentials: tuple[str, str] | None = ROOT_CREDENTIALS) -> dict[str, str]:
    """The environment for one CLI run: ``credentials`` (access key id, secret) in AWS_* variables,
    or none at all (then set AWS_SHARED_CREDENTIALS_FILE, as the README does)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        {
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_PAGER": "",
            "AWS_MAX_ATTEMPTS": "1",
        }
    )
    if credentials is not None:
        env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"] = credentials
    return env


def command_name(args: tuple[str, ...]) -> str:
    """The service and operation of a CLI call, for failure messages: never the option values, which
    may hold a secret (``--secret-string``, ``--value``, ``--plaintext``)."""
    words: list[str] = []
    skip_value = False
    for arg in args:
        if arg.startswith("--"):
            skip_value = True
        elif skip_value:
            skip_value = False
        else:
            words.append(arg)
    return " ".join(words[:2])


class AwsCli:
    """The aws CLI pointed at one endpoint; ``service`` (e.g. ``ssm``), when given, precedes every
    call's arguments. ``env`` stays mutable so a test can swap in other credentials."""

    def __init__(self, endpoint: str, env: dict[str, str], service: str | None = None) -> None:
        self.endpoint = endpoint
        self.env = env
        self.service = service

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run one call; with ``check``, fail the test with the CLI's error text unless it exits 0
        (stdout is left out: it may hold a decrypted value)."""
        call = (self.service, *args) if self.service else args
        result = subprocess.run(
            [sys.executable, str(AWS), "--endpoint-url", self.endpoint, *call],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"aws {command_name(call)} failed ({result.returncode}): {result.stderr.strip()}"
            )
        return result

    def json(self, *args: str) -> Any:
        """The call's JSON answer ({} for the operations that print nothing)."""
        output = self.run(*args, "--output", "json").stdout
        return json.loads(output) if output.strip() else {}

    def text(self, *args: str) -> str:
        return self.run(*args, "--output", "text").stdout.strip()


def aws_cli(
    endpoint: str, *, service: str | None = None, credentials: tuple[str, str] | None = ROOT_CREDENTIALS
) -> AwsCli:
    """A runner for ``endpoint``; fails the test when the CLI is missing (the test extra installs it,
    so a missing CLI is a broken environment, not a reason to skip)."""
    if not AWS.exists():
        pytest.fail(f"the aws CLI is not installed in the venv ({AWS}): install the test extra")
    return AwsCli(endpoint, aws_env(credentials), service)
