"""Where a worker's threads run and how often they trade the interpreter (``KHOA_CPU_AFFINITY``,
``KHOA_CPU_CLAIM_DIR``, ``KHOA_GIL_SWITCH_INTERVAL_MS``).

A worker's threads - the event loop, the audit writer, the leader's job runner - hand each other the
GIL and wake each other thousands of times a second. Spread over CPUs by the scheduler, every hand-off
is a wake-up on another CPU (an inter-processor interrupt; under a hypervisor, an exit to it) and moves
the interpreter's hot data between caches. Measured with ``make bench`` on a 2-vCPU virtual machine,
GetSecretValue with the audit trail on went from 1,907 to 2,602 req/s with one worker, and the
trail's cost (best runs) from 26.7% to 3.0% with one worker and from 17.9% to 9.3% with two; issue 13
measured 5,300-6,000 req/s with pinning against 3,300 without (two workers). ``make bench`` measures
the two side by side on every run.

Pinning is only worth it where the CPU it picks is this worker's alone, so ``auto`` pins a worker to
one CPU only when all of these hold, and otherwise leaves placement to the scheduler (saying why, once,
in the worker's log):

- no CPU quota (cgroup v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``, on the process's cgroup or any
  above it): a quota is time on *any* CPU, shared with whatever else the cgroup runs; a pinned worker
  would be throttled on one CPU while the others sit idle;
- not in a container, judged from cgroup facts (a cgroup namespace, or a container runtime's cgroup),
  not from process IDs (every container's main process is PID 1): a container's ``/dev/shm`` and
  ``/run`` are its own, so the claims below cannot see the workers of other containers sharing the
  same CPUs, and every container's first worker would pick the same CPU. An operator who gives every
  installation one shared claim directory (``KHOA_CPU_CLAIM_DIR``, e.g. a host directory mounted into
  each container) makes them visible to each other, and ``auto`` then pins in containers too (never
  under a quota);
- this installation's workers (``KHOA_WORKERS``) are no more than the CPUs the process may use (its
  affinity mask, which a cgroup cpuset narrows): pinning caps a worker at one CPU, so with more
  workers than CPUs some would have to share one while the scheduler could have balanced them;
- enough CPUs are still free machine-wide for the workers of this installation not yet placed.

Claims are lock files held while the process lives (``flock``; the kernel drops them when it dies):
``<claim-dir>/cpu-<n>.lock`` machine-wide (``/dev/shm/khoa-cpu``, else ``/run/lock/khoa-cpu``, both
shared by every user, else the data directory alone, which other installations cannot see), and
``<data-dir>/cpu-<n>.lock`` for the installation, so a worker can count its siblings' claims. One
worker at a time decides, under ``<claim-dir>/claims.lock``. The cost of the trade: a pinned worker
never uses a second CPU, even when the other is idle.

CPU-heavy calls run on threads of their own at a lower priority (:func:`keep_thread_to`), and RSA
key generation, the longest of them, runs in at most one CPU fewer than the machine has at once,
counted across every worker and installation that shares the claim directory (:class:`HeavyGate`:
lock files ``<claim-dir>/heavy-<n>.lock``): priority alone did not keep fast calls fast when every worker's
heavy threads had every CPU busy (measured: GetSecretValue at 1,100 req/s beside two clients creating
RSA-4096 keys back to back on two workers, 1,700-2,300 with the gate; key generation then takes
turns).

The GIL switch interval is set where the server process starts (``khoa.app.create_app``), from
``KHOA_GIL_SWITCH_INTERVAL_MS``: see :data:`DEFAULT_SWITCH_INTERVAL_MS`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import stat
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

log = logging.getLogger("khoa.affinity")

_T = TypeVar("_T")

MODES = ("auto", "off")

# How long the event loop may keep the GIL while another thread waits for it (CPython's default is
# 5 ms). The audit writer thread needs the GIL back after each SQLite call it makes with the GIL
# released (insert, commit's fsync, the lock file): on a busy server each of those waits the full
# interval for the loop to let go, and every request of the batch waits with it. At 0.5 ms a
# group commit of ~64 events took ~2 ms instead of ~10 ms, and the trail's cost on GetSecretValue
# throughput fell by a third (bench/run.py). With no other thread waiting the setting does nothing.
DEFAULT_SWITCH_INTERVAL_MS = 0.5
PYTHON_SWITCH_INTERVAL_SECONDS = 0.005  # CPython's own default (KHOA_GIL_SWITCH_INTERVAL_MS=0)
MAX_SWITCH_INTERVAL_MS = 100.0

# Machine-wide claim directories, first usable wins; both are shared by every user of the machine.
# Only lock files live there, opened read-only and never written (_open_lock).
MACHINE_CLAIM_DIRS = (Path("/dev/shm/khoa-cpu"), Path("/run/lock/khoa-cpu"))  # noqa: S108
CLAIMS_LOCK = "claims.lock"
DECIDE_TIMEOUT_SECONDS = 2.0

# Cgroup paths that container runtimes create (Docker, Kubernetes, containerd, Podman, LXC, CRI-O).
_CONTAINER_CGROUP = re.compile(r"docker|kubepods|containerd|libpod|podman|lxc|crio")


# -- the GIL switch interval -------------------------------------------------------------------------


def parse_switch_interval_ms(raw: str) -> float:
    """``KHOA_GIL_SWITCH_INTERVAL_MS``: milliseconds; ``0`` or ``default``: Python's own interval."""
    text = raw.strip().lower()
    return 0.0 if text == "default" else float(text)


def check_switch_interval_ms(name: str, value: float) -> None:
    if not 0 <= value <= MAX_SWITCH_INTERVAL_MS:  # also refuses NaN
        raise ValueError(
            f"{name} must be between 0 and {MAX_SWITCH_INTERVAL_MS:g} ms (0: Python's default), not {value}"
        )


def switch_interval_seconds(milliseconds: float) -> float:
    return milliseconds / 1000 if milliseconds > 0 else PYTHON_SWITCH_INTERVAL_SECONDS


def set_switch_interval(milliseconds: float) -> None:
    """Apply ``KHOA_GIL_SWITCH_INTERVAL_MS`` to this process (0: Python's default, 5 ms)."""
    sys.setswitchinterval(switch_interval_seconds(milliseconds))


# -- what the cgroups say ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CgroupFacts:
    """Why this process's CPUs may not be its own; empty strings when the cgroups say nothing."""

    quota: str = ""  # e.g. "a CPU quota of 1.5 CPUs (cgroup /docker/abc)"
    container: str = ""  # e.g. "a container's cgroup (/kubepods/pod1/abc)"


@dataclass(frozen=True)
class _Mount:
    fstype: str  # cgroup | cgroup2
    root: str  # the cgroup path mounted there
    mountpoint: str
    options: frozenset[str]  # super options: the v1 controllers


def cgroup_facts(root: Path = Path("/")) -> CgroupFacts:
    """Read the process's cgroups (``/proc/self/cgroup``, ``/proc/self/mountinfo`` and the cgroup
    files, all under ``root``, which tests point at a fake tree)."""
    try:
        membership = (root / "proc/self/cgroup").read_text()
    except OSError:
        return CgroupFacts()  # not Linux, or no cgroups: nothing known
    mounts = _cgroup_mounts(root)
    quota = container = ""
    for line in membership.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if not path:
            continue
        if not container and _CONTAINER_CGROUP.search(path):
            container = f"a container's cgroup ({path})"
        if hierarchy == "0" and not controllers:  # cgroup v2
            mount = next((m for m in mounts if m.fstype == "cgroup2"), None)
            if mount is None:
                continue
            directory, top = _cgroup_dir(root, mount, path)
            if not container and path == "/" and (directory / "cgroup.type").exists():
                # The real root cgroup has no cgroup.type: "/" that has one is a cgroup namespace's root.
                container = "a cgroup namespace (a container's view of the cgroups)"
            quota = quota or _v2_quota(directory, top, mount)
        elif "cpu" in controllers.split(","):  # cgroup v1, the cpu controller's hierarchy
            mount = next((m for m in mounts if m.fstype == "cgroup" and "cpu" in m.options), None)
            if mount is None:
                continue
            directory, top = _cgroup_dir(root, mount, path)
            quota = quota or _v1_quota(directory, top, mount)
    return CgroupFacts(quota, container)


def _cgroup_mounts(root: Path) -> list[_Mount]:
    try:
        text = (root / "proc/self/mountinfo").read_text()
    except OSError:
        return []
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        dash = fields.index("-")
        if len(fields) < dash + 4 or dash < 5:
            continue
        fstype = fields[dash + 1]
        if fstype in ("cgroup", "cgroup2"):
            mounts.append(_Mount(fstype, fields[3], fields[4], frozenset(fields[dash + 3].split(","))))
    return mounts


def _cgroup_dir(root: Path, mount: _Mount, path: str) -> tuple[Path, Path]:
    """The directory of cgroup ``path`` and the directory of the mount (the top of what is visible)."""
    top = root / mount.mountpoint.lstrip("/")
    base = mount.root.rstrip("/")
    # A path outside the mounted part of the tree (e.g. a container's own cgroup shown as "/"): the top.
    inside = path == mount.root or path.startswith(base + "/")
    relative = path[len(base) :].strip("/") if inside else ""
    directory = top / relative if relative else top
    return (directory if directory.is_dir() else top), top


def _ancestors(directory: Path, top: Path) -> list[Path]:
    """``directory`` and each directory above it, up to and including ``top``."""
    chain = [directory]
    while chain[-1] != top and top in chain[-1].parents:
        chain.append(chain[-1].parent)
    return chain


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _describe(quota: float, period: float, directory: Path, top: Path, mount: _Mount) -> str:
    relative = directory.relative_to(top).as_posix()
    where = mount.root if relative == "." else mount.root.rstrip("/") + "/" + relative
    return f"a CPU quota of {quota / period:g} CPUs (cgroup {where})"


def _v2_quota(directory: Path, top: Path, mount: _Mount) -> str:
    for level in _ancestors(directory, top):
        fields = _read(level / "cpu.max").split()
        if len(fields) == 2 and fields[0] != "max":
            with contextlib.suppress(ValueError, ZeroDivisionError):
                return _describe(float(fields[0]), float(fields[1]), level, top, mount)
    return ""


def _v1_quota(directory: Path, top: Path, mount: _Mount) -> str:
    for level in _ancestors(directory, top):
        with contextlib.suppress(ValueError, ZeroDivisionError):
            quota = int(_read(level / "cpu.cfs_quota_us") or "-1")
            if quota > 0:
                period = int(_read(level / "cpu.cfs_period_us") or "100000")
                return _describe(quota, period, level, top, mount)
    return ""


# -- claiming a CPU ------------------------------------------------------------------------------------


@dataclass
class Pinned:
    """A CPU this process keeps to, and the open lock files that claim it (closed at shutdown)."""

    cpu: int
    lock_fds: tuple[int, ...]

    def release(self) -> None:
        for fd in self.lock_fds:
            with contextlib.suppress(OSError):
                os.close(fd)


def pin_process(
    data_dir: Path,
    workers: int = 1,
    *,
    claim_dir: Path | None = None,
    machine_dirs: tuple[Path, ...] = MACHINE_CLAIM_DIRS,
    cgroup_root: Path = Path("/"),
) -> Pinned | None:
    """Claim a free CPU among those this process may use and move every thread onto it, when that is
    safe (see the module's docstring); None, with the reason logged, when it stays unpinned.

    ``claim_dir`` is KHOA_CPU_CLAIM_DIR (given: the operator shares it between installations);
    without it the first usable of ``machine_dirs`` is used, else ``data_dir`` alone."""
    if not hasattr(os, "sched_setaffinity"):
        return None  # not Linux
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None  # already kept to one CPU (taskset, a one-CPU cpuset or machine): nothing to gain
    if workers > len(allowed):
        return _unpinned(f"{workers} workers for {len(allowed)} CPUs: each may use them all")
    facts = cgroup_facts(cgroup_root)
    if facts.quota:
        return _unpinned(f"{facts.quota}: the quota is time on any CPU, not a CPU of its own")
    if facts.container and claim_dir is None:
        return _unpinned(
            f"{facts.container}: other containers' workers on these CPUs cannot be seen "
            "(set KHOA_CPU_CLAIM_DIR to a directory every installation shares to pin anyway)"
        )
    shared = _claim_dir(claim_dir, machine_dirs)
    if shared is None and claim_dir is not None:
        return _unpinned(f"cannot use KHOA_CPU_CLAIM_DIR {claim_dir}")
    if shared is None:
        log.info(
            "no machine-wide CPU claim directory (%s): claims in %s are not seen by other installations",
            ", ".join(str(d) for d in machine_dirs),
            data_dir,
        )
    layers = [shared, data_dir] if shared is not None and shared != data_dir else [data_dir]
    decide = _open_lock(layers[0] / CLAIMS_LOCK, 0o644 if len(layers) == 2 else 0o600)
    if decide is None:
        return _unpinned(f"cannot create lock files in {layers[0]}")
    try:
        if not _lock(decide, DECIDE_TIMEOUT_SECONDS):
            return _unpinned(f"{layers[0] / CLAIMS_LOCK} stayed locked for {DECIDE_TIMEOUT_SECONDS:g} s")
        return _claim(allowed, workers, layers)
    finally:
        os.close(decide)  # also unlocks


def _claim(allowed: list[int], workers: int, layers: list[Path]) -> Pinned | None:
    """Under the claims lock: count the CPUs free machine-wide and this installation's claims, and take
    one CPU if enough are free for the workers still to come."""
    installation = layers[-1]
    free: dict[int, int] = {}  # cpu -> its machine-wide lock fd, held
    own = 0
    try:
        for cpu in allowed:
            fd = _open_lock(layers[0] / f"cpu-{cpu}.lock", 0o644 if len(layers) == 2 else 0o600)
            if fd is None:
                if not layers[0].is_dir():
                    return _unpinned(f"cannot create lock files in {layers[0]}")
                continue  # not a lock file we can use: count it as taken
            if _lock(fd):
                free[cpu] = fd
                continue
            os.close(fd)
            if len(layers) == 1:
                own += 1  # one layer: the lock files are this installation's
            elif _held(installation / f"cpu-{cpu}.lock"):
                own += 1
        needed = max(1, workers - own)
        if len(free) < needed:
            return _unpinned(
                f"{len(free)} of {len(allowed)} CPUs are free and this installation's workers need "
                f"{needed} more (the others are claimed by other workers of this or other installations)"
            )
        for cpu, fd in list(free.items()):
            fds = [fd]
            if len(layers) == 2:
                own_fd = _open_lock(installation / f"cpu-{cpu}.lock", 0o600)
                if own_fd is None:
                    return _unpinned(f"cannot create lock files in {installation}")
                if not _lock(own_fd):  # a worker of an older Khoa that claims in the data dir only
                    os.close(own_fd)
                    continue
                fds.append(own_fd)
            try:
                os.sched_setaffinity(0, {cpu})  # this thread first: if it may not move, none may
            except OSError as exc:
                for each in fds[1:]:
                    os.close(each)
                return _unpinned(str(exc))
            del free[cpu]
            _move_threads({cpu})
            log.info("worker %d keeps to CPU %d", os.getpid(), cpu)
            return Pinned(cpu, tuple(fds))
        return _unpinned("every free CPU is claimed in this installation's data directory")
    finally:
        for fd in free.values():
            os.close(fd)


def _unpinned(reason: str) -> Pinned | None:
    """Say why this worker stays unpinned (once: each worker decides once, at startup)."""
    log.info("worker %d not pinned to a CPU: %s", os.getpid(), reason)
    return None


def _claim_dir(explicit: Path | None, machine_dirs: tuple[Path, ...]) -> Path | None:
    """The directory where claims are seen machine-wide: ``explicit``, else the first usable of
    ``machine_dirs`` (created shared by every user, sticky like /tmp), else None."""
    for directory in (explicit,) if explicit is not None else machine_dirs:
        try:
            if explicit is not None:
                os.makedirs(directory, 0o755)
            else:
                os.mkdir(directory, 0o1777)
                os.chmod(directory, 0o1777)  # noqa: S103 - every user's workers claim here, like /tmp
        except FileExistsError:
            pass
        except OSError:
            continue
        # The operator's directory may be a link; a shared one is not followed (anyone could plant it).
        info = os.stat(directory) if explicit is not None else os.lstat(directory)
        if stat.S_ISDIR(info.st_mode) and os.access(directory, os.W_OK | os.X_OK):
            return directory
    return None


def _open_lock(path: Path, mode: int) -> int | None:
    """An open file descriptor for the lock file ``path``, created if need be; None when it cannot be
    created or is not a regular file. Opened read-only (flock needs no more): nothing is ever written,
    so a symbolic link or hard link planted in a shared directory cannot make Khoa damage a file,
    and a FIFO cannot block it (O_NONBLOCK)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        # Open first without O_CREAT: the kernel refuses O_CREAT on another user's file in a sticky
        # shared directory (fs.protected_regular), even when the file exists.
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            try:
                fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, mode)
                os.fchmod(fd, mode)  # readable by other users' workers despite the umask
            except FileExistsError:
                fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.EACCES, errno.EPERM, errno.ELOOP, errno.ENOTDIR):
            log.debug("lock file %s: %s", path, exc)
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def _lock(fd: int, wait_seconds: float = 0.0) -> bool:
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)


def _held(path: Path) -> bool:
    """Whether another open file holds ``path``'s lock (a missing file is not held)."""
    fd = _open_lock(path, 0o600)
    if fd is None:
        return False
    try:
        return not _lock(fd)
    finally:
        os.close(fd)  # also unlocks, had we taken it


def allowed_cpus() -> frozenset[int]:
    """The CPUs this thread may run on (empty where Linux's affinity calls are missing); read before
    pinning, it is what CPU-heavy threads spread over (:func:`keep_thread_to`)."""
    if not hasattr(os, "sched_getaffinity"):
        return frozenset()
    return frozenset(os.sched_getaffinity(0))


# How much lower than the event loop and request threads the heavy threads run (niceness +10, on top
# of the process's own: about a tenth of the CPU share when both want a core), so a burst of key
# generation yields to fast calls.
HEAVY_THREAD_NICENESS = 10


def run_thread_on(cpus: frozenset[int]) -> None:
    """Let this thread run on ``cpus`` (a thread pool's initializer; nothing when empty or where
    Linux's affinity calls are missing): threads a pinned worker starts inherit its one CPU."""
    if cpus and hasattr(os, "sched_setaffinity"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, cpus)


def keep_thread_to(cpus: frozenset[int]) -> None:
    """Set up a thread of the CPU-heavy pool (the pool's initializer). It may run on ``cpus``: a pinned
    worker's CPU-heavy calls (RSA key generation: OpenSSL releases the GIL) then run on another CPU
    instead of taking turns with the worker's event loop on its own. And it runs at a lower priority
    (Linux's niceness is per thread): when heavy calls keep every core busy, the scheduler still gives
    the event loop and request threads their turn, so fast calls are not held behind key generation."""
    run_thread_on(cpus)
    if hasattr(os, "setpriority"):
        thread = threading.get_native_id()
        with contextlib.suppress(OSError):  # raising a niceness needs no privilege; be safe anyway
            current = os.getpriority(os.PRIO_PROCESS, thread)  # relative: an operator's nice stays
            os.setpriority(os.PRIO_PROCESS, thread, min(19, current + HEAVY_THREAD_NICENESS))


def _move_threads(cpus: set[int]) -> None:
    """Threads started later inherit the mask of the thread that starts them; these already exist."""
    for thread in threading.enumerate():
        if thread.native_id is not None:
            with contextlib.suppress(OSError):  # a thread that just ended
                os.sched_setaffinity(thread.native_id, cpus)


# -- the node-wide gate for CPU-heavy calls --------------------------------------------------------


# How long a call waits for a slot before it runs anyway. Anyone who can read a shared directory's
# lock file can hold its lock: the gate shares CPUs and guards nothing, so it must never hold a call
# for good (an RSA-4096 key takes about a second; a queue of them a few more).
HEAVY_WAIT_SECONDS = 30.0
_HEAVY_POLL_SECONDS = (0.002, 0.05)  # the first and the longest pause between looks at the slots


class HeavyGate:
    """At most ``slots`` CPU-heavy calls at once among every process that shares ``directory``.

    Each call takes a slot (``heavy-<n>.lock``, ``flock``) on a file opened for it alone (flock
    belongs to the open file, so threads of one process exclude each other too), and the kernel
    frees it when the call ends or its process dies. A call runs ungated where the lock files cannot
    be made, and when no slot came free within ``wait_seconds`` (logged): the gate shares CPUs, it
    guards nothing, and a lock held by someone else must not hold key generation for good."""

    def __init__(self, directory: Path | None, slots: int, wait_seconds: float = HEAVY_WAIT_SECONDS) -> None:
        self.paths = [directory / f"heavy-{n}.lock" for n in range(max(1, slots))] if directory else []
        self.wait_seconds = wait_seconds

    def run(self, work: Callable[[], _T]) -> _T:
        fd = self._take()
        try:
            return work()
        finally:
            if fd is not None:
                os.close(fd)  # also unlocks

    def _take(self) -> int | None:
        """The open, locked file of a free slot, looking again (with growing pauses) while all are
        taken; None when the files cannot be opened or no slot came free in time."""
        fds = [fd for fd in (_open_lock(path, 0o644) for path in self.paths) if fd is not None]
        if not fds:
            return None
        deadline = time.monotonic() + self.wait_seconds
        pause, longest = _HEAVY_POLL_SECONDS
        try:
            while True:
                for fd in fds:
                    if _lock(fd):
                        fds.remove(fd)
                        return fd
                if time.monotonic() >= deadline:
                    log.warning(
                        "no CPU-heavy slot came free in %g s (%s): running without one",
                        self.wait_seconds,
                        self.paths[0].parent,
                    )
                    return None
                time.sleep(pause)
                pause = min(longest, pause * 2)
        finally:
            for fd in fds:
                os.close(fd)


def heavy_gate(data_dir: Path, claim_dir: Path | None) -> HeavyGate:
    """The gate for this process: in the claim directory shared machine-wide (``claim_dir``, given by
    the operator, else the first usable of :data:`MACHINE_CLAIM_DIRS`; else the data directory), with
    a slot for every CPU this process may use but one (one at least)."""
    directory = _claim_dir(claim_dir, MACHINE_CLAIM_DIRS) or data_dir
    return HeavyGate(directory, len(allowed_cpus()) - 1)
