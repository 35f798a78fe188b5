"""A node on SQLite whose file system stops answering (``fsfreeze``) or fills up: it fails closed.

A frozen file system (as a snapshot tool freezes one, or a hung network mount behaves) holds every
write, and a read that must note itself in SQLite's shared memory, in the kernel, where no timeout of
SQLite's reaches. The node must not freeze with it: its event loop never touches the database, so
``/_khoa/health`` answers at once and ``/_khoa/ready`` says 503 within a second; a call whose thread is
held in one statement past the database bound is answered an AWS-shaped 503, and once one is, later
calls are refused at once instead of queueing behind it. When the file system thaws, the node recovers
by itself and everything it acknowledged is there.

A nearly full disk raises the storage-low alert while calls still succeed. A full disk refuses what
cannot be recorded, with a 503, never a 500: writes, and any call whose audit record cannot commit.
The probes answer (readiness 503 with its reason, from the first answer of a node restarted on the
full disk), the metrics show the disk's free space, and once space is freed the node takes writes
again by itself, its database intact and every acknowledged write in it.

The data directory is an ext4 image mounted on a loop device, so the test needs root, a loop device
and util-linux's ``fsfreeze``; it skips, saying which is missing, where they are not. A timer thaws the
file system whatever happens to the test. The bounds asserted are correctness bounds (a call must not
hang), not performance targets.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
from botocore.exceptions import ClientError

from khoa.audit.health import PROBE_SECONDS
from tests.support.cli_here import khoa_here
from tests.support.console import ConsoleClient
from tests.support.errors import unavailable_within
from tests.support.server import ACCESS_KEY_ID, SECRET_ACCESS_KEY, KhoaServer

pytestmark = pytest.mark.slow

TIMEOUT = 1.0  # KHOA_DATABASE_TIMEOUT_SECONDS
GRACE = 0.5  # khoa.storage.database.WATCHDOG_GRACE_SECONDS: a thread is stuck after TIMEOUT + GRACE
# A call waits at most until its thread (its handler's, or the audit writer's) is judged stuck, looked
# at every 0.25 s; a write waits for its record made before it runs, then for its handler. Slack for
# a loaded two-core box.
CALL_BOUND = 2 * (TIMEOUT + GRACE + 0.25) + 2.0
PROMPT_BOUND = 1.0  # once a thread is known stuck, later calls are refused without waiting
READY_BOUND = 1.5
SCRAPE_BOUND = 3.0
RECOVERY_BOUND = 15.0
FROZEN_AT_MOST = 90.0  # the dead man's switch: thawed after this long whatever the test does
_T = TypeVar("_T")


def _missing() -> str | None:
    """Why this machine cannot freeze a file system for the test (None: it can)."""
    if os.geteuid() != 0:
        return "needs root to mount and freeze a file system"
    for tool in ("fsfreeze", "mkfs.ext4", "mount", "umount", "losetup"):
        if shutil.which(tool) is None:
            return f"needs {tool} (util-linux / e2fsprogs)"
    if not Path("/dev/loop-control").exists():
        return "needs a loop device (/dev/loop-control)"
    return None


class FrozenDisk:
    """An ext4 image mounted on a loop device, which the test freezes and thaws, or fills."""

    def __init__(self, root: Path) -> None:
        self.image = root / "disk.img"
        self.mount = root / "disk"
        self.mount.mkdir()
        with self.image.open("wb") as image:
            image.truncate(128 * 1024 * 1024)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(self.image)], check=True)
        mounted = subprocess.run(
            ["mount", "-o", "loop", str(self.image), str(self.mount)], capture_output=True, text=True
        )
        if mounted.returncode != 0:  # a container without loop devices it may use
            pytest.skip(f"cannot mount a loop device here: {mounted.stderr.strip()}")
        self._lock = threading.Lock()
        self._frozen = False
        self._switch: threading.Timer | None = None

    def freeze(self) -> None:
        with self._lock:
            subprocess.run(["fsfreeze", "--freeze", str(self.mount)], check=True)
            self._frozen = True
            self._switch = threading.Timer(FROZEN_AT_MOST, self.thaw)
            self._switch.daemon = True
            self._switch.start()

    def thaw(self) -> None:
        with self._lock:
            if self._switch is not None:
                self._switch.cancel()
                self._switch = None
            if self._frozen:
                subprocess.run(["fsfreeze", "--unfreeze", str(self.mount)], check=False)
                self._frozen = False

    def fill(self, leave: int = 0) -> Path:
        """Take the free blocks but ``leave`` bytes of what an unprivileged writer may use (0: every
        block, those reserved for root included: the test runs as root, as the server does); returns
        the file that holds them."""
        filler = self.mount / "filler"
        if leave:
            found = os.statvfs(self.mount)
            take = found.f_bavail * found.f_frsize - leave
            subprocess.run(["fallocate", "-l", str(take), str(filler)], check=True)
        else:
            subprocess.run(
                [
                    "dd",
                    "if=/dev/zero",
                    f"of={filler}",
                    "bs=1M",
                    "status=none",
                    "oflag=append",
                    "conv=notrunc",
                ],
                check=False,
                capture_output=True,
            )
        os.sync()
        return filler

    def close(self) -> None:
        self.thaw()
        subprocess.run(["umount", "--lazy", str(self.mount)], check=False)
        self.image.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FrozenDisk]:
    missing = _missing()
    if missing is not None:
        pytest.skip(missing)
    frozen = FrozenDisk(tmp_path_factory.mktemp("freeze"))
    try:
        yield frozen
    finally:
        frozen.close()


@pytest.fixture(params=[1, 2], ids=["1-worker", "2-workers"])
def server(disk: FrozenDisk, request: pytest.FixtureRequest) -> Iterator[KhoaServer]:
    """A node on the disk, with one worker or two (whose audit writers queue for the file's turn),
    one after the other on the same installation. The data directory is the mount itself: the
    server's log goes beside it (KhoaServer writes it to the data directory's parent), off the disk
    that freezes, as a journal or a pipe would be."""
    node = KhoaServer(
        disk.mount,
        extra_env={"KHOA_DATABASE_TIMEOUT_SECONDS": str(TIMEOUT), "KHOA_WORKERS": str(request.param)},
    )
    node.start()
    try:
        yield node
    finally:
        disk.thaw()
        node.stop()


def _refused(call: Callable[[], Any]) -> float:
    """Run ``call``: it must be refused with the AWS-shaped 503 within CALL_BOUND; returns how long."""
    return unavailable_within(CALL_BOUND, call)


def _timed(call: Callable[[], _T]) -> tuple[_T, float]:
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def test_a_frozen_file_system_is_refused_in_time_and_the_node_recovers(
    disk: FrozenDisk, server: KhoaServer, capsys: pytest.CaptureFixture[str]
) -> None:
    sm = server.client("secretsmanager")
    kms = server.client("kms")
    kept, after = f"kept-{server.port}", f"after-thaw-{server.port}"  # the two nodes share the disk
    sm.create_secret(Name=kept, SecretString="v0")
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"sealed")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"sealed"
    assert sm.get_secret_value(SecretId=kept)["SecretString"] == "v0"  # cached from here on
    console = ConsoleClient(server.endpoint)
    assert console.sign_in(ACCESS_KEY_ID, SECRET_ACCESS_KEY).status == 200

    disk.freeze()
    try:
        # Side by side: a read served from the caches (its record cannot commit), a write, a
        # decryption and a console page. While they wait, liveness answers at once; once they are
        # refused, readiness says 503 with its reason, and a scrape answers.
        with ThreadPoolExecutor(4) as threads:
            calls: list[Future[Any]] = [
                threads.submit(_refused, lambda: sm.get_secret_value(SecretId=kept)),
                threads.submit(_refused, lambda: sm.put_secret_value(SecretId=kept, SecretString="v1")),
                threads.submit(_refused, lambda: kms.decrypt(CiphertextBlob=blob)),
                threads.submit(_timed, lambda: console.get("/console/secrets")),
            ]
            time.sleep(0.2)
            health, _, health_took = server.timed_get("/_khoa/health")
            read, write, decrypt, (page, page_took) = (call.result() for call in calls)
        assert health == 200 and health_took <= READY_BOUND, health_took
        assert page.status == 503, page.plain[:300]  # its API call refused, or its own query
        assert page_took <= CALL_BOUND, page_took
        ready, ready_body, ready_took = server.timed_get("/_khoa/ready")
        assert ready == 503 and ready_took <= READY_BOUND, (ready, ready_took)
        assert json.loads(ready_body)["reason"], ready_body
        scrape, scraped, scrape_took = server.timed_get("/metrics")
        assert scrape == 200 and b"khoa_requests_total" in scraped
        assert scrape_took <= SCRAPE_BOUND, f"/metrics took {scrape_took:.2f} s"

        # The node knows its storage is stuck: a call now is refused without waiting for it again
        # (with two workers, on the worker that has seen it: the call may reach the other).
        prompt = _refused(lambda: sm.get_secret_value(SecretId=kept))
        if server.extra_env["KHOA_WORKERS"] == "1":
            assert prompt <= PROMPT_BOUND, f"refused after {prompt:.2f} s while the storage was stuck"
        status, _, took = server.timed_get("/_khoa/health")
        assert status == 200 and took <= READY_BOUND
    finally:
        disk.thaw()

    # Thawed: the node takes a write again by itself, and holds what it acknowledged (the write refused
    # above may have landed once the disk thawed: its outcome was never acknowledged either way).
    started = time.monotonic()
    while True:
        try:
            sm.create_secret(Name=after, SecretString="recovered")
            break
        except ClientError as error:
            assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 503, error.response
            assert time.monotonic() - started < RECOVERY_BOUND, "no recovery after the thaw"
            time.sleep(0.2)
    recovered = time.monotonic() - started
    assert sm.get_secret_value(SecretId=after)["SecretString"] == "recovered"
    assert sm.get_secret_value(SecretId=kept)["SecretString"] in ("v0", "v1")
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"sealed"
    deadline = time.monotonic() + RECOVERY_BOUND
    ready, ready_body, _ = server.timed_get("/_khoa/ready")
    while ready != 200 and time.monotonic() < deadline:  # a failed audit commit keeps it unready a while
        time.sleep(0.5)
        ready, ready_body, _ = server.timed_get("/_khoa/ready")
    assert ready == 200, ready_body
    with capsys.disabled():
        print(
            f"\n[fsfreeze] read 503 in {read:.2f} s, write 503 in {write:.2f} s, decrypt 503 in"
            f" {decrypt:.2f} s, console 503 in {page_took:.2f} s, ready 503 in {ready_took:.2f} s,"
            f" health {health_took:.3f} s, then refused in {prompt:.2f} s; recovered in {recovered:.2f} s"
        )


def _metric(text: bytes, name: str) -> float | None:
    for line in text.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_a_full_disk_refuses_what_it_cannot_record_and_the_node_recovers(
    disk: FrozenDisk, tmp_path: Path
) -> None:
    node = KhoaServer(disk.mount, extra_env={"KHOA_DATABASE_TIMEOUT_SECONDS": str(TIMEOUT)})
    node.start()
    try:
        sm = node.client("secretsmanager")
        name = f"full-{node.port}"
        sm.create_secret(Name=name, SecretString="v0")
        acknowledged = "v0"
        status, _, _ = node.timed_get("/_khoa/ready")
        assert status == 200
        # Nearly full first: calls still succeed, and the storage-low alert warns (a tenth of the
        # disk is left no longer), the metric showing what is left.
        filler = disk.fill(leave=4 * 1024 * 1024)
        try:
            time.sleep(PROBE_SECONDS)  # the directories' probe is reused this long
            status, _, _ = node.timed_get("/_khoa/ready")
            assert status == 200  # 4 MiB is little, but not full
            assert node.run_jobs() > 0  # the leader's pass: the alert engine reads the probe
            raised = khoa_here(node, "alerts", "list", "--json")
            assert any(alert["rule"] == "storage-low" for alert in json.loads(raised)), raised
            _, scraped, _ = node.timed_get("/metrics")
            free = _metric(scraped, 'khoa_storage_free_bytes{directory="database"}')
            assert free is not None and free < 5 * 1024 * 1024, free
            filler = disk.fill()  # and now the rest
            # Writes go on until the database's file cannot grow: each acknowledged one must survive;
            # the first refused is a 503 (SDKs retry it), never a 500.
            refusal: dict[str, Any] | None = None
            for attempt in range(2000):
                value = f"v{attempt + 1}-" + "x" * 4000
                try:
                    sm.put_secret_value(SecretId=name, SecretString=value)
                except ClientError as error:
                    refusal = error.response
                    break
                acknowledged = value
            assert refusal is not None, "a full disk never refused a write"
            assert refusal["ResponseMetadata"]["HTTPStatusCode"] == 503, refusal
            assert refusal["Error"]["Code"] == "ServiceUnavailableException", refusal
            # A read is answered or refused with a 503 (its record may still fit), never a 500.
            try:
                assert sm.get_secret_value(SecretId=name)["SecretString"] == acknowledged
            except ClientError as error:
                assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 503, error.response
            status, _, took = node.timed_get("/_khoa/health")
            assert status == 200 and took <= READY_BOUND
            time.sleep(PROBE_SECONDS)  # the directories' probe is reused this long
            ready, ready_body, took = node.timed_get("/_khoa/ready")
            assert ready == 503 and took <= READY_BOUND, ready_body
            assert json.loads(ready_body)["reason"], ready_body
            _, scraped, _ = node.timed_get("/metrics")  # what readiness's probe read
            free = _metric(scraped, 'khoa_storage_free_bytes{directory="database"}')
            assert free is not None and free < 1024 * 1024, scraped[-2000:]
            assert (_metric(scraped, "khoa_audit_sink_errors_total") or 0) >= 1
            # Restarted on the full disk: unready from its first answer, saying why, not ready until
            # its first commit fails.
            node.stop()
            node.start()
            ready, ready_body, _ = node.timed_get("/_khoa/ready")
            assert ready == 503, ready_body
            reason = json.loads(ready_body)["reason"]
            assert "is full" in reason or "No space left" in reason, reason
        finally:
            filler.unlink()
            os.sync()

        started = time.monotonic()
        while True:
            try:
                sm.put_secret_value(SecretId=name, SecretString="after")
                break
            except ClientError as error:
                assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 503, error.response
                assert time.monotonic() - started < RECOVERY_BOUND, "no recovery once space was freed"
                time.sleep(0.2)
        versions = sm.list_secret_version_ids(SecretId=name, IncludeDeprecated=True)["Versions"]
        values = {
            sm.get_secret_value(SecretId=name, VersionId=v["VersionId"])["SecretString"] for v in versions
        }
        assert {"v0", acknowledged, "after"} <= values
        copy = tmp_path / "khoa.db"
        with (
            sqlite3.connect(f"file:{disk.mount / 'khoa.db'}?mode=ro", uri=True) as source,
            sqlite3.connect(copy) as target,
        ):
            source.backup(target)
        with sqlite3.connect(copy) as check:
            assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        node.stop()
