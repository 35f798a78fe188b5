"""Start and stop real ``khoa server`` processes for integration tests."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from khoa.auth.regions import AWS_COMMERCIAL_REGIONS

ACCOUNT_ID = "111122223333"
ACCESS_KEY_ID = "AKIAKHOATESTROOT0001"
SECRET_ACCESS_KEY = "khoa-test-secret-access-key-0000000000001"
REGION = "us-east-1"
# Test-only hooks (an in-process clock and job trigger) loaded into every server a test starts; the
# product has none outside --dev (see tests/support/hooks/khoa_test_harness.py).
HOOKS_DIR = Path(__file__).resolve().parent / "hooks"
# Servers serve only the regions KHOA_REGIONS lists; test servers add a pool of test-only regions so a
# test can have a region of its own (an empty namespace) on the shared server: see fresh_region().
TEST_REGIONS = tuple(f"zz-test-{n}" for n in range(1, 2001))
_next_region = itertools.count()


def fresh_region() -> str:
    """A served region no other test of this session has used."""
    return TEST_REGIONS[next(_next_region) % len(TEST_REGIONS)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class KhoaServer:
    data_dir: Path
    port: int = field(default_factory=free_port)
    database_url: str = ""
    dev: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)
    # False: start the server exactly as the product runs, without the test harness (no clock hooks).
    harness: bool = True
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KHOA_")}
        env.update(
            {
                "KHOA_ACCOUNT_ID": ACCOUNT_ID,
                "KHOA_ROOT_ACCESS_KEY_ID": ACCESS_KEY_ID,
                "KHOA_ROOT_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
                "KHOA_JOB_INTERVAL_SECONDS": "3600",
                "KHOA_REGIONS": ",".join((*AWS_COMMERCIAL_REGIONS, *TEST_REGIONS)),
                # The XKS proxies tests start listen on loopback (an operator's choice, as here).
                "KHOA_XKS_PROXY_NETWORKS": "127.0.0.0/8,::1/128",
            }
        )
        if self.harness:
            env["KHOA_TEST_HARNESS"] = "1"
            env["KHOA_TEST_HARNESS_CLOCK"] = str(self.clock_file)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HOOKS_DIR), env.get("PYTHONPATH", "")) if p)
        if self.database_url:
            env["KHOA_DATABASE_URL"] = self.database_url
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 30.0) -> KhoaServer:
        args = [
            sys.executable,
            "-m",
            "khoa",
            "server",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            *self.extra_args,
        ]
        if self.dev:
            args.append("--dev")
        # Each start begins at the wall clock, as a restarted process always did.
        self.clock_file.unlink(missing_ok=True)
        log = open(self.data_dir.parent / f"server-{self.port}.log", "ab")  # noqa: SIM115
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(args, env=self.env(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"khoa server exited with {self.process.returncode}; see {log.name}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/_khoa/health", timeout=1) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("khoa server did not become healthy")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill9(self) -> None:
        self.stop(signal.SIGKILL)

    def client(
        self, service: str = "kms", region: str = REGION, *, validate: bool = True, **kwargs: Any
    ) -> Any:
        """A boto3 client for this server, signed as the account root unless credentials are given.

        ``validate=False`` sends whatever it is given, so the server's own validation answers."""
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=region,
            aws_access_key_id=kwargs.pop("aws_access_key_id", ACCESS_KEY_ID),
            aws_secret_access_key=kwargs.pop("aws_secret_access_key", SECRET_ACCESS_KEY),
            config=Config(retries={"max_attempts": 1}, parameter_validation=validate),
            **kwargs,
        )

    def timed_get(self, path: str) -> tuple[int, bytes, float]:
        """GET ``path`` (a probe, a scrape): its status, body and how long it took, an error status
        included (a probe's 503 is an answer, not a failure)."""
        started = time.monotonic()
        try:
            with urllib.request.urlopen(f"{self.endpoint}{path}", timeout=30) as response:
                status, body = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, body = error.code, error.read()
        return status, body, time.monotonic() - started

    def post(self, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.endpoint}{path}", data=json.dumps(payload or {}).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            result: dict[str, Any] = json.loads(response.read())
            return result

    def register_function(
        self,
        name: str,
        target: str,
        kind: str = "python",
        *extra: str,
        account: str = ACCOUNT_ID,
        region: str = REGION,
    ) -> str:
        """Register a rotation function with ``khoa functions register``; returns its Lambda ARN."""
        args = [
            sys.executable,
            "-m",
            "khoa",
            "functions",
            "register",
            name,
            "--account",
            account,
            "--region",
            region,
            f"--{kind}",
            target,
            "--data-dir",
            str(self.data_dir),
            *extra,
        ]
        subprocess.run(args, env=self.env(), check=True, capture_output=True)
        return f"arn:aws:lambda:{region}:{account}:function:{name}"

    @property
    def clock_file(self) -> Path:
        """The harness's clock offset, shared by this server's worker processes."""
        return self.data_dir.parent / f"test-clock-{self.port}"

    def advance_clock(self, seconds: float) -> None:
        """Move the server's domain clock forward (the test harness's in-process clock)."""
        self.post("/_test/clock/advance", {"seconds": seconds})

    def clock_now(self) -> datetime:
        """The server's domain clock now."""
        return datetime.fromisoformat(self.post("/_test/clock/advance", {"seconds": 0})["now"])

    def run_jobs(self) -> int:
        """Run due background work now; returns how many jobs ran (0: this process is not the leader)."""
        return int(self.post("/_test/jobs/run").get("ran", 0))

    @property
    def log_path(self) -> Path:
        """Where start() sends the server's output."""
        return self.data_dir.parent / f"server-{self.port}.log"
