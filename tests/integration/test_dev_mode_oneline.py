"""Dev mode in one line, and ``khoa env`` / ``khoa aws`` against an installation.

``khoa server --dev`` without a data directory keeps its installation in a temporary directory and
prints one ``export …`` line; a shell that evals it reaches the server with plain ``aws`` and boto3,
and stopping the server leaves nothing behind (no data directory, nothing in the working directory or
in TMPDIR). ``eval "$(khoa env)"`` does the same for an installation that checks signatures.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.support.server import ACCESS_KEY_ID, ACCOUNT_ID, KhoaServer, free_port

BIN = Path(sys.executable).parent
KHOA = BIN / "khoa"  # the installed entry point, as a person runs it
EXPORT = re.compile(r"^export (AWS_ENDPOINT_URL=\S+ .*)$")
VARIABLES = (
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
)


def person_env(home: Path, **extra: str) -> dict[str, str]:
    """A shell as a person has it: no KHOA_* or AWS_* settings, their own HOME, the venv on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KHOA_", "AWS_"))}
    env.update(HOME=str(home), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", AWS_PAGER="", **extra)
    return env


def shell(script: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", f"set -e\n{script}"], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def evaluated(lines: str, env: dict[str, str], cwd: Path) -> dict[str, str]:
    """The environment a shell has after ``eval``-ing ``lines`` (started from ``env``)."""
    result = shell('eval "$KHOA_LINES"\nenv -0', env | {"KHOA_LINES": lines}, cwd)
    assert result.returncode == 0, result.stderr
    pairs = (item.split("=", 1) for item in result.stdout.split("\0") if "=" in item)
    return {name: value for name, value in pairs if name != "KHOA_LINES"}


def wait_healthy(endpoint: str, process: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the dev server exited"
        try:
            with urllib.request.urlopen(f"{endpoint}/_khoa/health", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the dev server did not become healthy")


def read_export_line(process: subprocess.Popen[str], timeout: float = 30) -> str:
    """The first ``export …`` line on the server's standard output."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.2)
        if ready:
            line = process.stdout.readline()
            if not line and process.poll() is not None:
                break
            if EXPORT.match(line.strip()):
                return line.strip()
    raise AssertionError("khoa server --dev printed no export line")


class DevServer:
    """``khoa server --dev`` started by a person: no data directory, TMPDIR and cwd of the test's."""

    def __init__(self, root: Path, *args: str) -> None:
        self.cwd, self.tmp, self.home = root / "cwd", root / "tmp", root / "home"
        for directory in (self.cwd, self.tmp, self.home):
            directory.mkdir()
        self.env = person_env(self.home, TMPDIR=str(self.tmp))
        self.stderr_path = root / "server.err"
        with self.stderr_path.open("w") as stderr:
            self.process = subprocess.Popen(
                [str(KHOA), "server", "--dev", "--port", str(free_port()), *args],
                cwd=self.cwd,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        self.line = read_export_line(self.process)
        self.variables = evaluated(self.line, self.env, self.cwd)
        wait_healthy(self.variables["AWS_ENDPOINT_URL"], self.process)

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError("the dev server did not stop within 30 s") from None
        return self.process.returncode


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[DevServer]:
    server = DevServer(tmp_path)
    yield server
    server.stop(signal.SIGKILL)


def data_dir_of(server: DevServer) -> Path:
    found = re.search(r"data in (\S+) \(temporary", server.stderr)
    assert found, server.stderr
    return Path(found.group(1))


def test_one_line_dev_server_with_plain_aws_and_boto3(
    dev: DevServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The one line holds everything the aws CLI (v1 reads AWS_DEFAULT_REGION) and boto3 need.
    assert set(VARIABLES) <= set(dev.variables)
    assert dev.variables["AWS_REGION"] == dev.variables["AWS_DEFAULT_REGION"] == "us-east-1"
    data_dir = data_dir_of(dev)
    assert data_dir.is_relative_to(dev.tmp) and (data_dir / "khoa.db").is_file()

    # Plain `aws`, after eval of the printed line (no --endpoint-url, no credentials file).
    name = f"dev-{uuid.uuid4().hex[:8]}"
    result = shell(
        f'eval "$KHOA_LINE"\n'
        f"aws kms create-key --description {name} --query KeyMetadata.KeyId --output text\n"
        f"aws secretsmanager create-secret --name {name} --secret-string s3cret --output json\n",
        dev.env | {"KHOA_LINE": dev.line},
        dev.cwd,
    )
    assert result.returncode == 0, result.stderr
    key_id = result.stdout.split()[0]
    assert json.loads(result.stdout[len(key_id) :])["Name"] == name

    # boto3 with nothing but the evaluated environment.
    for variable in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(variable, raising=False)
    for variable in VARIABLES:
        monkeypatch.setenv(variable, dev.variables[variable])
    monkeypatch.setenv("HOME", str(dev.home))
    session = boto3.Session()
    kms, sm = session.client("kms"), session.client("secretsmanager")
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["Description"] == name
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "s3cret"
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"dev")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"dev"

    # Stopped as a service manager stops it: nothing left behind.
    assert dev.stop(signal.SIGTERM) == 128 + signal.SIGTERM
    assert not data_dir.exists()
    assert list(dev.tmp.iterdir()) == []
    assert list(dev.cwd.iterdir()) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGHUP], ids=["ctrl-c", "hangup"])
def test_ctrl_c_or_a_closed_terminal_leaves_nothing_behind(tmp_path: Path, sig: int) -> None:
    server = DevServer(tmp_path)
    try:
        data_dir = data_dir_of(server)
        assert data_dir.is_dir()
        # Ctrl-C exits 130 as a shell expects; a hangup stops the server as SIGTERM does (143).
        assert server.stop(sig) == 128 + (signal.SIGINT if sig == signal.SIGINT else signal.SIGTERM)
        assert "Traceback" not in server.stderr
        assert not data_dir.exists() and list(server.tmp.iterdir()) == []
    finally:
        server.stop(signal.SIGKILL)


def test_a_given_data_directory_is_kept(tmp_path: Path) -> None:
    server = DevServer(tmp_path, "--data-dir", "dev-data")
    try:
        assert "temporary" not in server.stderr
        assert server.stop() == -signal.SIGTERM  # uvicorn's graceful stop, then the signal again
        assert (server.cwd / "dev-data" / "khoa.db").is_file()
        # The printed credentials are the installation's root credentials.
        assert f"AWS_ACCESS_KEY_ID={server.variables['AWS_ACCESS_KEY_ID']}" in server.line
        assert (server.cwd / "dev-data" / "root-credentials").read_text().count(
            server.variables["AWS_ACCESS_KEY_ID"]
        ) == 1
    finally:
        server.stop(signal.SIGKILL)


# -- khoa env / khoa aws against a server that checks signatures --------------------------------------


def khoa(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(KHOA), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_eval_khoa_env_then_plain_aws_and_boto3(
    server: KhoaServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = person_env(tmp_path)
    printed = khoa(env, tmp_path, "env", "--data-dir", str(server.data_dir))
    assert printed.returncode == 0, printed.stderr
    variables = evaluated(printed.stdout, env | {"AWS_SESSION_TOKEN": "left-over"}, tmp_path)
    assert variables["AWS_ENDPOINT_URL"] == server.endpoint  # recorded by the server at start
    assert variables["AWS_ACCESS_KEY_ID"] == ACCESS_KEY_ID
    assert "AWS_SESSION_TOKEN" not in variables  # a real account's token would spoil the signature

    result = shell(
        f"eval \"$('{KHOA}' env --data-dir '{server.data_dir}')\"\naws sts get-caller-identity --output json",
        env,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["Account"] == ACCOUNT_ID

    for variable in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(variable, raising=False)
    for variable in VARIABLES:
        monkeypatch.setenv(variable, variables[variable])
    monkeypatch.setenv("HOME", str(tmp_path))
    assert boto3.client("sts").get_caller_identity()["Account"] == ACCOUNT_ID


def test_khoa_env_with_a_profile_of_ones_own(server: KhoaServer, iam: Any, tmp_path: Path) -> None:
    """``--profile``: an IAM user's keys from the person's AWS configuration, not the root's."""
    user = f"env-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    credentials = tmp_path / "credentials"
    credentials.write_text(
        f"[{user}]\naws_access_key_id = {key['AccessKeyId']}\n"
        f"aws_secret_access_key = {key['SecretAccessKey']}\n"
    )
    env = person_env(tmp_path, AWS_SHARED_CREDENTIALS_FILE=str(credentials), AWS_CONFIG_FILE=os.devnull)
    printed = khoa(env, tmp_path, "env", "--data-dir", str(server.data_dir), "--profile", user)
    assert printed.returncode == 0, printed.stderr
    assert key["SecretAccessKey"] not in printed.stdout and ACCESS_KEY_ID not in printed.stdout
    result = shell(
        'eval "$KHOA_LINES"\naws sts get-caller-identity --output json',
        env | {"KHOA_LINES": printed.stdout, "AWS_ACCESS_KEY_ID": "AKIASTALE", "AWS_SECRET_ACCESS_KEY": "x"},
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["Arn"] == f"arn:aws:iam::{ACCOUNT_ID}:user/{user}"

    missing = khoa(env, tmp_path, "env", "--data-dir", str(server.data_dir), "--profile", "nope")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1 and "'nope'" in missing.stderr


def test_khoa_env_without_an_installation(tmp_path: Path) -> None:
    result = khoa(person_env(tmp_path), tmp_path, "env", "--data-dir", str(tmp_path / "none"))
    assert result.returncode == 1 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and "no Khoa installation" in result.stderr


def test_khoa_aws_runs_the_aws_cli_against_the_installation(server: KhoaServer, tmp_path: Path) -> None:
    # The venv's bin is not on PATH here: khoa finds the aws CLI installed beside it.
    env = {k: v for k, v in person_env(tmp_path).items() if k != "PATH"} | {"PATH": "/usr/bin:/bin"}
    ok = khoa(env, tmp_path, "aws", "--data-dir", str(server.data_dir), "sts", "get-caller-identity")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["Account"] == ACCOUNT_ID
    # aws's own options and its exit code pass through unchanged.
    missing = khoa(
        env, tmp_path, "aws", "--data-dir", str(server.data_dir), "kms", "describe-key", "--key-id",
        "alias/none", "--output", "json",
    )  # fmt: skip
    assert missing.returncode not in (0, 1, 2) and "NotFoundException" in missing.stderr
