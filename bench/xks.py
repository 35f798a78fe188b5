"""Encrypt and Decrypt on a key in an external key store (XKS) beside a Khoa key.

A fresh Khoa server (SQLite, SigV4 on, audit on) and an XKS proxy: the in-process fake proxy of the
tests (tests/support/xks.py: SigV4 verification and AES-GCM, no HSM), or a running proxy given by
``KHOA_BENCH_XKS_ENDPOINT`` (with ``KHOA_BENCH_XKS_PATH``, ``KHOA_BENCH_XKS_ACCESS_KEY_ID``,
``KHOA_BENCH_XKS_SECRET`` and ``KHOA_BENCH_XKS_KEY_ID``, e.g. ``khoa xks-proxy`` on SoftHSM2).
``KHOA_BENCH_XKS_THREADS`` clients (default 4) each call for ``KHOA_BENCH_XKS_SECONDS`` (default 5)
per operation and key. Reported: requests per second and p50/p99 latency; an XKS key pays one proxy
round trip per call on top of Khoa's own work. Report: bench/results/xks.md.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from botocore.exceptions import ClientError  # noqa: E402
from tests.support.server import KhoaServer  # noqa: E402
from tests.support.xks import PATH, FakeXksProxy  # noqa: E402

RESULTS = BENCH / "results"
THREADS = int(os.environ.get("KHOA_BENCH_XKS_THREADS", "4"))
SECONDS = float(os.environ.get("KHOA_BENCH_XKS_SECONDS", "5"))
PLAINTEXT = b"x" * 256


def run(server: KhoaServer, call: str, args: dict[str, Any]) -> tuple[float, float, float, int]:
    """(requests/s, p50 ms, p99 ms, errors) of ``call`` from THREADS clients for SECONDS."""
    clients = [server.client("kms") for _ in range(THREADS)]
    samples: list[list[float]] = [[] for _ in clients]
    errors = [0] * THREADS
    stop = time.monotonic() + SECONDS

    def work(n: int) -> None:
        method = getattr(clients[n], call)
        while time.monotonic() < stop:
            started = time.perf_counter()
            try:
                method(**args)
            except ClientError:  # counted, reported: a bench must finish
                errors[n] += 1
            samples[n].append(time.perf_counter() - started)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(THREADS)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - began
    flat = sorted(s for part in samples for s in part)
    p99 = flat[min(len(flat) - 1, int(len(flat) * 0.99))]
    return len(flat) / elapsed, statistics.median(flat) * 1000, p99 * 1000, sum(errors)


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="khoa-bench-xks-"))
    server = KhoaServer(workdir / "data").start()
    fake: FakeXksProxy | None = None
    try:
        kms = server.client("kms")
        endpoint = os.environ.get("KHOA_BENCH_XKS_ENDPOINT")
        if endpoint:
            path = os.environ.get("KHOA_BENCH_XKS_PATH", PATH)
            access_key_id = os.environ["KHOA_BENCH_XKS_ACCESS_KEY_ID"]
            secret = os.environ["KHOA_BENCH_XKS_SECRET"]
            external_id = os.environ["KHOA_BENCH_XKS_KEY_ID"]
            proxy_name = f"XKS proxy at {endpoint}"
        else:
            fake = FakeXksProxy().start()
            endpoint, path, access_key_id, secret = fake.endpoint, PATH, fake.access_key_id, fake.secret
            external_id = fake.add_key("bench-key")
            proxy_name = "the tests' fake XKS proxy (in-process, no HSM)"
        store_id = kms.create_custom_key_store(
            CustomKeyStoreName="bench",
            CustomKeyStoreType="EXTERNAL_KEY_STORE",
            XksProxyUriEndpoint=endpoint,
            XksProxyUriPath=path,
            XksProxyConnectivity="PUBLIC_ENDPOINT",
            XksProxyAuthenticationCredential={"AccessKeyId": access_key_id, "RawSecretAccessKey": secret},
        )["CustomKeyStoreId"]
        kms.connect_custom_key_store(CustomKeyStoreId=store_id)
        keys = {
            "Khoa key": kms.create_key()["KeyMetadata"]["KeyId"],
            "XKS key": kms.create_key(
                Origin="EXTERNAL_KEY_STORE", CustomKeyStoreId=store_id, XksKeyId=external_id
            )["KeyMetadata"]["KeyId"],
        }
        rows = []
        for label, key_id in keys.items():
            blob = kms.encrypt(KeyId=key_id, Plaintext=PLAINTEXT)["CiphertextBlob"]
            for operation, call, args in (
                ("Encrypt", "encrypt", {"KeyId": key_id, "Plaintext": PLAINTEXT}),
                ("Decrypt", "decrypt", {"CiphertextBlob": blob}),
            ):
                rate, p50, p99, failed = run(server, call, args)
                rows.append((operation, label, rate, p50, p99, failed))
                print(
                    f"{operation:8} {label:9} {rate:8.1f} req/s  p50 {p50:6.2f} ms  "
                    f"p99 {p99:6.2f} ms  errors {failed}"
                )
    finally:
        server.stop()
        if fake is not None:
            fake.stop()
    lines = [
        "# Encrypt / Decrypt: external key store key vs Khoa key",
        "",
        f"One Khoa server (SQLite, SigV4, audit on); proxy: {proxy_name}; {THREADS} client threads, "
        f"{SECONDS:g} s per row, {len(PLAINTEXT)}-byte plaintext.",
        "",
        "| operation | key | req/s | p50 ms | p99 ms | errors |",
        "|---|---|---:|---:|---:|---:|",
        *(f"| {o} | {k} | {r:.1f} | {p50:.2f} | {p99:.2f} | {e} |" for o, k, r, p50, p99, e in rows),
        "",
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "xks.md").write_text("\n".join(lines))
    return 1 if any(row[5] for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
