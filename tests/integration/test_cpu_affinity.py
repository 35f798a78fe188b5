"""`khoa server` keeps each worker on a CPU of its own by default, claimed machine-wide so that separate
installations take different CPUs, and leaves placement alone when told.

Each test names its own claim directory (KHOA_CPU_CLAIM_DIR): other servers running on this machine at
the same time (other tests, other people) claim CPUs in the default /dev/shm/khoa-cpu."""

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


def _log(server: KhoaServer, line: str, times: int) -> int:
    """How often ``line`` is in the server's log, waiting up to 20 s for ``times`` (workers start late)."""
    deadline = time.monotonic() + 20
    while True:
        found = (server.data_dir.parent / f"server-{server.port}.log").read_text().count(line)
        if found >= times or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def _placements(server: KhoaServer, said: str, count: int) -> tuple[list[int], list[set[frozenset[int]]]]:
    """The serving processes and their threads' CPU sets, once ``count`` workers have logged ``said``
    (each worker says once, at startup, where it went or why it stays unpinned)."""
    assert _log(server, said, count) == count
    workers = _serving(server)
    return workers, [_thread_cpus(pid) for pid in workers]


def _single_cpu(cpus: set[frozenset[int]]) -> int | None:
    """The one CPU a pinned worker keeps to: every thread's CPU set is that CPU, but the leader's job
    threads', which are given every CPU the worker could use (khoa.jobs)."""
    pinned = cpus - {frozenset(os.sched_getaffinity(0))}
    if len(pinned) != 1:
        return None
    (only,) = pinned
    return next(iter(only)) if len(only) == 1 else None


def test_workers_keep_to_cpus_of_their_own(tmp_path: Path) -> None:
    claims = tmp_path / "claims"
    server = KhoaServer(
        tmp_path / "data", extra_args=["--workers", "2"], extra_env={"KHOA_CPU_CLAIM_DIR": str(claims)}
    ).start()
    try:
        # Each worker says where it went (the workers' own log lines reach the server's log).
        workers, placements = _placements(server, "keeps to CPU", 2)
        assert len(workers) == 2
        cpus = [_single_cpu(p) for p in placements]
        assert None not in cpus, placements
        assert [os.sched_getaffinity(worker) for worker in workers] == [{cpu} for cpu in cpus]  # the loops
        assert cpus[0] != cpus[1], "two workers on one CPU while another was free"
        assert len(list((tmp_path / "data").glob("cpu-*.lock"))) == 2
        assert len(list(claims.glob("cpu-*.lock"))) == len(os.sched_getaffinity(0))
    finally:
        server.stop()


def test_separate_installations_take_different_cpus(tmp_path: Path) -> None:
    """Two data directories on one machine: each sees the other's claim; a third finds none free."""
    env = {"KHOA_CPU_CLAIM_DIR": str(tmp_path / "claims")}
    servers = [KhoaServer(tmp_path / name, extra_env=env) for name in ("a", "b", "c")]
    try:
        cpus = []
        for server in servers[:2]:
            server.start()
            (_worker,), (placement,) = _placements(server, "keeps to CPU", 1)
            cpus.append(_single_cpu(placement))
        assert None not in cpus and cpus[0] != cpus[1], cpus
        if len(os.sched_getaffinity(0)) == 2:
            servers[2].start()
            why = "not pinned to a CPU: 0 of 2 CPUs are free"
            (_worker,), (placement,) = _placements(servers[2], why, 1)
            assert placement == {frozenset(os.sched_getaffinity(0))}, "stays unpinned: every CPU is taken"
    finally:
        for server in servers:
            if server.process is not None:
                server.stop()


def test_more_workers_than_cpus_stay_unpinned(tmp_path: Path) -> None:
    allowed = os.sched_getaffinity(0)
    server = KhoaServer(
        tmp_path / "data",
        extra_args=["--workers", str(len(allowed) + 1)],
        extra_env={"KHOA_CPU_CLAIM_DIR": str(tmp_path / "claims")},
    ).start()
    try:
        why = f"not pinned to a CPU: {len(allowed) + 1} workers for {len(allowed)} CPUs"
        workers, placements = _placements(server, why, len(allowed) + 1)  # each worker says why, once
        assert len(workers) == len(allowed) + 1
        assert placements == [{frozenset(allowed)}] * len(workers)
        assert not list((tmp_path / "data").glob("cpu-*.lock"))
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
