"""Workers keep to CPUs of their own: claimed through lock files, never two on one while one is free."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from khoa import affinity
from khoa.settings import Settings

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is Linux-only")


def _unpin(cpus: set[int]) -> None:
    for thread in threading.enumerate():
        if thread.native_id is not None:
            os.sched_setaffinity(thread.native_id, cpus)


@pytest.fixture
def restored_affinity() -> Iterator[set[int]]:
    """The test process's CPUs, given back to every thread afterwards (pinning moves them all)."""
    allowed = os.sched_getaffinity(0)
    try:
        yield allowed
    finally:
        _unpin(allowed)


def test_workers_claim_different_cpus_and_give_them_back(tmp_path: Path, restored_affinity: set[int]) -> None:
    if len(restored_affinity) < 2:
        pytest.skip("needs two CPUs")
    claims: list[affinity.Pinned] = []
    try:
        for _ in restored_affinity:  # one claim per CPU, as so many worker processes would make
            _unpin(restored_affinity)  # each worker starts free to run anywhere
            pinned = affinity.pin_process(tmp_path)
            assert pinned is not None
            claims.append(pinned)
            assert os.sched_getaffinity(0) == {pinned.cpu}
        assert sorted(p.cpu for p in claims) == sorted(restored_affinity)
        _unpin(restored_affinity)
        assert affinity.pin_process(tmp_path) is None  # every CPU taken: stay where it is
        assert os.sched_getaffinity(0) == restored_affinity
        claims.pop().release()
        again = affinity.pin_process(tmp_path)  # a released CPU is free again
        assert again is not None
        claims.append(again)
    finally:
        for claim in claims:
            claim.release()


def test_threads_started_before_the_claim_move_too(tmp_path: Path, restored_affinity: set[int]) -> None:
    if len(restored_affinity) < 2:
        pytest.skip("needs two CPUs")
    ready, done = threading.Event(), threading.Event()
    seen: list[set[int]] = []

    def worker() -> None:
        ready.set()
        done.wait(10)
        seen.append(os.sched_getaffinity(0))

    thread = threading.Thread(target=worker)
    thread.start()
    ready.wait(10)
    pinned = affinity.pin_process(tmp_path)
    assert pinned is not None
    try:
        done.set()
        thread.join(10)
        assert seen == [{pinned.cpu}]
    finally:
        pinned.release()


def test_no_lock_directory_means_no_pinning(tmp_path: Path, restored_affinity: set[int]) -> None:
    assert affinity.pin_process(tmp_path / "missing") is None
    assert os.sched_getaffinity(0) == restored_affinity


def test_a_process_already_kept_to_one_cpu_is_left_alone(tmp_path: Path, restored_affinity: set[int]) -> None:
    only = min(restored_affinity)
    _unpin({only})  # e.g. started under taskset -c
    assert affinity.pin_process(tmp_path) is None
    assert not list(tmp_path.iterdir()), "no CPU claimed"


def test_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings.from_env().cpu_affinity == "auto"
    monkeypatch.setenv("KHOA_CPU_AFFINITY", "OFF")
    assert Settings.from_env().cpu_affinity == "off"
    assert Settings.from_env().to_env()["KHOA_CPU_AFFINITY"] == "off"
    monkeypatch.setenv("KHOA_CPU_AFFINITY", "cpu0")
    with pytest.raises(ValueError, match="KHOA_CPU_AFFINITY must be one of auto, off"):
        Settings.from_env()
