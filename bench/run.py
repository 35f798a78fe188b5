"""``make bench``: KMS, Secrets Manager and SSM read throughput, Khoa beside moto's server.

Operations: KMS Encrypt, Decrypt and GenerateDataKey; Secrets Manager GetSecretValue (by name, a
~200-byte SecretString); SSM GetParameter with WithDecryption on a SecureString. For each server
configuration (moto, then Khoa under uvicorn with 1 and 2 workers; granian and the asyncio loop on
request) this starts the server on a free loopback port with a fresh data directory, creates a
symmetric key, a secret and a SecureString parameter, and for each operation builds one
SigV4-signed request with botocore (signed for its own service just before the run, so it sits well
inside the 5-minute skew window), hands it to ``wrk`` through a generated Lua script, warms up,
then measures. wrk replays the same bytes on every connection, so the load generator costs little
CPU; it still shares the machine's cores with the server, and the table reports how much CPU each
side used.

Audit trail cost: beside every Khoa configuration two twin servers run in ``--dev`` mode, one with
the trail on and one with ``KHOA_AUDIT=0``, and GetSecretValue is measured on the two alternately
(on, off, off, on, ...: the same minute, the same machine load), so the report can say what the trail
costs. Both twins are ``--dev`` because Khoa refuses ``KHOA_AUDIT=0`` outside development mode (the
trail is fail-closed in production); dev mode skips signature checks and authorisation on both sides
alike, so the pair still isolates the trail's cost. The main server of each configuration runs as
shipped (SigV4 on, trail on) and is measured on every operation.

CPU pinning: beside every Khoa configuration two more twins run as shipped, one with
``KHOA_CPU_AFFINITY=auto`` (the default) and one with ``off``, and GetSecretValue is measured on the two
alternately in the same way; the report gives the ratio and where each twin's workers ran (``auto``
stays unpinned where pinning is unsafe: khoa.affinity). Every Khoa server claims CPUs in a directory of
its own (``KHOA_CPU_CLAIM_DIR``), as if alone on the machine: the idle servers beside the one measured
do not hold CPUs it could use.

Environment knobs (all optional):

    KHOA_BENCH_POSTGRES     admin URL the *-postgres configurations create databases on
                            (default postgresql://postgres@127.0.0.1:5432/postgres; skipped if absent)
    KHOA_BENCH_SECONDS      measured seconds per operation           (default 10)
    KHOA_BENCH_WARMUP       warm-up seconds per operation            (default 3)
    KHOA_BENCH_CONNECTIONS  open connections                          (default 64)
    KHOA_BENCH_THREADS      wrk threads                               (default 2)
    KHOA_BENCH_REPEAT       measured runs per operation; the table keeps the fastest (default 1;
                            raise it on a machine that other work shares)
    KHOA_BENCH_SERVERS      comma list of configurations to run       (default: those in CONFIGS
                            marked default: moto, khoa-uvicorn-w1, khoa-uvicorn-w2)
    KHOA_BENCH_OPS          comma list of OPERATIONS                  (default: all)
    KHOA_BENCH_AUDIT_AB     alternating audit on/off GetSecretValue runs per side (default 6;
                            0: no --dev audit twins)
    KHOA_BENCH_AFFINITY_AB  alternating pinning on/off GetSecretValue runs per side (default 4;
                            0: no pinning twins). Just the pinning pair, quickly:
                            KHOA_BENCH_SERVERS=khoa-uvicorn-w2 KHOA_BENCH_OPS=GetSecretValue
                            KHOA_BENCH_AUDIT_AB=0 KHOA_BENCH_SECONDS=3 KHOA_BENCH_WARMUP=1
    KHOA_BENCH_PROFILE      1: after the table, profile khoa-uvicorn-w1 with py-spy under the
                            same load and print where the time goes (bench/results/profile-*.txt);
                            only: the profile without the table
    KHOA_BENCH_PYSPY_RATE   samples per second for the profile (default 100)
    KHOA_BENCH_PYSPY_ARGS   extra py-spy record arguments for the profile (e.g. "--gil --nonblocking")
    KHOA_BENCH_OUTPUT       where to write the Markdown report (default bench/results/latest.md)
    KHOA_BENCH_SERVER_ENV   extra environment for the Khoa servers, as NAME=VALUE[,NAME=VALUE...]
                            (for experiments, e.g. KHOA_ALERTS=0; the report names it)
    KHOA_BENCH_PEERS        the virtual environment moto's server runs from (default
                            .venv-bench-peers, which `make bench` creates from
                            requirements/bench-peers.in; the test environment never holds moto)
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import platform
import resource
import secrets
import shutil
import signal
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"

ACCOUNT_ID = "111122223333"
# Fresh root credentials for each bench run's throwaway servers (never reused, never stored).
ACCESS_KEY_ID = "AKIA" + "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(16))
SECRET_ACCESS_KEY = secrets.token_urlsafe(30)
REGION = "us-east-1"
# The PostgreSQL server the khoa-*-postgres configurations create their databases on.
BENCH_POSTGRES = os.environ.get("KHOA_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")

# operation -> (SigV4 signing name, X-Amz-Target prefix); all three services speak awsJson1_1.
SERVICES = {
    "Encrypt": ("kms", "TrentService"),
    "Decrypt": ("kms", "TrentService"),
    "GenerateDataKey": ("kms", "TrentService"),
    "GetSecretValue": ("secretsmanager", "secretsmanager"),
    "GetParameter": ("ssm", "AmazonSSM"),
}
OPERATIONS = tuple(SERVICES)
AUDIT_OPERATION = "GetSecretValue"  # measured with the audit trail on and off
SECRET_NAME = "khoa-bench/orders-db"
PARAMETER_NAME = "/khoa-bench/orders/db-password"


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


SECONDS = env_int("KHOA_BENCH_SECONDS", 10)
WARMUP = env_int("KHOA_BENCH_WARMUP", 3)
CONNECTIONS = env_int("KHOA_BENCH_CONNECTIONS", 64)
THREADS = env_int("KHOA_BENCH_THREADS", 2)
REPEAT = max(1, env_int("KHOA_BENCH_REPEAT", 1))
AUDIT_AB = max(0, env_int("KHOA_BENCH_AUDIT_AB", 6))
AFFINITY_AB = max(0, env_int("KHOA_BENCH_AFFINITY_AB", 4))
BIN = Path(sys.executable).parent
# The peers compared with Khoa run from their own environment, so their dependencies never meet Khoa's.
PEERS = Path(os.environ.get("KHOA_BENCH_PEERS", "").strip() or ROOT / ".venv-bench-peers")
PEERS_PYTHON = PEERS / "bin" / "python"
PEER_PACKAGES = ("moto", "werkzeug")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the load generator ---------------------------------------------------------------------------
def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        log("wrk is missing: installing it from Debian (apt-get install -y wrk)")
        install = ["apt-get", "install", "-y", "-q", "wrk"]
        quiet = subprocess.DEVNULL
        if subprocess.run(install, check=False, stdout=quiet, stderr=quiet).returncode:
            subprocess.run(["apt-get", "update", "-q"], check=False, stdout=quiet, stderr=quiet)
            subprocess.run(install, check=False, stdout=quiet, stderr=quiet)
        found = shutil.which("wrk")
        if found:
            return found
    sys.exit(
        "bench: the load generator `wrk` is not installed and could not be installed here.\n"
        "       Install it (Debian/Ubuntu: `sudo apt-get install wrk`; macOS: `brew install wrk`) "
        "and run `make bench` again. There is no Python fallback: a Python client would be the "
        "bottleneck and the numbers would mean nothing."
    )


def wrk_version(wrk: str) -> str:
    out = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
    return (out.stdout + out.stderr).splitlines()[0].split(" Copyright")[0].strip()


def lua_string(value: str | bytes) -> str:
    data = value.encode() if isinstance(value, str) else value
    parts = ['"']
    for byte in data:
        char = chr(byte)
        if char in '"\\' or byte < 32 or byte > 126:
            parts.append(f"\\{byte:03d}")
        else:
            parts.append(char)
    parts.append('"')
    return "".join(parts)


@dataclass
class SignedCall:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


def sign(endpoint: str, operation: str, payload: dict[str, Any]) -> SignedCall:
    """One request exactly as an SDK would send it, signed now with SigV4 (botocore's signer)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    signing_name, target_prefix = SERVICES[operation]
    host = endpoint.split("://", 1)[1]
    body = json.dumps(payload, separators=(",", ":")).encode()
    request = AWSRequest(
        method="POST",
        url=f"{endpoint}/",
        data=body,
        headers={
            "Host": host,
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": f"{target_prefix}.{operation}",
            "User-Agent": "khoa-bench/wrk",
        },
    )
    SigV4Auth(Credentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY), signing_name, REGION).add_auth(request)
    return SignedCall("POST", "/", dict(request.headers.items()), body)


def check_once(endpoint: str, call: SignedCall) -> dict[str, Any]:
    """Send the exact request wrk will replay and insist on a 200, so errors are never benchmarked."""
    host, port = endpoint.split("://", 1)[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(call.method, call.path, body=call.body, headers=call.headers)
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    if response.status != 200:
        raise RuntimeError(f"{call.headers['X-Amz-Target']} answered {response.status}: {raw[:300]!r}")
    result: dict[str, Any] = json.loads(raw)
    return result


def write_script(call: SignedCall, directory: Path, name: str) -> Path:
    lines = [
        f"-- generated by bench/run.py at {datetime.now(UTC).isoformat()}: one pre-signed request",
        f"wrk.method = {lua_string(call.method)}",
        f"wrk.path = {lua_string(call.path)}",
        f"wrk.body = {lua_string(call.body)}",
        "wrk.headers = {}",
    ]
    for name_, value in call.headers.items():
        lines.append(f"wrk.headers[{lua_string(name_)}] = {lua_string(value)}")
    script = directory / f"{name}.lua"
    script.write_text("\n".join(lines) + "\n\n" + (BENCH / "report.lua").read_text())
    return script


@dataclass
class WrkResult:
    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    non_2xx: int
    wrk_cpu: float  # CPU seconds the load generator used
    server_cpu: float  # CPU seconds the server's process tree used
    machine_cpu: float  # CPU seconds every process on the machine used (others' work included)
    process_cpu: list[float]  # CPU seconds per server process, largest first
    raw: str

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def cores(self, cpu_seconds: float) -> float:
        return cpu_seconds / self.seconds if self.seconds else 0.0

    def split(self) -> str:
        """Server CPU per busy process, e.g. ``1.9 = 0.96+0.94`` (uneven = connections unbalanced)."""
        busy = [c for c in self.process_cpu if self.cores(c) >= 0.05]
        total = f"{self.cores(self.server_cpu):.2f}"
        if len(busy) < 2:
            return total
        return total + " = " + "+".join(f"{self.cores(c):.2f}" for c in busy)

    @property
    def other_cpu(self) -> float:
        """CPU seconds used by neither the server nor wrk: other work sharing the machine."""
        return max(0.0, self.machine_cpu - self.server_cpu - self.wrk_cpu)


def run_wrk(wrk: str, url: str, script: Path, seconds: int, server_pid: int) -> WrkResult:
    args = [
        wrk,
        f"-t{min(THREADS, CONNECTIONS)}",
        f"-c{CONNECTIONS}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    cpu_before = tree_cpu_by_pid(server_pid)
    machine_before = machine_cpu_seconds()
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    machine_after = machine_cpu_seconds()
    cpu_after = tree_cpu_by_pid(server_pid)
    per_process = sorted(
        (cpu_after[p] - cpu_before.get(p, 0.0) for p in cpu_after),
        reverse=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    line = next((x for x in done.stdout.splitlines() if x.startswith("KHOA_BENCH_RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result line:\n{done.stdout}\n{done.stderr}")
    data = json.loads(line.split(" ", 1)[1])
    errors = data["connect_errors"] + data["read_errors"] + data["write_errors"] + data["timeouts"]
    wrk_cpu = (children_after.ru_utime + children_after.ru_stime) - (
        children_before.ru_utime + children_before.ru_stime
    )
    return WrkResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        errors=errors,
        non_2xx=data["status_errors"],
        wrk_cpu=wrk_cpu,
        server_cpu=sum(per_process),
        process_cpu=per_process,
        machine_cpu=machine_after - machine_before,
        raw=done.stdout,
    )


# -- process accounting ---------------------------------------------------------------------------
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_stats() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds) for every process, from /proc (Linux only)."""
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        fields_ = raw[raw.rindex(")") + 2 :].split()
        stats[int(entry.name)] = (int(fields_[1]), (int(fields_[11]) + int(fields_[12])) / _TICK)
    return stats


def machine_cpu_seconds() -> float:
    """Busy CPU seconds of the whole machine since boot (all cores), from /proc/stat."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in first[1:9])
    return (user + nice + system + irq + softirq + steal) / _TICK


def tree_pids(pid: int) -> list[int]:
    if not Path("/proc").is_dir():
        return [pid]
    stats = _proc_stats()
    children: dict[int, list[int]] = defaultdict(list)
    for child, (parent, _) in stats.items():
        children[parent].append(child)
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def tree_cpu_by_pid(pid: int) -> dict[int, float]:
    """CPU seconds of ``pid`` and each of its descendants."""
    if not Path("/proc").is_dir():
        return {}
    stats = _proc_stats()
    return {p: stats[p][1] for p in tree_pids(pid) if p in stats}


def tree_rss_mib(pid: int) -> float:
    total = 0
    for p in tree_pids(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


# -- servers --------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KHOA_", "AWS_", "GRANIAN_"))}
    env.update(
        {
            "KHOA_ACCOUNT_ID": ACCOUNT_ID,
            "KHOA_ROOT_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "KHOA_ROOT_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def server_env_overrides() -> dict[str, str]:
    """KHOA_BENCH_SERVER_ENV, parsed: extra settings for the Khoa servers of an experiment."""
    raw = os.environ.get("KHOA_BENCH_SERVER_ENV", "")
    pairs = [item.split("=", 1) for item in raw.split(",") if "=" in item]
    return {name.strip(): value.strip() for name, value in pairs}


@dataclass
class Config:
    name: str  # short id used in KHOA_BENCH_SERVERS
    label: str  # what the table shows
    kind: str  # moto | khoa-uvicorn | khoa-uvicorn-asyncio | khoa-granian
    workers: int = 1
    default: bool = True  # run when KHOA_BENCH_SERVERS is not set
    audit: bool = True  # False: KHOA_AUDIT=0 (the audit-off twin, never shipped that way)
    dev: bool = False  # True: `--dev` (the audit A/B twins: KHOA_AUDIT=0 is refused without it)
    affinity: str = "auto"  # KHOA_CPU_AFFINITY ("off": the pinning-off twin)
    database: str = "sqlite"  # "postgres": a fresh database on BENCH_POSTGRES (no twins: SQLite's show it)

    def audit_twins(self) -> tuple[Config, Config]:
        """The --dev pair measured alternately for the trail's cost: (audit on, audit off)."""
        return (
            Config(
                f"{self.name}-dev-audit-on",
                f"{self.label}, --dev, audit on",
                self.kind,
                self.workers,
                dev=True,
            ),
            Config(
                f"{self.name}-dev-audit-off",
                f"{self.label}, --dev, **audit off**",
                self.kind,
                self.workers,
                audit=False,
                dev=True,
            ),
        )

    def affinity_twins(self) -> tuple[Config, Config]:
        """The pair, as shipped, measured alternately for what CPU pinning is worth: (auto, off)."""
        return (
            Config(f"{self.name}-pinning-on", f"{self.label}, pinning auto", self.kind, self.workers),
            Config(
                f"{self.name}-pinning-off",
                f"{self.label}, **pinning off**",
                self.kind,
                self.workers,
                affinity="off",
            ),
        )


CONFIGS = [
    Config("moto", "moto_server (Werkzeug, threaded)", "moto"),
    Config("khoa-uvicorn-w1", "Khoa / uvicorn+httptools+uvloop / 1 worker", "khoa-uvicorn", 1),
    Config("khoa-uvicorn-w2", "Khoa / uvicorn+httptools+uvloop / 2 workers", "khoa-uvicorn", 2),
    Config(
        "khoa-uvicorn-w2-postgres",
        "Khoa / uvicorn+httptools+uvloop / 2 workers / PostgreSQL",
        "khoa-uvicorn",
        2,
        database="postgres",
    ),
    # Opt-in (name them in KHOA_BENCH_SERVERS) to keep the default run near 6 minutes: the asyncio
    # loop and granian were each measured slower than uvicorn+uvloop on this workload.
    Config(
        "khoa-uvicorn-asyncio-w1",
        "Khoa / uvicorn+httptools, asyncio loop / 1 worker",
        "khoa-uvicorn-asyncio",
        1,
        default=False,
    ),
    # uvicorn's multi-process mode with the asyncio loop stalls ~40 ms per request even for a
    # do-nothing app (CPU idle, p50 ~44 ms; Nagle/delayed-ACK-like), so it says nothing about Khoa.
    Config(
        "khoa-uvicorn-asyncio-w2",
        "Khoa / uvicorn+httptools, asyncio loop / 2 workers",
        "khoa-uvicorn-asyncio",
        2,
        default=False,
    ),
    Config("khoa-granian-w1", "Khoa / granian (asgi, uvloop) / 1 worker", "khoa-granian", 1, default=False),
    Config("khoa-granian-w2", "Khoa / granian (asgi, uvloop) / 2 workers", "khoa-granian", 2, default=False),
]


@dataclass
class RunningServer:
    config: Config
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    data_dir: Path | None = None
    notes: list[str] = field(default_factory=list)
    dropped: Callable[[], None] | None = None  # drops the server's PostgreSQL database

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def worker_pids(self) -> list[int]:
        """Python processes that serve requests (the leaves of the process tree)."""
        pids = tree_pids(self.process.pid)
        if len(pids) == 1:
            return pids
        stats = _proc_stats()
        parents = {stats[p][0] for p in pids if p in stats}
        return [p for p in pids if p not in parents and p != self.process.pid]

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        # A worker that outlived its supervisor is still in the group we created.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        if self.dropped is not None:
            self.dropped()
            self.dropped = None
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def _spawn(config: Config, args: list[str], env: dict[str, str], port: int, workdir: Path) -> RunningServer:
    log_path = workdir / f"{config.name}.log"
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            args,
            env=env,
            cwd=workdir,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, so stop() reaches every worker
        )
    return RunningServer(config, port, process, log_path)


def _wait_ready(server: RunningServer, path: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            tail = server.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{server.config.name} exited with {server.process.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(f"{server.endpoint}{path}", timeout=2) as response:
                if response.status < 500:
                    return
        except urllib.error.HTTPError as error:
            if error.code < 500:
                return
        except OSError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"{server.config.name} did not become ready in {timeout:.0f}s")


def prepare_khoa(
    data_dir: Path, port: int, workers: int, env: dict[str, str], audit: bool = True, dev: bool = False
) -> dict[str, str]:
    """Do what `khoa server` does before its workers start; return the workers' KHOA_* settings.

    prepare() migrates the database, creates the root key and the first account; workers then
    build the app from KHOA_* variables (khoa.app:create_app reads Settings.from_env()).
    """
    from khoa.settings import Settings

    code = (
        "import sys; from pathlib import Path; from khoa.cli.main import prepare; "
        "from khoa.settings import Settings; prepare(Settings.from_env(data_dir=Path(sys.argv[1])))"
    )
    prepared = subprocess.run(
        [sys.executable, "-c", code, str(data_dir)], env=env, capture_output=True, text=True, check=False
    )
    if prepared.returncode != 0:
        raise RuntimeError(f"khoa prepare() failed:\n{prepared.stderr[-3000:]}")
    return Settings(
        host="127.0.0.1", port=port, data_dir=data_dir, workers=workers, audit_enabled=audit, dev=dev
    ).to_env()


def start_server(config: Config, workdir: Path) -> RunningServer:
    port = free_port()
    env = base_env()
    if config.kind == "moto":
        env["MOTO_ACCOUNT_ID"] = ACCOUNT_ID
        args = [*moto_command(), "-H", "127.0.0.1", "-p", str(port)]
        server = _spawn(config, args, env, port, workdir)
        _wait_ready(server, "/moto-api/")
        return server

    data_dir = Path(tempfile.mkdtemp(prefix=f"{config.name}-", dir=workdir))
    dropped: Callable[[], None] | None = None
    if config.database == "postgres":
        env["KHOA_DATABASE_URL"], dropped = postgres_database()
    # CPU claims of this server alone: the idle servers beside it must not hold the CPUs it could use.
    env["KHOA_CPU_CLAIM_DIR"] = str(data_dir / "cpu-claims")
    env.update(server_env_overrides())
    if config.affinity != "auto":
        env["KHOA_CPU_AFFINITY"] = config.affinity  # the twin differs whatever the experiment sets
    if not config.audit:
        env["KHOA_AUDIT"] = "0"  # read by `khoa server` (Settings.from_env); the others get to_env()
    if config.dev:
        env["KHOA_DEV"] = "1"  # likewise (`khoa server` also gets --dev below)
    if config.kind == "khoa-uvicorn":
        args = [
            sys.executable,
            "-m",
            "khoa",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--workers",
            str(config.workers),
            *(["--dev"] if config.dev else []),
        ]
    elif config.kind == "khoa-granian":
        granian = BIN / "granian"
        if not granian.exists():
            raise SkipConfig("granian is not installed (pip install granian)")
        env.update(prepare_khoa(data_dir, port, config.workers, env, config.audit, config.dev))
        args = [
            str(granian),
            "--interface",
            "asgi",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(config.workers),
            "--loop",
            "uvloop",
            "--http",
            "1",
            "--no-ws",
            "--log-level",
            "warning",
            "khoa.app:create_app",
        ]
    elif config.kind == "khoa-uvicorn-asyncio":
        # The same uvicorn settings as `khoa server`, but the standard-library event loop.
        env.update(prepare_khoa(data_dir, port, config.workers, env, config.audit, config.dev))
        args = [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(config.workers),
            "--loop",
            "asyncio",
            "--http",
            "httptools",
            "--lifespan",
            "on",
            "--no-access-log",
            "--no-server-header",
            "--log-level",
            "warning",
            "khoa.app:create_app",
        ]
    else:
        raise ValueError(config.kind)
    server = _spawn(config, args, env, port, workdir)
    server.data_dir = data_dir
    server.dropped = dropped
    _wait_ready(server, "/_khoa/health")
    return server


class SkipConfig(Exception):
    pass


def postgres_database() -> tuple[str, Callable[[], None]]:
    """A new database on BENCH_POSTGRES for one server, and what drops it afterwards."""
    try:
        import psycopg

        admin = psycopg.connect(BENCH_POSTGRES, autocommit=True, connect_timeout=3)
    except Exception as error:  # noqa: BLE001 - reported as a skipped configuration
        raise SkipConfig(f"PostgreSQL at {BENCH_POSTGRES} is not reachable: {error}") from None
    name = f"khoa_bench_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with contextlib.suppress(Exception):
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()

    base = BENCH_POSTGRES.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    return f"{base}/{name}", drop


def moto_command() -> list[str]:
    """How to start moto's server from the peers' environment (never from Khoa's: the test
    environment must not hold moto, and moto's dependencies must not move Khoa's)."""
    if not PEERS_PYTHON.exists():
        raise SkipConfig(
            f"moto's environment {PEERS} does not exist: `make bench` creates it "
            "(or set KHOA_BENCH_PEERS to a virtual environment with moto[server] installed)"
        )
    moto_server = PEERS / "bin" / "moto_server"
    return [str(moto_server)] if moto_server.exists() else [str(PEERS_PYTHON), "-m", "moto.server"]


# -- the benchmark --------------------------------------------------------------------------------
def aws_client(service: str, endpoint: str) -> Any:
    import boto3
    from botocore.config import Config as BotoConfig

    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
        config=BotoConfig(retries={"max_attempts": 1}),
    )


def secret_string() -> str:
    """A ~200-byte JSON credential, the kind of SecretString applications read at start-up."""
    value = {
        "engine": "postgres",
        "host": "orders-db.cluster-c9akciq32.eu-west-1.rds.amazonaws.com",
        "port": 5432,
        "dbname": "orders",
        "username": "orders_app",
        "password": "",
    }
    used = len(json.dumps(value, separators=(",", ":")))
    value["password"] = base64.b64encode(os.urandom(64)).decode()[: max(16, 200 - used)]
    return json.dumps(value, separators=(",", ":"))


def payloads(endpoint: str) -> dict[str, dict[str, Any]]:
    """Create a key, a secret and a SecureString parameter on the server; return the request bodies."""
    kms = aws_client("kms", endpoint)
    key_id = kms.create_key(Description="khoa bench")["KeyMetadata"]["KeyId"]
    plaintext = os.urandom(64)
    blob = kms.encrypt(KeyId=key_id, Plaintext=plaintext)["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == plaintext
    secret = secret_string()
    sm = aws_client("secretsmanager", endpoint)
    sm.create_secret(Name=SECRET_NAME, SecretString=secret)
    assert sm.get_secret_value(SecretId=SECRET_NAME)["SecretString"] == secret
    parameter = base64.b64encode(os.urandom(24)).decode()
    ssm = aws_client("ssm", endpoint)
    ssm.put_parameter(Name=PARAMETER_NAME, Value=parameter, Type="SecureString")
    got = ssm.get_parameter(Name=PARAMETER_NAME, WithDecryption=True)["Parameter"]
    assert got["Value"] == parameter and got["Type"] == "SecureString"
    return {
        "Encrypt": {"KeyId": key_id, "Plaintext": base64.b64encode(plaintext).decode()},
        "Decrypt": {"CiphertextBlob": base64.b64encode(blob).decode()},
        "GenerateDataKey": {"KeyId": key_id, "KeySpec": "AES_256"},
        "GetSecretValue": {"SecretId": SECRET_NAME},
        "GetParameter": {"Name": PARAMETER_NAME, "WithDecryption": True},
    }


@dataclass
class Row:
    operation: str
    config: Config
    result: WrkResult | None
    note: str = ""
    runs: list[WrkResult] = field(default_factory=list)  # every run, in order (audit on/off pairs)


def signed_script(server: RunningServer, operation: str, body: dict[str, Any], workdir: Path) -> Path:
    """Sign now (so warm-up plus one run stays far inside the 5-minute skew), check, write the script."""
    call = sign(server.endpoint, operation, body)
    check_once(server.endpoint, call)
    return write_script(call, workdir, f"{server.config.name}-{operation}")


def run_once(
    wrk: str, server: RunningServer, operation: str, body: dict[str, Any], workdir: Path
) -> WrkResult:
    script = signed_script(server, operation, body, workdir)
    return run_wrk(wrk, server.endpoint + "/", script, SECONDS, server.process.pid)


def warm_up(wrk: str, server: RunningServer, operation: str, body: dict[str, Any], workdir: Path) -> None:
    if WARMUP > 0:
        script = signed_script(server, operation, body, workdir)
        run_wrk(wrk, server.endpoint + "/", script, WARMUP, server.process.pid)


def best_row(server: RunningServer, operation: str, runs: list[WrkResult], workdir: Path) -> Row:
    result = max(runs, key=lambda r: r.rps)
    (workdir / f"{server.config.name}-{operation}.wrk.txt").write_text(result.raw)
    note = ""
    if result.non_2xx or result.errors:
        note = f"{result.non_2xx} non-2xx, {result.errors} socket errors/timeouts"
    log(
        f"{server.config.name:25} {operation:15} {result.rps:8.0f} req/s  p50 {result.p50_ms:7.2f} ms  "
        f"p99 {result.p99_ms:7.2f} ms  CPU: server {result.split()} "
        f"wrk {result.cores(result.wrk_cpu):.2f} other {result.cores(result.other_cpu):.2f}"
        + (f"  !! {note}" if note else "")
        + (f"  (best of {len(runs)})" if len(runs) > 1 else "")
    )
    if len(runs) > REPEAT:
        note = "; ".join(x for x in (note, f"best of {len(runs)} (alternate runs)") if x)
    return Row(operation, server.config, result, note, runs)


def measure(
    wrk: str,
    server: RunningServer,
    operations: list[str],
    workdir: Path,
    twins: tuple[RunningServer, RunningServer] | None = None,
    pinning: tuple[RunningServer, RunningServer] | None = None,
) -> list[Row]:
    """Measure each operation on ``server``; with the --dev audit ``twins`` (on, off) and the
    ``pinning`` twins (auto, off), measure AUDIT_OPERATION on each pair alternately."""
    rows = []
    bodies = payloads(server.endpoint)
    for operation in operations:
        body = bodies[operation]
        warm_up(wrk, server, operation, body, workdir)
        runs = [run_once(wrk, server, operation, body, workdir) for _ in range(REPEAT)]
        rows.append(best_row(server, operation, runs, workdir))
    if AUDIT_OPERATION not in operations:
        return rows
    if twins is not None:
        rows += alternate(wrk, twins, max(AUDIT_AB, REPEAT), workdir)
    if pinning is not None:
        pinning_rows = alternate(wrk, pinning, max(AFFINITY_AB, REPEAT), workdir)
        for row, twin in zip(pinning_rows, pinning, strict=True):
            row.note = "; ".join(x for x in (row.note, placement(twin)) if x)
        rows += pinning_rows
    return rows


def alternate(wrk: str, twins: tuple[RunningServer, RunningServer], rounds: int, workdir: Path) -> list[Row]:
    """AUDIT_OPERATION on both ``twins`` alternately (a, b, b, a, ...), so the pair shares the same
    minute and machine load."""
    sides = [(twin, payloads(twin.endpoint)[AUDIT_OPERATION]) for twin in twins]
    for side, side_body in sides:
        warm_up(wrk, side, AUDIT_OPERATION, side_body, workdir)
    results: dict[str, list[WrkResult]] = {twin.config.name: [] for twin in twins}
    for round_ in range(rounds):
        for side, side_body in sides if round_ % 2 == 0 else sides[::-1]:
            result = run_once(wrk, side, AUDIT_OPERATION, side_body, workdir)
            results[side.config.name].append(result)
            log(f"  round {round_ + 1}: {side.config.name} {result.rps:.0f} req/s")
    return [best_row(twin, AUDIT_OPERATION, results[twin.config.name], workdir) for twin in twins]


def placement(server: RunningServer) -> str:
    """Where the server's workers ran: each on a CPU of its own, or left to the scheduler."""
    try:
        masks = [
            sorted(os.sched_getaffinity(pid))
            for pid in server.worker_pids()
            if b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()  # multiprocessing's
        ]
    except (AttributeError, OSError):
        return ""
    if masks and all(len(mask) == 1 for mask in masks):
        return "workers on CPUs " + ", ".join(str(mask[0]) for mask in sorted(masks))
    return "workers unpinned"


def package_versions() -> str:
    """Khoa's side from this environment, the peers' from theirs (each reports its own)."""
    from importlib import metadata

    found = []
    for name in ("khoa", "uvicorn", "uvloop", "httptools", "granian", "sqlalchemy"):
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return ", ".join([*found, *peer_versions()])


def peer_versions() -> list[str]:
    """`name version` for each of PEER_PACKAGES installed in the peers' environment."""
    if not PEERS_PYTHON.exists():
        return []
    code = (
        "import sys\nfrom importlib import metadata\n"
        "for name in sys.argv[1:]:\n"
        "    try:\n        print(name, metadata.version(name))\n"
        "    except metadata.PackageNotFoundError:\n        pass\n"
    )
    out = subprocess.run(
        [str(PEERS_PYTHON), "-c", code, *PEER_PACKAGES], capture_output=True, text=True, check=False
    )
    return [line for line in out.stdout.splitlines() if line.strip()]


def fmt_ms(value: float) -> str:
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


def audit_cost_lines(rows: list[Row]) -> list[str]:
    """What the audit trail costs: each audit-off row against its audit-on sibling."""
    on = {
        (r.config.kind, r.config.workers, r.config.dev): r
        for r in rows
        if r.operation == AUDIT_OPERATION and r.config.audit and r.config.kind != "moto" and r.result
    }
    lines = []
    for row in rows:
        if row.config.audit or row.operation != AUDIT_OPERATION or row.result is None:
            continue
        sibling = on.get((row.config.kind, row.config.workers, row.config.dev))
        if sibling is None or sibling.result is None:
            continue
        with_audit, off = sibling.result, row.result
        cost = 100 * (1 - with_audit.rps / off.rps) if off.rps else 0.0
        verdict = "within" if cost <= 20 else "**over**"
        # Each round measures both sides back to back: its pair shares the machine's state of that
        # minute, so the median pair is the estimate least moved by other work on the machine.
        paired = sorted(
            100 * (1 - a.rps / b.rps) for a, b in zip(sibling.runs, row.runs, strict=False) if b.rps
        )
        spread = (
            f"{statistics.median(paired):.1f}% ({paired[0]:.0f}% to {paired[-1]:.0f}%)" if paired else "-"
        )
        lines.append(
            f"| {sibling.config.label} | {with_audit.rps:,.0f} | {off.rps:,.0f} "
            f"| {cost:.1f}% ({verdict} the 20% budget) | {spread} "
            f"| {fmt_ms(with_audit.p50_ms)} / {fmt_ms(off.p50_ms)} "
            f"| {fmt_ms(with_audit.p99_ms)} / {fmt_ms(off.p99_ms)} |"
        )
    if not lines:
        return []
    rounds = max(AUDIT_AB, REPEAT)
    return [
        "",
        f"Audit trail cost on {AUDIT_OPERATION} (the audit-on and audit-off servers measured "
        f"alternately, {rounds} runs each; cost = throughput lost with the trail on, from the best run "
        "of each side, and the median (and range) of the costs of the rounds' back-to-back pairs):",
        "",
        "| Server | req/s audit on | req/s audit off | cost (best runs) | cost (median pair, range) "
        "| p50 ms on / off | p99 ms on / off |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *lines,
    ]


def pinning_lines(rows: list[Row]) -> list[str]:
    """What CPU pinning is worth: each pinning-off twin against its pinning-auto sibling."""
    on = {r.config.name: r for r in rows if r.config.name.endswith("-pinning-on") and r.result}
    lines = []
    for row in rows:
        sibling = on.get(row.config.name.removesuffix("-pinning-off") + "-pinning-on")
        if row.config.affinity != "off" or row.result is None or sibling is None or sibling.result is None:
            continue
        pinned, off = sibling.result, row.result
        ratio = pinned.rps / off.rps if off.rps else 0.0
        paired = sorted(a.rps / b.rps for a, b in zip(sibling.runs, row.runs, strict=False) if b.rps)
        spread = (
            f"{statistics.median(paired):.2f}x ({paired[0]:.2f}x to {paired[-1]:.2f}x)" if paired else "-"
        )
        label = sibling.config.label.removesuffix(", pinning auto")
        where = "; ".join(x for x in sibling.note.split("; ") if x.startswith("workers")) or "-"
        lines.append(
            f"| {label} | {pinned.rps:,.0f} | {off.rps:,.0f} | {ratio:.2f}x | {spread} "
            f"| {fmt_ms(pinned.p50_ms)} / {fmt_ms(off.p50_ms)} "
            f"| {fmt_ms(pinned.p99_ms)} / {fmt_ms(off.p99_ms)} | {where} |"
        )
    if not lines:
        return []
    rounds = max(AFFINITY_AB, REPEAT)
    return [
        "",
        f"CPU pinning on {AUDIT_OPERATION} (as shipped, `KHOA_CPU_AFFINITY=auto` against `off`, measured "
        f"alternately, {rounds} runs each; ratio = auto / off, from the best run of each side, and the "
        "median (and range) of the rounds' back-to-back pairs; `auto` leaves workers unpinned where "
        "pinning is unsafe, see docs/architecture.md):",
        "",
        "| Server | req/s auto | req/s off | ratio (best runs) | ratio (median pair, range) "
        "| p50 ms auto / off | p99 ms auto / off | placement (auto) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
        *lines,
    ]


def render(rows: list[Row], wrk_name: str, started: datetime, rss: dict[str, float]) -> str:
    moto = {r.operation: r.result.rps for r in rows if r.config.kind == "moto" and r.result}
    cpu_model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    best_of = f", best of {REPEAT} runs" if REPEAT > 1 else ""
    out = [
        "# Khoa benchmark: KMS, Secrets Manager and SSM over awsJson1_1, beside moto",
        "",
        f"- run: {started.strftime('%Y-%m-%d %H:%M UTC')}, {SECONDS} s per operation after "
        f"{WARMUP} s warm-up{best_of}, {CONNECTIONS} connections, {wrk_name} with {THREADS} "
        "threads replaying one "
        "pre-signed SigV4 request per operation, signed for its own service (signature checked by "
        "Khoa; moto does not check). GetSecretValue reads a ~200-byte SecretString by name; "
        "GetParameter reads a SecureString with WithDecryption=true",
        f"- machine: {os.cpu_count()} CPUs ({cpu_model}), Python {platform.python_version()}; "
        "**the load generator shares these cores with the server**. CPU columns: cores busy on "
        "average during the run (1.00 = one core) for the server's processes (split per busy "
        "process: uneven means the keep-alive connections landed unevenly on the workers), wrk, "
        "and everything else on the machine; a high `CPU other` means other work competed",
        "- Khoa: SQLite (WAL, synchronous=FULL) in a fresh temp data dir, file seal backend, SigV4 on, "
        "default settings (audit trail on: every answer waits for its event's commit) except the "
        "the --dev twins of the audit cost table below (`KHOA_AUDIT=0` is refused outside --dev; "
        "the audit-on and audit-off twins both run --dev and are measured alternately)",
        f"- versions: {package_versions()}",
        *(
            [f"- experiment: Khoa servers ran with {os.environ['KHOA_BENCH_SERVER_ENV']}"]
            if server_env_overrides()
            else []
        ),
        "",
        "| Operation | Server | req/s | p50 ms | p99 ms | x moto "
        "| CPU server | CPU wrk | CPU other | notes |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for operation in OPERATIONS:
        for row in rows:
            if row.operation != operation:
                continue
            if row.result is None:
                out.append(f"| {operation} | {row.config.label} | - | - | - | - | - | - | - | {row.note} |")
                continue
            r = row.result
            ratio = f"{r.rps / moto[operation]:.1f}x" if moto.get(operation) else "-"
            out.append(
                f"| {operation} | {row.config.label} | {r.rps:,.0f} | {fmt_ms(r.p50_ms)} | "
                f"{fmt_ms(r.p99_ms)} | {ratio} | {r.split()} | "
                f"{r.cores(r.wrk_cpu):.2f} | {r.cores(r.other_cpu):.2f} | {row.note} |"
            )
    out += audit_cost_lines(rows)
    out += pinning_lines(rows)
    if rss:
        out += [
            "",
            "RSS after the run (whole process tree): "
            + ", ".join(f"{k} {v:.0f} MiB" for k, v in rss.items()),
        ]
    out += target_lines(rows)
    out += [
        "",
        "Targets (design.md section 7): GetSecretValue, Decrypt and GetParameter (SecureString) "
        ">= 10,000 req/s with p99 <= 20 ms on SQLite, >= 7,500 req/s with p99 <= 30 ms on PostgreSQL, "
        ">= 7x moto, SigV4, authorisation and the audit trail on. Issue 5: the audit trail costs at "
        "most 20% of GetSecretValue throughput.",
        "",
    ]
    return "\n".join(out)


# design.md section 7: (req/s at least, p99 ms at most) by database, for TARGET_OPERATIONS.
TARGETS = {"sqlite": (10_000, 20.0), "postgres": (7_500, 30.0)}
TARGET_OPERATIONS = ("GetSecretValue", "Decrypt", "GetParameter")


def target_lines(rows: list[Row]) -> list[str]:
    """Each shipped Khoa row of a target operation (audit on, not --dev, pinned as shipped) against
    design.md's throughput and tail targets for its database."""
    lines = []
    for row in rows:
        config = row.config
        shipped = config.kind != "moto" and config.audit and not config.dev and config.affinity == "auto"
        if not shipped or row.operation not in TARGET_OPERATIONS or row.result is None:
            continue
        least, most = TARGETS[config.database]
        result = row.result
        met = result.rps >= least and result.p99_ms <= most
        lines.append(
            f"| {row.operation} | {config.label} | {result.rps:,.0f} (>= {least:,}) "
            f"| {fmt_ms(result.p99_ms)} (<= {most:g}) | {'met' if met else '**not met**'} |"
        )
    if not lines:
        return []
    return [
        "",
        "Against the targets (each row's best run):",
        "",
        "| Operation | Server | req/s | p99 ms | target |",
        "|---|---|---:|---:|---|",
        *lines,
    ]


# -- profiling (KHOA_BENCH_PROFILE=1) -------------------------------------------------------------
def _frame_name(frame: str) -> str:
    """``func (path/file.py:123)`` -> ``func (path/file.py)``: aggregate a function's lines."""
    name, sep, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0].rstrip(')')})" if sep else frame


def summarize_collapsed(path: Path, top: int = 30) -> str:
    """Inclusive and self shares per function of the event-loop thread's samples, from py-spy's
    collapsed (raw) output. Threads started with ``threading`` (the audit writer, executors) are
    counted apart: an idle pool thread is sampled as if it were busy."""
    inclusive: dict[str, int] = defaultdict(int)
    own: dict[str, int] = defaultdict(int)
    threads: dict[str, int] = defaultdict(int)
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack.strip() or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(f) for f in stack.split(";") if f]
        if frames[0].startswith("Thread._bootstrap"):
            threads[frames[-1]] += count
            continue
        total += count
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
    if not total:
        return "(no samples)"
    lines = [f"{total} samples of the main (event loop) thread", "", "inclusive  self   function"]
    # Frames in (nearly) every sample are the process's entry points (runpy, typer, uvicorn.run).
    ranked = [kv for kv in sorted(inclusive.items(), key=lambda kv: -kv[1]) if kv[1] < 0.995 * total]
    for frame, count in ranked[:top]:
        lines.append(f"{100 * count / total:6.1f}%  {100 * own.get(frame, 0) / total:5.1f}%  {frame}")
    lines += ["", "top self time:"]
    for frame, count in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"{100 * count / total:6.1f}%  {frame}")
    if threads:
        lines += ["", "other threads (samples, by innermost frame; idle waits included):"]
        for frame, count in sorted(threads.items(), key=lambda kv: -kv[1])[:8]:
            lines.append(f"{count:8d}  {frame}")
    return "\n".join(lines)


def profile(wrk: str, workdir: Path, operations: list[str]) -> None:
    py_spy = BIN / "py-spy"
    if not py_spy.exists() and not shutil.which("py-spy"):
        log("KHOA_BENCH_PROFILE=1 needs py-spy (pip install py-spy): skipping the profile")
        return
    py_spy_cmd = str(py_spy if py_spy.exists() else shutil.which("py-spy"))
    config = next(c for c in CONFIGS if c.name == "khoa-uvicorn-w1")
    server = start_server(config, workdir)
    try:
        bodies = payloads(server.endpoint)
        for operation in operations:
            call = sign(server.endpoint, operation, bodies[operation])
            check_once(server.endpoint, call)
            script = write_script(call, workdir, f"profile-{operation}")
            run_wrk(wrk, server.endpoint + "/", script, WARMUP or 2, server.process.pid)
            raw = RESULTS / f"profile-{operation}.collapsed"
            spy = subprocess.Popen(
                [
                    py_spy_cmd,
                    "record",
                    "--pid",
                    str(server.process.pid),
                    "--duration",
                    str(SECONDS),
                    "--rate",
                    os.environ.get("KHOA_BENCH_PYSPY_RATE", "100"),
                    "--format",
                    "raw",
                    "--output",
                    str(raw),
                    *os.environ.get("KHOA_BENCH_PYSPY_ARGS", "").split(),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            time.sleep(0.5)
            result = run_wrk(wrk, server.endpoint + "/", script, SECONDS, server.process.pid)
            _, err = spy.communicate(timeout=SECONDS + 60)
            if spy.returncode != 0 or not raw.exists():
                log(f"py-spy failed ({spy.returncode}): {err.decode(errors='replace')[-500:]}")
                return
            summary = (
                f"# {operation} on {config.label} under py-spy: {result.rps:.0f} req/s while sampled\n\n"
                + summarize_collapsed(raw)
            )
            (RESULTS / f"profile-{operation}.txt").write_text(summary + "\n")
            print(f"\n## Profile: {operation}\n\n```\n{summary}\n```")
    finally:
        server.stop()


def start_twins(
    pair: tuple[Config, Config], workdir: Path, rows: list[Row], started: list[RunningServer]
) -> tuple[RunningServer, RunningServer] | None:
    """Start both servers of a twin pair (added to ``started``, to be stopped); None unless both ran."""
    running: list[RunningServer] = []
    for twin_config in pair:
        try:
            running.append(start_server(twin_config, workdir))
        except (RuntimeError, subprocess.CalledProcessError) as error:
            log(f"{twin_config.name} failed to start: {error}")
            rows.append(Row(AUDIT_OPERATION, twin_config, None, "failed to start"))
    started += running
    return (running[0], running[1]) if len(running) == 2 else None


def main() -> int:
    wrk = ensure_wrk()
    wrk_name = wrk_version(wrk)
    selected = [s.strip() for s in os.environ.get("KHOA_BENCH_SERVERS", "").split(",") if s.strip()]
    configs = [c for c in CONFIGS if c.name in selected or (not selected and c.default)]
    unknown = set(selected) - {c.name for c in CONFIGS}
    if unknown:
        sys.exit(
            f"bench: unknown KHOA_BENCH_SERVERS entries {sorted(unknown)}; known: {[c.name for c in CONFIGS]}"
        )
    operations = [o.strip() for o in os.environ.get("KHOA_BENCH_OPS", "").split(",") if o.strip()] or list(
        OPERATIONS
    )
    if set(operations) - set(OPERATIONS):
        sys.exit(f"bench: KHOA_BENCH_OPS must name operations from {OPERATIONS}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    rows: list[Row] = []
    rss: dict[str, float] = {}
    profile_mode = os.environ.get("KHOA_BENCH_PROFILE", "").strip().lower()
    with tempfile.TemporaryDirectory(prefix="khoa-bench-") as tmp:
        workdir = Path(tmp)
        if profile_mode == "only":
            profile(wrk, workdir, operations)
            return 0
        for config in configs:
            log(f"starting {config.name}")
            try:
                server = start_server(config, workdir)
            except SkipConfig as skip:
                log(f"skipping {config.name}: {skip}")
                rows += [Row(op, config, None, f"skipped: {skip}") for op in operations]
                continue
            except (RuntimeError, subprocess.CalledProcessError) as error:
                log(f"{config.name} failed to start: {error}")
                rows += [Row(op, config, None, "failed to start") for op in operations]
                continue
            # The twins run beside SQLite configurations only (PostgreSQL's would show the same).
            with_twins = (
                config.kind != "moto" and config.database == "sqlite" and AUDIT_OPERATION in operations
            )
            started_twins: list[RunningServer] = []
            twins = (
                start_twins(config.audit_twins(), workdir, rows, started_twins)
                if with_twins and AUDIT_AB
                else None
            )
            pinning = (
                start_twins(config.affinity_twins(), workdir, rows, started_twins)
                if with_twins and AFFINITY_AB
                else None
            )
            try:
                rows += measure(wrk, server, operations, workdir, twins, pinning)
                rss[config.name] = tree_rss_mib(server.process.pid)
            except (RuntimeError, OSError, AssertionError) as error:
                log(f"{config.name} failed: {error}")
                rows += [Row(op, config, None, f"failed: {str(error)[:80]}") for op in operations]
                for twin in started_twins:
                    rows.append(Row(AUDIT_OPERATION, twin.config, None, f"failed: {str(error)[:80]}"))
            finally:
                for running in (server, *started_twins):
                    if running is None:
                        continue
                    running.stop()
                    for wrk_log in workdir.glob(f"{running.config.name}-*.wrk.txt"):
                        shutil.copy(wrk_log, RESULTS / wrk_log.name)
                    if running.log_path.exists():
                        shutil.copy(running.log_path, RESULTS / running.log_path.name)
        report = render(rows, wrk_name, started, rss)
        output = Path(os.environ.get("KHOA_BENCH_OUTPUT", RESULTS / "latest.md"))
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(report)
        print(report)
        log(f"wrote {output}")
        if profile_mode not in ("", "0"):
            profile(wrk, workdir, operations)
    return 0 if all(r.result is not None for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
