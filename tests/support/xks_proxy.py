"""SoftHSM2 tokens and ``khoa xks-proxy`` processes for tests (the proxy's own and the KMS side's).

``SoftHsm(directory)`` makes a private token store (its own ``SOFTHSM2_CONF``) and initialises a token;
``XksProxy(hsm, ...)`` runs ``khoa xks-proxy`` on it on a free port; ``signed_post`` sends a request
signed as AWS KMS signs them (SigV4, service ``kms-xks-proxy``).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.support.server import free_port

SOFTHSM_MODULE = os.environ.get("KHOA_TEST_SOFTHSM_MODULE", "/usr/lib/softhsm/libsofthsm2.so")


def softhsm_missing() -> str | None:
    """Why SoftHSM2 cannot be used here, or None when it can."""
    if not os.path.exists(SOFTHSM_MODULE):
        return f"SoftHSM2 is not installed ({SOFTHSM_MODULE} missing; `make install` installs it as root)"
    if shutil.which("softhsm2-util") is None:
        return "softhsm2-util is not on PATH (Debian package softhsm2)"
    return None


class SoftHsm:
    """A SoftHSM2 token store of its own, with one initialised token."""

    def __init__(self, directory: Path, label: str | None = None) -> None:
        self.directory = directory
        self.label = label or f"khoa-xks-{uuid.uuid4().hex[:8]}"
        self.pin = secrets.token_hex(8)
        self.module = SOFTHSM_MODULE
        tokens = directory / "tokens"
        tokens.mkdir(parents=True, exist_ok=True)
        self.conf = directory / "softhsm2.conf"
        self.conf.write_text(
            f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
        )
        subprocess.run(
            [
                "softhsm2-util",
                "--init-token",
                "--free",
                "--label",
                self.label,
                "--pin",
                self.pin,
                "--so-pin",
                secrets.token_hex(8),
            ],
            env=self.env(),
            check=True,
            capture_output=True,
            timeout=60,
        )

    def env(self, pin_env: str = "KHOA_XKS_PIN") -> dict[str, str]:
        return {**os.environ, "SOFTHSM2_CONF": str(self.conf), pin_env: self.pin}

    def token_options(self) -> list[str]:
        return ["--pkcs11-module", self.module, "--token-label", self.label]

    def create_key(self, label: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "khoa", "xks-proxy", "create-key", *self.token_options(), label],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=120,
        )


def random_access_key_id() -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    return "".join(secrets.choice(alphabet) for _ in range(26))


class XksProxy:
    """A running ``khoa xks-proxy`` on a SoftHSM token (plain HTTP on loopback unless TLS is given)."""

    def __init__(
        self,
        hsm: SoftHsm,
        path_prefix: str = "",
        extra: list[str] | None = None,
        client_tls: ssl.SSLContext | None = None,
    ) -> None:
        self.hsm = hsm
        self.client_tls = client_tls  # set when the proxy serves TLS (extra holds --tls-cert/--tls-key)
        self.port = free_port()
        self.path_prefix = path_prefix
        self.access_key_id = random_access_key_id()
        # AWS's rule for RawSecretAccessKey: 43-64 of A-Z a-z 0-9 + / = (Base64 of 32 random bytes).
        self.secret_access_key = base64.b64encode(secrets.token_bytes(32)).decode()
        self.extra = extra or []
        self.process: subprocess.Popen[str] | None = None
        self.log_path = hsm.directory / f"xks-proxy-{self.port}.log"

    @property
    def endpoint(self) -> str:
        scheme = "https" if self.client_tls is not None else "http"
        host = "localhost" if self.client_tls is not None else "127.0.0.1"
        return f"{scheme}://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.endpoint}{self.path_prefix}/kms/xks/v1"

    def start(self, timeout: float = 60.0) -> XksProxy:
        return self.launch().wait(timeout)

    def launch(self) -> XksProxy:
        """Start the process without waiting for it (then :meth:`wait`)."""
        env = self.hsm.env()
        env["KHOA_XKS_ACCESS_KEY_ID"] = self.access_key_id
        env["KHOA_XKS_SECRET_ACCESS_KEY"] = self.secret_access_key
        command = [
            sys.executable,
            "-m",
            "khoa",
            "xks-proxy",
            *self.hsm.token_options(),
            "--port",
            str(self.port),
            *(["--path-prefix", self.path_prefix] if self.path_prefix else []),
            *self.extra,
        ]
        log = self.log_path.open("w")
        self.process = subprocess.Popen(command, env=env, stdout=log, stderr=log, text=True)
        return self

    def wait(self, timeout: float = 60.0) -> XksProxy:
        assert self.process is not None, "launch() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"xks-proxy exited: {self.log()}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/ping", timeout=2, context=self.client_tls):
                    return self
            except urllib.error.HTTPError:  # 503: serving, the token is unavailable
                return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"xks-proxy did not start: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def post(
        self,
        path: str,
        body: dict[str, Any] | bytes,
        *,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        region: str = "us-east-1",
        service: str = "kms-xks-proxy",
    ) -> tuple[int, dict[str, Any]]:
        return signed_post(
            f"{self.base_url}{path}",
            body,
            access_key_id or self.access_key_id,
            secret_access_key or self.secret_access_key,
            region=region,
            service=service,
            context=self.client_tls,
        )


def signed_post(
    url: str,
    body: dict[str, Any] | bytes,
    access_key_id: str | None,
    secret_access_key: str | None,
    *,
    region: str = "us-east-1",
    service: str = "kms-xks-proxy",
    method: str = "POST",
    context: ssl.SSLContext | None = None,
) -> tuple[int, dict[str, Any]]:
    """Send a request signed as AWS KMS signs XKS requests (unsigned when no credentials); returns
    (status, JSON body)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = AWSRequest(method=method, url=url, data=data, headers={"Content-Type": "application/json"})
    if access_key_id and secret_access_key:
        SigV4Auth(Credentials(access_key_id, secret_access_key), service, region).add_auth(request)
    prepared = request.prepare()
    http = urllib.request.Request(
        prepared.url, data=prepared.body or None, headers=dict(prepared.headers), method=method
    )
    try:
        with urllib.request.urlopen(http, timeout=30, context=context) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw or b"{}")
        except ValueError:
            return exc.code, {"raw": raw.decode(errors="replace")}
