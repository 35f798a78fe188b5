"""Workers keep to CPUs of their own only where that is safe: claimed machine-wide through lock files,
never under a CPU quota or in a container whose neighbours cannot be seen, never with more workers than
CPUs; and the GIL switch interval is a setting applied where the server process starts."""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from khoa import affinity, app
from khoa.services.kms.backend import KmsBackend
from khoa.services.kms.keys import generate_material
from khoa.settings import Settings

linux_only = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is Linux-only")


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


@pytest.fixture
def two_cpus(restored_affinity: set[int]) -> set[int]:
    if len(restored_affinity) < 2:
        pytest.skip("needs two CPUs")
    return restored_affinity


@pytest.fixture
def no_cgroups(tmp_path: Path) -> Path:
    """A root without /proc/self/cgroup: the cgroups say nothing (the tests do not depend on the host's)."""
    root = tmp_path / "no-cgroups"
    root.mkdir()
    return root


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


V2_MOUNT = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"


def _mountinfo_v1(root: str) -> str:
    return f"31 23 0:27 {root} /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"


# -- the cgroups ---------------------------------------------------------------------------------------


def test_a_v2_quota_above_the_process_is_found(tmp_path: Path) -> None:
    root = _write(
        tmp_path,
        {
            "proc/self/cgroup": "0::/system.slice/khoa.service\n",
            "proc/self/mountinfo": V2_MOUNT,
            "sys/fs/cgroup/cpu.max": "",  # the root cgroup has none; an empty file says nothing
            "sys/fs/cgroup/system.slice/cpu.max": "150000 100000\n",
            "sys/fs/cgroup/system.slice/cgroup.type": "domain\n",
            "sys/fs/cgroup/system.slice/khoa.service/cpu.max": "max 100000\n",
            "sys/fs/cgroup/system.slice/khoa.service/cgroup.type": "domain\n",
        },
    )
    facts = affinity.cgroup_facts(root)
    assert facts == affinity.CgroupFacts(quota="a CPU quota of 1.5 CPUs (cgroup /system.slice)")


def test_no_v2_quota(tmp_path: Path) -> None:
    root = _write(
        tmp_path,
        {
            "proc/self/cgroup": "0::/user.slice/session-1.scope\n",
            "proc/self/mountinfo": V2_MOUNT,
            "sys/fs/cgroup/user.slice/cpu.max": "max 100000\n",
            "sys/fs/cgroup/user.slice/session-1.scope/cpu.max": "max 100000\n",
        },
    )
    assert affinity.cgroup_facts(root) == affinity.CgroupFacts()


def test_a_v1_quota_and_a_container_runtimes_cgroup(tmp_path: Path) -> None:
    # Docker on cgroup v1: the container's own cgroup is mounted as the hierarchy's top.
    root = _write(
        tmp_path,
        {
            "proc/self/cgroup": "5:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/docker/abc\n",
            "proc/self/mountinfo": _mountinfo_v1("/docker/abc"),
            "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "50000\n",
            "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n",
        },
    )
    facts = affinity.cgroup_facts(root)
    assert facts.quota == "a CPU quota of 0.5 CPUs (cgroup /docker/abc)"
    assert facts.container == "a container's cgroup (/docker/abc)"


def test_no_v1_quota(tmp_path: Path) -> None:
    root = _write(
        tmp_path,
        {
            "proc/self/cgroup": "4:cpu,cpuacct:/\n",
            "proc/self/mountinfo": _mountinfo_v1("/"),
            "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
            "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n",
        },
    )
    assert affinity.cgroup_facts(root) == affinity.CgroupFacts()


def test_a_cgroup_namespace_is_a_container(tmp_path: Path) -> None:
    # "/" with cgroup.type is not the real root cgroup (which has none): a namespace's view.
    files = {
        "proc/self/cgroup": "0::/\n",
        "proc/self/mountinfo": V2_MOUNT,
        "sys/fs/cgroup/cpu.max": "max 100000\n",
    }
    real_root = _write(tmp_path / "host", files)
    assert affinity.cgroup_facts(real_root) == affinity.CgroupFacts()
    namespaced = _write(tmp_path / "container", {**files, "sys/fs/cgroup/cgroup.type": "domain\n"})
    assert affinity.cgroup_facts(namespaced).container.startswith("a cgroup namespace")
    assert affinity.cgroup_facts(namespaced).quota == ""


def test_unreadable_cgroups_say_nothing(tmp_path: Path) -> None:
    assert affinity.cgroup_facts(tmp_path) == affinity.CgroupFacts()
    garbage = _write(
        tmp_path / "g", {"proc/self/cgroup": "nonsense\n1:cpu\n", "proc/self/mountinfo": "x y\n"}
    )
    assert affinity.cgroup_facts(garbage) == affinity.CgroupFacts()


# -- when auto does not pin ----------------------------------------------------------------------------


@linux_only
def test_a_quota_means_no_pinning(
    tmp_path: Path, two_cpus: set[int], caplog: pytest.LogCaptureFixture
) -> None:
    root = _write(
        tmp_path / "root",
        {
            "proc/self/cgroup": "0::/khoa\n",
            "proc/self/mountinfo": V2_MOUNT,
            "sys/fs/cgroup/khoa/cpu.max": "200000 100000\n",
        },
    )
    caplog.set_level("INFO", logger="khoa.affinity")
    claims = tmp_path / "claims"
    # Even a shared claim directory does not make a quota's CPU time a CPU of its own.
    assert affinity.pin_process(tmp_path, claim_dir=claims, cgroup_root=root) is None
    assert os.sched_getaffinity(0) == two_cpus
    assert not claims.exists()
    assert "a CPU quota of 2 CPUs (cgroup /khoa)" in caplog.text


@linux_only
def test_a_container_pins_only_with_a_shared_claim_directory(
    tmp_path: Path, two_cpus: set[int], caplog: pytest.LogCaptureFixture
) -> None:
    root = _write(tmp_path / "root", {"proc/self/cgroup": "0::/kubepods/pod1/abc\n"})
    caplog.set_level("INFO", logger="khoa.affinity")
    machine = tmp_path / "shm" / "khoa-cpu"
    (tmp_path / "shm").mkdir()
    assert affinity.pin_process(tmp_path, machine_dirs=(machine,), cgroup_root=root) is None
    assert os.sched_getaffinity(0) == two_cpus
    assert "a container's cgroup (/kubepods/pod1/abc)" in caplog.text
    assert "KHOA_CPU_CLAIM_DIR" in caplog.text
    pinned = affinity.pin_process(tmp_path, claim_dir=tmp_path / "shared", cgroup_root=root)
    assert pinned is not None
    pinned.release()


@linux_only
def test_more_workers_than_cpus_means_no_pinning(
    tmp_path: Path, two_cpus: set[int], no_cgroups: Path
) -> None:
    claims = tmp_path / "claims"
    assert affinity.pin_process(tmp_path, len(two_cpus) + 1, claim_dir=claims, cgroup_root=no_cgroups) is None
    assert os.sched_getaffinity(0) == two_cpus
    assert not claims.exists()
    assert not list(tmp_path.glob("cpu-*.lock")), "no CPU claimed"


# -- claims ----------------------------------------------------------------------------------------------


@linux_only
def test_workers_claim_different_cpus_and_give_them_back(
    tmp_path: Path, two_cpus: set[int], no_cgroups: Path
) -> None:
    claims_dir, data = tmp_path / "claims", tmp_path / "data"
    data.mkdir()
    workers = len(two_cpus)
    claims: list[affinity.Pinned] = []
    try:
        for _ in two_cpus:  # one claim per CPU, as so many worker processes would make
            _unpin(two_cpus)  # each worker starts free to run anywhere
            pinned = affinity.pin_process(data, workers, claim_dir=claims_dir, cgroup_root=no_cgroups)
            assert pinned is not None
            claims.append(pinned)
            assert os.sched_getaffinity(0) == {pinned.cpu}
        assert sorted(p.cpu for p in claims) == sorted(two_cpus)
        assert sorted(p.name for p in data.glob("cpu-*.lock")) == sorted(f"cpu-{c}.lock" for c in two_cpus)
        _unpin(two_cpus)
        assert affinity.pin_process(data, workers, claim_dir=claims_dir, cgroup_root=no_cgroups) is None
        assert os.sched_getaffinity(0) == two_cpus  # every CPU taken: stay where it is
        claims.pop().release()
        again = affinity.pin_process(data, workers, claim_dir=claims_dir, cgroup_root=no_cgroups)
        assert again is not None  # a released CPU is free again (a restarted worker)
        claims.append(again)
    finally:
        for claim in claims:
            claim.release()


@linux_only
def test_separate_installations_see_each_others_claims(
    tmp_path: Path, two_cpus: set[int], no_cgroups: Path
) -> None:
    """Two data directories, the default machine-wide directory: different CPUs, then none is left."""
    shm = tmp_path / "shm"
    shm.mkdir()
    machine = (shm / "khoa-cpu",)
    first_dir, second_dir, third_dir = (tmp_path / name for name in ("a", "b", "c"))
    for directory in (first_dir, second_dir, third_dir):
        directory.mkdir()
    held: list[affinity.Pinned] = []
    try:
        for directory in (first_dir, second_dir):
            _unpin(two_cpus)
            pinned = affinity.pin_process(directory, 1, machine_dirs=machine, cgroup_root=no_cgroups)
            assert pinned is not None
            held.append(pinned)
        assert held[0].cpu != held[1].cpu
        assert stat.S_IMODE(os.stat(machine[0]).st_mode) == 0o1777  # every user's workers claim there
        if len(two_cpus) == 2:
            _unpin(two_cpus)
            assert affinity.pin_process(third_dir, 1, machine_dirs=machine, cgroup_root=no_cgroups) is None
            assert os.sched_getaffinity(0) == two_cpus
    finally:
        for claim in held:
            claim.release()


@linux_only
def test_an_installation_needing_more_cpus_than_are_free_stays_unpinned(
    tmp_path: Path, two_cpus: set[int], no_cgroups: Path, caplog: pytest.LogCaptureFixture
) -> None:
    claims = tmp_path / "claims"
    other, this = tmp_path / "other", tmp_path / "this"
    other.mkdir()
    this.mkdir()
    caplog.set_level("INFO", logger="khoa.affinity")
    taken = affinity.pin_process(other, 1, claim_dir=claims, cgroup_root=no_cgroups)
    assert taken is not None
    try:
        _unpin(two_cpus)
        # All this installation's workers could not get a CPU of their own: none is pinned.
        assert affinity.pin_process(this, len(two_cpus), claim_dir=claims, cgroup_root=no_cgroups) is None
        assert os.sched_getaffinity(0) == two_cpus
        assert f"{len(two_cpus) - 1} of {len(two_cpus)} CPUs are free" in caplog.text
        # One worker needs one CPU: it gets one the other installation does not hold.
        pinned = affinity.pin_process(this, 1, claim_dir=claims, cgroup_root=no_cgroups)
        assert pinned is not None
        assert pinned.cpu != taken.cpu
        pinned.release()
    finally:
        taken.release()


@linux_only
def test_without_a_machine_wide_directory_the_data_directory_is_used(
    tmp_path: Path, two_cpus: set[int], no_cgroups: Path
) -> None:
    unusable = (tmp_path / "missing" / "khoa-cpu",)  # its parent does not exist
    held = []
    try:
        for _ in range(2):
            _unpin(two_cpus)
            pinned = affinity.pin_process(tmp_path, 2, machine_dirs=unusable, cgroup_root=no_cgroups)
            assert pinned is not None
            held.append(pinned)
        assert held[0].cpu != held[1].cpu
        assert len(list(tmp_path.glob("cpu-*.lock"))) == 2
    finally:
        for claim in held:
            claim.release()


@linux_only
def test_a_link_planted_in_the_claim_directory_is_not_followed(
    tmp_path: Path, two_cpus: set[int], no_cgroups: Path
) -> None:
    claims = tmp_path / "claims"
    claims.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    for cpu in two_cpus:
        (claims / f"cpu-{cpu}.lock").symlink_to(victim)
    assert affinity.pin_process(tmp_path, 1, claim_dir=claims, cgroup_root=no_cgroups) is None
    assert victim.read_text() == "keep me"
    assert os.sched_getaffinity(0) == two_cpus


@linux_only
def test_threads_started_before_the_claim_move_too(
    tmp_path: Path, two_cpus: set[int], no_cgroups: Path
) -> None:
    ready, done = threading.Event(), threading.Event()
    seen: list[set[int]] = []

    def worker() -> None:
        ready.set()
        done.wait(10)
        seen.append(os.sched_getaffinity(0))

    thread = threading.Thread(target=worker)
    thread.start()
    ready.wait(10)
    pinned = affinity.pin_process(tmp_path, claim_dir=tmp_path / "claims", cgroup_root=no_cgroups)
    assert pinned is not None
    try:
        done.set()
        thread.join(10)
        assert seen == [{pinned.cpu}]
    finally:
        pinned.release()


@linux_only
def test_no_lock_directory_means_no_pinning(
    tmp_path: Path, restored_affinity: set[int], no_cgroups: Path
) -> None:
    missing = tmp_path / "missing"
    assert affinity.pin_process(missing, machine_dirs=(missing / "shm",), cgroup_root=no_cgroups) is None
    assert os.sched_getaffinity(0) == restored_affinity


@linux_only
def test_a_process_already_kept_to_one_cpu_is_left_alone(
    tmp_path: Path, restored_affinity: set[int], no_cgroups: Path
) -> None:
    only = min(restored_affinity)
    _unpin({only})  # e.g. started under taskset -c
    assert affinity.pin_process(tmp_path, claim_dir=tmp_path / "claims", cgroup_root=no_cgroups) is None
    assert not (tmp_path / "claims").exists(), "no CPU claimed"
    assert not list(tmp_path.glob("cpu-*.lock"))


# -- the settings -----------------------------------------------------------------------------------------


def test_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings.from_env().cpu_affinity == "auto"
    monkeypatch.setenv("KHOA_CPU_AFFINITY", "OFF")
    assert Settings.from_env().cpu_affinity == "off"
    assert Settings.from_env().to_env()["KHOA_CPU_AFFINITY"] == "off"
    monkeypatch.setenv("KHOA_CPU_AFFINITY", "cpu0")
    with pytest.raises(ValueError, match="KHOA_CPU_AFFINITY must be one of auto, off"):
        Settings.from_env()


@pytest.mark.parametrize(
    ("raw", "milliseconds", "seconds"),
    [
        ("", affinity.DEFAULT_SWITCH_INTERVAL_MS, 0.0005),  # blank: Khoa's default
        (" ", affinity.DEFAULT_SWITCH_INTERVAL_MS, 0.0005),
        ("0", 0.0, 0.005),  # Python's own
        ("Default", 0.0, 0.005),
        ("2.5", 2.5, 0.0025),
        ("100", 100.0, 0.1),
    ],
)
def test_the_switch_interval_setting(raw: str, milliseconds: float, seconds: float) -> None:
    settings = Settings.from_env({"KHOA_GIL_SWITCH_INTERVAL_MS": raw})
    assert settings.gil_switch_interval_ms == milliseconds
    assert Settings.from_env(settings.to_env()) == settings  # workers read it back
    assert affinity.switch_interval_seconds(settings.gil_switch_interval_ms) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("-1", "KHOA_GIL_SWITCH_INTERVAL_MS must be between 0 and 100 ms (0: Python's default), not -1.0"),
        ("101", "KHOA_GIL_SWITCH_INTERVAL_MS must be between 0 and 100 ms (0: Python's default), not 101.0"),
        ("nan", "KHOA_GIL_SWITCH_INTERVAL_MS must be between 0 and 100 ms (0: Python's default), not nan"),
        ("fast", "could not convert string to float: 'fast'"),
    ],
)
def test_bad_switch_intervals_are_refused(raw: str, message: str) -> None:
    with pytest.raises(ValueError) as refused:
        Settings.from_env({"KHOA_GIL_SWITCH_INTERVAL_MS": raw})
    assert str(refused.value) == message


@pytest.fixture
def restored_switch_interval() -> Iterator[None]:
    before = sys.getswitchinterval()
    try:
        yield
    finally:
        sys.setswitchinterval(before)


@pytest.mark.usefixtures("restored_switch_interval")
def test_the_server_entry_point_applies_the_switch_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    """create_app is where every serving process starts (uvicorn's and granian's workers call it)."""
    built: list[Settings] = []

    class FakeRuntime:
        @staticmethod
        def build(settings: Settings) -> Settings:
            built.append(settings)
            return settings

    monkeypatch.setattr(app, "Runtime", FakeRuntime)
    monkeypatch.setattr(app, "KhoaApp", lambda runtime: runtime)
    monkeypatch.setenv("KHOA_GIL_SWITCH_INTERVAL_MS", "3")
    made: Any = app.create_app()
    assert sys.getswitchinterval() == pytest.approx(0.003)
    assert made is built[0] and made.gil_switch_interval_ms == 3.0
    app.create_app(Settings(gil_switch_interval_ms=0.0))
    assert sys.getswitchinterval() == pytest.approx(0.005)
    app.create_app(Settings())
    assert sys.getswitchinterval() == pytest.approx(0.0005)


def test_heavy_threads_run_at_a_lower_priority_than_the_rest() -> None:
    """CPU-heavy calls' threads yield to the event loop and request threads when cores are busy."""

    def niceness() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    mine = niceness()
    with ThreadPoolExecutor(1, initializer=affinity.keep_thread_to, initargs=(frozenset(),)) as pool:
        assert pool.submit(niceness).result() == min(19, mine + affinity.HEAVY_THREAD_NICENESS)
    assert niceness() == mine  # the calling thread is untouched


def _overlap(gate: affinity.HeavyGate, calls: int, threads: int) -> int:
    """The most calls that ran through ``gate`` at once, ``calls`` of them on ``threads`` threads."""
    running = [0]
    most = [0]
    lock = threading.Lock()
    release = threading.Event()

    def work() -> None:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        release.wait(0.05)
        with lock:
            running[0] -= 1

    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(gate.run, work) for _ in range(calls)]:
            future.result(timeout=30)
    return most[0]


def test_the_heavy_gate_runs_no_more_calls_at_once_than_its_slots(tmp_path: Path) -> None:
    assert _overlap(affinity.HeavyGate(tmp_path, 1), calls=8, threads=4) == 1
    assert _overlap(affinity.HeavyGate(tmp_path, 2), calls=12, threads=4) == 2
    assert _overlap(affinity.HeavyGate(tmp_path, 0), calls=4, threads=4) == 1  # one slot at least
    assert sorted(p.name for p in tmp_path.iterdir()) == ["heavy-0.lock", "heavy-1.lock"]


@contextlib.contextmanager
def _slot_held_elsewhere(path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding ``path``'s lock (as any local user who can read the file could)."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDONLY | os.O_CREAT, 0o644);"
            " fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.kill()
        holder.wait()


def test_the_heavy_gate_is_shared_by_processes_and_freed_when_one_dies(tmp_path: Path) -> None:
    """Another process holding the only slot holds this one's calls; killed, it frees the slot."""
    with _slot_held_elsewhere(tmp_path / "heavy-0.lock") as holder:
        gate = affinity.HeavyGate(tmp_path, 1)
        with ThreadPoolExecutor(1) as pool:
            done = pool.submit(gate.run, lambda: time.monotonic())
            time.sleep(0.3)
            assert not done.done()  # waits for the other process's call
            killed_at = time.monotonic()
            holder.send_signal(signal.SIGKILL)
            assert done.result(timeout=10) >= killed_at


def test_a_slot_held_for_good_elsewhere_delays_a_call_but_never_stops_it(tmp_path: Path) -> None:
    with _slot_held_elsewhere(tmp_path / "heavy-0.lock"):
        gate = affinity.HeavyGate(tmp_path, 1, wait_seconds=0.3)
        started = time.monotonic()
        assert gate.run(lambda: "made") == "made"
        assert 0.3 <= time.monotonic() - started < 5


def test_the_heavy_gate_runs_calls_ungated_where_it_cannot_make_its_files(tmp_path: Path) -> None:
    gate = affinity.HeavyGate(tmp_path / "missing", 1)
    assert _overlap(gate, calls=4, threads=4) > 1
    assert affinity.HeavyGate(None, 1).run(lambda: 42) == 42


class _CountingGate(affinity.HeavyGate):
    def __init__(self, directory: Path) -> None:
        super().__init__(directory, 1)
        self.calls = 0

    def run(self, work: Any) -> Any:
        self.calls += 1
        return super().run(work)


def test_kms_generates_rsa_keys_in_a_slot_of_the_gate(tmp_path: Path) -> None:
    """RSA key generation (CreateKey, GenerateDataKeyPair, GetParametersForImport) takes a slot of
    the backend's gate; other key material does not wait for one."""
    gate = _CountingGate(tmp_path)
    backend = KmsBackend(barrier=None, store=None, authorizer=None, cpu_gate=gate)  # type: ignore[arg-type]
    assert generate_material("RSA_2048", backend.generate_rsa)[:1] == b"\x30"  # a DER SEQUENCE
    assert gate.calls == 1
    assert len(generate_material("SYMMETRIC_DEFAULT", backend.generate_rsa)) == 32
    generate_material("ECC_NIST_P256", backend.generate_rsa)
    assert gate.calls == 1


def test_the_heavy_gate_has_a_slot_for_every_cpu_but_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(affinity, "allowed_cpus", lambda: frozenset(range(8)))
    gate = affinity.heavy_gate(tmp_path, tmp_path / "claims")
    assert [p.name for p in gate.paths] == [f"heavy-{n}.lock" for n in range(7)]
    assert gate.paths[0].parent == tmp_path / "claims"
    monkeypatch.setattr(affinity, "allowed_cpus", lambda: frozenset({0}))
    assert len(affinity.heavy_gate(tmp_path, tmp_path / "claims").paths) == 1
