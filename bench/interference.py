"""Slow calls beside fast ones: a fast call's p99 while CPU-heavy calls run, against its idle p99.

Issue 13's goal: CPU-heavy or blocking work (RSA key generation above all) never stalls other
requests — GetSecretValue's p99 while RSA-4096 ``CreateKey`` calls run stays within 2x of its idle
p99. For each configuration (as shipped, SQLite and PostgreSQL) this starts a server, measures
GetSecretValue with wrk at a light load (KHOA_INTERFERENCE_CONNECTIONS, default 8) while nothing
else runs, then again while KHOA_INTERFERENCE_SLOW threads (default 2) call CreateKey with
KeySpec=RSA_4096 back to back, and reports both p99s and their ratio.

    KHOA_INTERFERENCE_SECONDS      measured seconds per run (default 10)
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import run as bench  # noqa: E402

SECONDS = bench.env_int("KHOA_INTERFERENCE_SECONDS", 10)
CONNECTIONS = bench.env_int("KHOA_INTERFERENCE_CONNECTIONS", 8)
SLOW_THREADS = bench.env_int("KHOA_INTERFERENCE_SLOW", 2)
CONFIGS = [c for c in bench.CONFIGS if c.name in ("khoa-uvicorn-w1", "khoa-uvicorn-w2-postgres")]


def p99_ms(wrk: str, script: Path, endpoint: str) -> tuple[float, float]:
    """(p99 ms, req/s) of GetSecretValue replayed by wrk for SECONDS."""
    args = [wrk, "-t1", f"-c{CONNECTIONS}", f"-d{SECONDS}s", "--latency", "-s", str(script), endpoint + "/"]
    done = subprocess.run(args, capture_output=True, text=True, check=True)
    line = next(x for x in done.stdout.splitlines() if x.startswith("KHOA_BENCH_RESULT "))
    data = json.loads(line.split(" ", 1)[1])
    return data["p99_us"] / 1000, data["requests"] / (data["duration_us"] / 1e6)


def measure(wrk: str, config: bench.Config, workdir: Path) -> str:
    server = bench.start_server(config, workdir)
    try:
        body = bench.payloads(server.endpoint)["GetSecretValue"]
        script = bench.signed_script(server, "GetSecretValue", body, workdir)
        p99_ms(wrk, script, server.endpoint)  # warm-up
        idle, idle_rps = p99_ms(wrk, script, server.endpoint)
        stop = threading.Event()
        made = [0]

        def slow() -> None:
            kms = bench.aws_client("kms", server.endpoint)
            while not stop.is_set():
                kms.create_key(KeySpec="RSA_4096", KeyUsage="SIGN_VERIFY")
                made[0] += 1

        threads = [threading.Thread(target=slow, daemon=True) for _ in range(SLOW_THREADS)]
        for thread in threads:
            thread.start()
        try:
            script = bench.signed_script(server, "GetSecretValue", body, workdir)
            busy, busy_rps = p99_ms(wrk, script, server.endpoint)
        finally:
            stop.set()
            for thread in threads:
                thread.join(60)
        ratio = busy / idle if idle else float("inf")
        verdict = "meets" if ratio <= 2.0 else "misses"
        bench.log(f"{config.name}: p99 idle {idle:.2f} ms, busy {busy:.2f} ms ({ratio:.2f}x; {made[0]} keys)")
        return (
            f"| {config.label} | {idle:.2f} ({idle_rps:,.0f} req/s) | {busy:.2f} ({busy_rps:,.0f} req/s) "
            f"| {made[0] / SECONDS:.1f}/s | {ratio:.2f}x ({verdict} <= 2x) |"
        )
    finally:
        server.stop()


def main() -> int:
    wrk = bench.ensure_wrk()
    lines = [
        f"GetSecretValue p99 at {CONNECTIONS} connections, idle vs while {SLOW_THREADS} clients create "
        f"RSA-4096 keys back to back ({SECONDS} s runs)",
        "",
        "| Server | p99 ms idle | p99 ms with slow calls | RSA-4096 CreateKey | ratio |",
        "| --- | --- | --- | --- | --- |",
    ]
    with tempfile.TemporaryDirectory(prefix="khoa-interference-") as tmp:
        for config in CONFIGS:
            try:
                lines.append(measure(wrk, config, Path(tmp)))
            except bench.SkipConfig as skip:
                lines.append(f"| {config.label} | skipped: {skip} | | | |")
    report = "\n".join(lines) + "\n"
    bench.RESULTS.mkdir(parents=True, exist_ok=True)
    (bench.RESULTS / "interference.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
