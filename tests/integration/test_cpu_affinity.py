"""`khoa server` keeps each worker on a CPU of its own by default, and leaves placement alone when told."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.support.server import KhoaServer

pytestmark = pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs Linux and two CPUs",
)


def _descendants(pid: int) -> list[int]:
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        for child in Path(f"/proc/{pid}/task/{task}/children").read_text().split():
            found += [int(child), *_descendants(int(child))]
    return found


def _thread_cpus(pid: int) -> set[frozenset[int]]:
    """The CPU sets of a process's own threads (the kernel's io_uring helper threads left out)."""
    return {
        frozenset(os.sched_getaffinity(int(tid)))
        for tid in os.listdir(f"/proc/{pid}/task")
        if not Path(f"/proc/{pid}/task/{tid}/comm").read_text().startswith("iou-")
    }


def _serving(server: KhoaServer) -> list[int]:
    """The processes that serve requests: the workers, or the server itself with one worker."""
    assert server.process is not None
    workers = [
        pid
        for pid in _descendants(server.process.pid)
        if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    return workers or [server.process.pid]


def test_workers_keep_to_cpus_of_their_own(tmp_path: Path) -> None:
    server = KhoaServer(tmp_path / "data", extra_args=["--workers", "2"]).start()
    try:
        server.client("kms").list_keys()  # one worker is up; the other may still be starting
        deadline = time.monotonic() + 20
        while True:
            workers = _serving(server)
            placements = [_thread_cpus(pid) for pid in workers]
            pinned = all(len(cpus) == 1 and len(next(iter(cpus))) == 1 for cpus in placements)
            if (len(workers) == 2 and pinned) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert len(workers) == 2
        assert pinned, placements
        assert placements[0] != placements[1], "two workers on one CPU while another was free"
        assert len(list((tmp_path / "data").glob("cpu-*.lock"))) == 2
    finally:
        server.stop()


def test_affinity_off(tmp_path: Path) -> None:
    server = KhoaServer(tmp_path / "data", extra_env={"KHOA_CPU_AFFINITY": "off"}).start()
    try:
        server.client("kms").list_keys()
        (worker,) = _serving(server)
        assert _thread_cpus(worker) == {frozenset(os.sched_getaffinity(0))}
    finally:
        server.stop()
