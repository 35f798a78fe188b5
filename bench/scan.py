"""``khoa scan`` on a large repository: time and requests to the server.

A git repository of 10,000 files and 1,000 commits is generated with ``git fast-import`` (the first
commit adds 9,001 files, each later one adds a file and rewrites another), with code and config
files from templates: a shared vocabulary plus a few names unique to each file, as real code has.
A handful of values Khoa holds are planted: some still in the working tree, some only in history
(added by one commit, removed by the next). A fresh Khoa server (SQLite, SigV4 on, audit on) holds
them; ``khoa scan`` runs as a subprocess, as an operator runs it, once on the working tree and once
with ``--history``. Reported: wall time, files and commits read, distinct candidates sent, HTTP
requests to the server (retries after throttling included), throttled answers, and the findings by
status (every planted value must be found, or the run fails). Report: bench/results/scan.md.

CheckLeakedValues is rate-limited per principal (a token bucket: 20 calls, then 2 per second), so
requests — one per 100 distinct candidates — bound the time of a large scan.

    KHOA_SCAN_FILES     files in the repository (default 10000)
    KHOA_SCAN_COMMITS   commits (default 1000)
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from tests.support.server import ACCESS_KEY_ID, SECRET_ACCESS_KEY, KhoaServer  # noqa: E402

RESULTS = BENCH / "results"
SERVICES = [
    f"{a}{b}" for a in ("billing", "orders", "search", "users", "media") for b in ("", "-api", "-worker")
]
WORDS = [
    *("request", "response", "handler", "service", "timeout", "settings", "database", "connection"),
    *("payload", "customer", "invoice", "shipment", "inventory", "account", "profile", "session"),
    *("gateway", "resolver", "scheduler", "dispatcher", "serializer", "validator", "repository"),
    *("transaction", "processor", "notification"),
]


def python_file(rng: random.Random, n: int) -> str:
    service, word, other = rng.choice(SERVICES), rng.choice(WORDS), rng.choice(WORDS)
    return (
        f'"""The {word} {other} for {service}."""\n\n'
        "from __future__ import annotations\n\n"
        "import logging\n"
        "from app.core import settings\n\n"
        f'SERVICE_NAME = "{service}"\n'
        f"TIMEOUT_SECONDS = {rng.randint(1, 120)}\n"
        f"log = logging.getLogger(__name__)\n\n\n"
        f"def {word}_{other}_{n:05d}(event: dict) -> dict:\n"
        f'    log.info("handling %s", event.get("{word}"))\n'
        f'    return settings.lookup("{service}.{other}")\n'
    )


def config_file(rng: random.Random, n: int) -> str:
    service = rng.choice(SERVICES)
    return (
        f"service: {service}\n"
        f"replicas: {rng.randint(1, 9)}\n"
        f"image: registry.internal/{service}:{rng.randint(1, 400)}\n"
        f"queue: {rng.choice(WORDS)}-events-{n:05d}\n"
        f"log_level: {rng.choice(('info', 'debug', 'warning'))}\n"
    )


def content(rng: random.Random, n: int) -> tuple[str, str]:
    if n % 3 == 2:
        return f"deploy/{rng.choice(SERVICES)}/config-{n:05d}.yaml", config_file(rng, n)
    return f"src/{rng.choice(SERVICES).replace('-', '_')}/module_{n:05d}.py", python_file(rng, n)


def generate(repo: Path, files: int, commits: int, planted: dict[str, str]) -> dict[str, str]:
    """The repository; returns where each planted value went ("tree" or "history")."""
    rng = random.Random(15)
    initial = files - (commits - 1)
    paths: list[str] = []

    def data(text: str) -> bytes:
        raw = text.encode()
        return b"data %d\n" % len(raw) + raw + b"\n"

    def put(path: str, text: str) -> bytes:
        return b"M 100644 inline " + path.encode() + b"\n" + data(text)

    where: dict[str, str] = {}
    plant = list(planted.items())
    tree_plants, history_plants = plant[: len(plant) // 2], plant[len(plant) // 2 :]
    stream: list[bytes] = []
    cleanup: int | None = None  # a file holding a planted value, to rewrite in the next commit
    for c in range(commits):
        ops: list[bytes] = []
        if c == 0:
            for n in range(initial):
                path, text = content(rng, n)
                if n < len(tree_plants):
                    name, value = tree_plants[n]
                    text += f'{name.upper().replace("-", "_")} = "{value}"\n'
                    where[name] = "tree"
                paths.append(path)
                ops.append(put(path, text))
        else:
            path, text = content(rng, initial + c - 1)
            paths.append(path)
            ops.append(put(path, text))
            victim = cleanup if cleanup is not None else rng.randrange(len(tree_plants), len(paths) - 1)
            _, rewritten = content(rng, victim)
            cleanup = None
            k = c // 2 - 1  # commits 2, 4, 6, ... plant; 3, 5, 7, ... clean up
            if c % 2 == 0 and 0 <= k < len(history_plants):  # added here, removed by the next commit
                name, value = history_plants[k]
                rewritten += f"# temporary: {name}={value}\n"
                where[name] = "history"
                cleanup = victim
            ops.append(put(paths[victim], rewritten))
        stream.append(
            b"commit refs/heads/main\n"
            + f"committer Bench <bench@example.com> {1_700_000_000 + c * 60} +0000\n".encode()
            + data(f"commit {c}")
            + b"".join(ops)
        )
    repo.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, check=True)
    subprocess.run(["git", "fast-import", "--quiet"], cwd=repo, input=b"".join(stream), check=True)
    subprocess.run(["git", "reset", "--hard", "-q"], cwd=repo, check=True)
    return where


def plant_values(server: KhoaServer) -> tuple[dict[str, str], dict[str, str]]:
    """Values Khoa holds: name -> value, and name -> the ARN a finding must name."""
    sm, ssm, iam = server.client("secretsmanager"), server.client("ssm"), server.client("iam")
    rng = random.Random(7)
    values: dict[str, str] = {}
    arns: dict[str, str] = {}
    for i in range(4):
        value = "".join(
            rng.choice("abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(24)
        )
        arn = sm.create_secret(Name=f"bench/scan/db-{i}-{time.time_ns()}", SecretString=value)["ARN"]
        values[f"db-password-{i}"], arns[f"db-password-{i}"] = value, arn
    for i in range(2):
        name = f"/bench/scan/token-{i}-{time.time_ns()}"
        value = f"tok-{rng.getrandbits(96):024x}"
        ssm.put_parameter(Name=name, Value=value, Type="SecureString")
        values[f"api-token-{i}"], arns[f"api-token-{i}"] = (
            value,
            ssm.get_parameter(Name=name)["Parameter"]["ARN"],
        )
    user = iam.create_user(UserName=f"bench-scan-{time.time_ns()}")["User"]
    for i in range(2):
        key = iam.create_access_key(UserName=user["UserName"])["AccessKey"]
        values[f"aws-secret-{i}"], arns[f"aws-secret-{i}"] = key["SecretAccessKey"], user["Arn"]
    return values, arns


def run_scan(server: KhoaServer, repo: Path, *extra: str) -> tuple[float, dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KHOA_"))}
    env.update(
        {
            "AWS_ENDPOINT_URL": server.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }
    )
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "khoa", "scan", str(repo), "--format", "json", *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    elapsed = time.perf_counter() - start
    if done.returncode not in (0, 1):
        raise SystemExit(f"khoa scan failed ({done.returncode}): {done.stderr.strip()}")
    result: dict[str, Any] = json.loads(done.stdout)
    return elapsed, result


def main() -> int:
    files = int(os.environ.get("KHOA_SCAN_FILES", "10000"))
    commits = int(os.environ.get("KHOA_SCAN_COMMITS", "1000"))
    RESULTS.mkdir(exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="khoa-scan-bench-") as tmp:
        server = KhoaServer(Path(tmp) / "data", harness=False).start()
        try:
            values, arns = plant_values(server)
            repo = Path(tmp) / "repo"
            started = time.perf_counter()
            where = generate(repo, files, commits, values)
            generated = time.perf_counter() - started
            print(f"generated {files:,} files, {commits:,} commits in {generated:.1f} s", file=sys.stderr)
            for label, extra in (("working tree", ()), ("--history", ("--history",))):
                elapsed, result = run_scan(server, repo, *extra)
                summary = result["summary"]
                found = {f["resource"] for f in result["findings"] if f["status"] == "live"}
                expected = {arns[name] for name, place in where.items() if place == "tree" or extra}
                missing = expected - found
                if missing:
                    print(f"{label}: planted values not found: {sorted(missing)}", file=sys.stderr)
                    return 1
                planted_here = sum(1 for place in where.values() if place == "tree" or extra)
                rows.append((label, elapsed, summary, planted_here))
                print(f"{label}: {elapsed:.1f} s, {summary['requests']} requests", file=sys.stderr)
        finally:
            server.stop()
    lines = [
        "# khoa scan on a generated repository",
        "",
        f"{files:,} files, {commits:,} commits (git fast-import); a fresh server (SQLite, SigV4 on, "
        "audit on); `khoa scan` as a subprocess (startup included). CheckLeakedValues takes up to 100 "
        "distinct candidates per call and is rate-limited per principal (20 calls, then 2 per second).",
        "",
        "| scan | seconds | files | commits | distinct candidates | requests | throttled | live findings "
        "(values planted) | former | pattern |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, elapsed, s, planted_count in rows:
        lines.append(
            f"| {label} | {elapsed:.1f} | {s['files']:,} | {s['commits']:,} | {s['candidates']:,} | "
            f"{s['requests']:,} | {s['throttled']:,} | {s['live']} ({planted_count}) | {s['former']} | "
            f"{s['pattern']} |"
        )
    report = "\n".join(lines) + "\n"
    (RESULTS / "scan.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
