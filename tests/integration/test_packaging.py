"""Khoa as packages: the sdist and wheel ``python -m build`` makes, installed into a fresh virtual
environment, run a server that answers boto3 (migrations and package data included); the container
image and the two-node compose file, when a container engine is available.

The wheel is installed as the README says, ``pip install -c requirements/server.lock
'khoa-<version>-py3-none-any.whl[server]'``, from the package index (pip's cache makes a second run
quick). Every step has a timeout, so nothing here can hang the suite.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from tests.support.server import ACCESS_KEY_ID, ACCOUNT_ID, SECRET_ACCESS_KEY, free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements" / "server.lock"
# pip could not reach the package index: say so and skip, rather than fail on the network.
OFFLINE = ("Could not fetch URL", "NewConnectionError", "Temporary failure in name resolution",
           "Network is unreachable", "Max retries exceeded")  # fmt: skip


def run(args: list[str], timeout: float, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("KHOA_", "AWS_", "PYTHON"))}


def wait_ready(endpoint: str, timeout: float, alive: Callable[[], None] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None:
            alive()
        try:
            with urllib.request.urlopen(f"{endpoint}/_khoa/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.25)
    raise AssertionError(f"{endpoint} did not become ready within {timeout:.0f} s")


def root_client(service: str, endpoint: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
        config=Config(retries={"max_attempts": 2}, connect_timeout=5, read_timeout=30),
    )


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python -m build`` (sdist, then the wheel from the sdist) from a copy of the sources, so the
    work tree gets no build/ or egg-info."""
    work = tmp_path_factory.mktemp("build")
    source = work / "khoa"
    source.mkdir()
    shutil.copy(ROOT / "pyproject.toml", source)
    shutil.copy(ROOT / "README.md", source)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = work / "dist"
    result = run([sys.executable, "-m", "build", "--outdir", str(out), str(source)], timeout=150)
    if result.returncode != 0 and any(marker in result.stdout + result.stderr for marker in OFFLINE):
        pytest.skip("python -m build could not fetch setuptools: the package index is not reachable")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


def test_sdist_and_wheel_carry_the_migrations(dist: Path) -> None:
    import tarfile
    import zipfile

    (wheel,) = dist.glob("khoa-*-py3-none-any.whl")
    (sdist,) = dist.glob("khoa-*.tar.gz")
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    with tarfile.open(sdist) as archive:
        in_sdist = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    shipped = (ROOT / "src/khoa/storage/migrations").rglob("*")
    migrations = sorted(
        p.relative_to(ROOT / "src").as_posix()
        for p in shipped
        if p.is_file() and "__pycache__" not in p.parts
    )
    assert any(name.endswith(".py") and "/versions/" in name for name in migrations)
    assert set(migrations) <= in_wheel
    assert {f"src/{name}" for name in migrations} <= in_sdist
    assert "khoa/py.typed" in in_wheel
    entry_points = zipfile.ZipFile(wheel).read(f"{wheel.name.split('-py3')[0]}.dist-info/entry_points.txt")
    assert b"khoa = khoa.console:main" in entry_points


def test_the_wheel_in_a_fresh_venv_runs_a_server(dist: Path, tmp_path: Path) -> None:
    (wheel,) = dist.glob("khoa-*-py3-none-any.whl")
    venv = tmp_path / "venv"
    # A fresh environment, filled by this interpreter's pip (`pip --python`: no ensurepip, no
    # byte-compiling, so the step stays well under a minute with pip's cache).
    assert run([sys.executable, "-m", "venv", "--without-pip", str(venv)], timeout=60).returncode == 0
    install = run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet",
         "--no-compile", "--disable-pip-version-check", "-c", str(LOCK), f"{wheel}[server]"],
        timeout=150,
        env=clean_env(),
    )  # fmt: skip
    if install.returncode != 0 and any(marker in install.stdout + install.stderr for marker in OFFLINE):
        pytest.skip("pip could not reach the package index to install the wheel's dependencies")
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]

    # The installed package, not this checkout: run from elsewhere, nothing of ours on sys.path.
    where = run([str(venv / "bin" / "python"), "-c", "import khoa; print(khoa.__file__)"], timeout=60,
                cwd=tmp_path, env=clean_env())  # fmt: skip
    assert where.returncode == 0 and Path(where.stdout.strip()).is_relative_to(venv), where

    port = free_port()
    env = clean_env() | {
        "KHOA_ACCOUNT_ID": ACCOUNT_ID,
        "KHOA_ROOT_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "KHOA_ROOT_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
    }
    log = tmp_path / "server.log"
    with log.open("w") as output:
        server = subprocess.Popen(
            [str(venv / "bin" / "khoa"), "server", "--port", str(port), "--data-dir", str(tmp_path / "data")],
            cwd=tmp_path,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    endpoint = f"http://127.0.0.1:{port}"

    def alive() -> None:
        assert server.poll() is None, log.read_text()[-3000:]

    try:
        wait_ready(endpoint, 60, alive)
        kms = root_client("kms", endpoint)
        key_id = kms.create_key(Description="from the wheel")["KeyMetadata"]["KeyId"]
        blob = kms.encrypt(KeyId=key_id, Plaintext=b"packaged")["CiphertextBlob"]
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"packaged"
        sm = root_client("secretsmanager", endpoint)
        sm.create_secret(Name="packaged", SecretString="s3cret")
        assert sm.get_secret_value(SecretId="packaged")["SecretString"] == "s3cret"
        assert "Running upgrade" in log.read_text()  # the migrations shipped in the wheel ran
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


# -- containers ---------------------------------------------------------------------------------------


def _engine() -> str:
    """A container engine that answers (docker, else podman); skips visibly without one."""
    reasons = []
    for engine in ("docker", "podman"):
        if shutil.which(engine) is None:
            reasons.append(f"{engine}: not installed")
            continue
        try:
            info = run([engine, "info"], timeout=20)
        except subprocess.TimeoutExpired:
            reasons.append(f"{engine} info: no answer within 20 s")
            continue
        if info.returncode == 0:
            return engine
        last = (info.stderr.strip().splitlines() or ["failed"])[-1]
        reasons.append(f"{engine} info: {last}")
    pytest.skip("no container engine available (" + "; ".join(reasons) + ")")


@pytest.fixture(scope="module")
def image() -> Iterator[tuple[str, str]]:
    engine = _engine()
    tag = f"khoa-test:{uuid.uuid4().hex[:10]}"
    try:
        built = run([engine, "build", "--tag", tag, str(ROOT)], timeout=900)
    except subprocess.TimeoutExpired:
        pytest.fail("building the image took more than 15 minutes")
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    yield engine, tag
    run([engine, "image", "rm", "--force", tag], timeout=120)


def test_the_image_runs_a_healthy_non_root_server(image: tuple[str, str]) -> None:
    engine, tag = image
    port = free_port()
    name = f"khoa-test-{uuid.uuid4().hex[:10]}"
    started = run(
        [engine, "run", "--detach", "--name", name, "--publish", f"127.0.0.1:{port}:9440",
         "--env", f"KHOA_ACCOUNT_ID={ACCOUNT_ID}", "--env", f"KHOA_ROOT_ACCESS_KEY_ID={ACCESS_KEY_ID}",
         "--env", f"KHOA_ROOT_SECRET_ACCESS_KEY={SECRET_ACCESS_KEY}", tag],
        timeout=120,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    try:
        endpoint = f"http://127.0.0.1:{port}"
        wait_ready(endpoint, 90)
        assert root_client("sts", endpoint).get_caller_identity()["Account"] == ACCOUNT_ID
        user = run([engine, "exec", name, "id", "-u"], timeout=60)
        assert user.stdout.strip() == "10001"
        deadline = time.monotonic() + 90
        status = ""
        while time.monotonic() < deadline and status != "healthy":
            status = run(
                [engine, "inspect", "--format", "{{.State.Health.Status}}", name], timeout=30
            ).stdout.strip()
            time.sleep(1)
        assert status == "healthy"  # the HEALTHCHECK on /_khoa/ready
    finally:
        run([engine, "rm", "--force", "--volumes", name], timeout=120)


def test_compose_two_nodes_behind_one_port(image: tuple[str, str], tmp_path: Path) -> None:
    engine, tag = image
    compose = [engine, "compose"]
    if run([*compose, "version"], timeout=30).returncode != 0:
        pytest.skip(f"`{engine} compose` is not available")
    port = free_port()
    project = f"khoa-test-{uuid.uuid4().hex[:8]}"
    env = os.environ | {
        "KHOA_IMAGE": tag,
        "KHOA_PORT": str(port),
        "KHOA_PASSPHRASE": uuid.uuid4().hex,
        "KHOA_DB_PASSWORD": uuid.uuid4().hex,
        "KHOA_ACCOUNT_ID": ACCOUNT_ID,
        "KHOA_ROOT_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "KHOA_ROOT_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
    }
    base = [*compose, "--project-name", project, "--file", str(ROOT / "compose.yaml")]
    try:
        up = run([*base, "up", "--detach", "--no-build", "--wait"], timeout=600, env=env)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        endpoint = f"http://127.0.0.1:{port}"
        wait_ready(endpoint, 60)
        sm = root_client("secretsmanager", endpoint)
        sm.create_secret(Name="shared", SecretString="one root key")
        # Each node alone (the proxy alternates between them) reads what the other wrote.
        for node in ("khoa-1", "khoa-2"):
            stop = "khoa-2" if node == "khoa-1" else "khoa-1"
            assert run([*base, "stop", stop], timeout=120, env=env).returncode == 0
            value = sm.get_secret_value(SecretId="shared")["SecretString"]
            assert value == "one root key", node
            assert run([*base, "start", stop], timeout=120, env=env).returncode == 0
            run([*base, "up", "--detach", "--no-build", "--wait"], timeout=300, env=env)
    finally:
        run([*base, "down", "--volumes", "--timeout", "10"], timeout=300, env=env)
