"""Page cost against store size: ListSecrets and GetParametersByPath with 1,000 vs 100,000 items.

For each size a fresh Khoa server (SQLite, SigV4 on) gets that many secrets and parameters — written
straight into its database in bulk, because creating 100,000 of each through the API would take
longer than the measurement — then one page (the first, and one deep in the listing) is timed many
times through boto3. Cost should follow the page, not the store.

    KHOA_SCALE_SIZES   comma list of store sizes (default 1000,100000)
    KHOA_SCALE_CALLS   timed calls per measurement (default 50)
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from sqlalchemy import create_engine, insert  # noqa: E402
from tests.support.server import ACCOUNT_ID, REGION, KhoaServer  # noqa: E402

from khoa.storage import schema  # noqa: E402

RESULTS = BENCH / "results"


def populate(database: Path, count: int) -> None:
    engine = create_engine(f"sqlite:///{database}")
    now = time.time()
    secrets = []
    parameters = []
    versions = []
    for i in range(count):
        name = f"app/service-{i:07d}"
        secrets.append(
            {
                "secret_id": str(uuid.uuid4()),
                "account_id": ACCOUNT_ID,
                "region": REGION,
                "name": name,
                "arn": f"arn:aws:secretsmanager:{REGION}:{ACCOUNT_ID}:secret:{name}-AbCdEf",
                "description": None,
                "kms_key_id": None,
                "created_at": now + i * 1e-3,
                "last_changed_at": now,
                "last_accessed_at": None,
                "deleted_at": None,
                "deletion_due_at": None,
                "rotation_enabled": False,
                "rotation_lambda_arn": None,
                "rotation_rules": None,
                "last_rotated_at": None,
                "next_rotation_at": None,
                "resource_policy": None,
                "primary_region": None,
                "primary_secret_id": None,
                "owning_service": None,
                "secret_type": None,
            }
        )
        param_id = str(uuid.uuid4())
        parameters.append(
            {
                "param_id": param_id,
                "account_id": ACCOUNT_ID,
                "region": REGION,
                "name": f"/scale/app/p{i:07d}",
                "parent_path": "/scale/app",
                "version": 1,
                "tier": "Standard",
                "policies": None,
                "expires_at": None,
            }
        )
        versions.append(
            {
                "param_id": param_id,
                "version": 1,
                "param_type": "String",
                "value": f"value-{i}",
                "ciphertext": None,
                "key_id": None,
                "description": None,
                "allowed_pattern": None,
                "data_type": "text",
                "tier": "Standard",
                "policies": None,
                "modified_at": now,
                "modified_by": f"arn:aws:iam::{ACCOUNT_ID}:root",
            }
        )
    with engine.begin() as conn:
        for start in range(0, count, 5000):
            conn.execute(insert(schema.sm_secrets), secrets[start : start + 5000])
            conn.execute(insert(schema.ssm_parameters), parameters[start : start + 5000])
            conn.execute(insert(schema.ssm_parameter_versions), versions[start : start + 5000])
    engine.dispose()


def timed(call: Any, calls: int) -> tuple[float, float]:
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def measure(size: int, calls: int, workdir: Path) -> list[tuple[str, int, float, float]]:
    server = KhoaServer(workdir / f"data-{size}")
    server.start()
    try:
        populate(server.data_dir / "khoa.db", size)
        sm = server.client("secretsmanager")
        ssm = server.client("ssm")
        deep_secret_token = None
        deep_parameter_token = None
        pages = min(20, size // 100 - 1)
        for _ in range(pages):  # walk a few pages in so the "deep" token is far from the start
            deep_secret_token = sm.list_secrets(
                MaxResults=100, **({"NextToken": deep_secret_token} if deep_secret_token else {})
            ).get("NextToken")
        for _ in range(pages):
            deep_parameter_token = ssm.get_parameters_by_path(
                Path="/scale/app",
                MaxResults=10,
                **({"NextToken": deep_parameter_token} if deep_parameter_token else {}),
            ).get("NextToken")
        rows = []
        rows.append(
            ("ListSecrets first page (100)", size, *timed(lambda: sm.list_secrets(MaxResults=100), calls))
        )
        rows.append(
            (
                "ListSecrets deep page (100)",
                size,
                *timed(lambda: sm.list_secrets(MaxResults=100, NextToken=deep_secret_token), calls),
            )
        )
        rows.append(
            (
                "GetParametersByPath first page (10)",
                size,
                *timed(lambda: ssm.get_parameters_by_path(Path="/scale/app", MaxResults=10), calls),
            )
        )
        rows.append(
            (
                "GetParametersByPath deep page (10)",
                size,
                *timed(
                    lambda: ssm.get_parameters_by_path(
                        Path="/scale/app", MaxResults=10, NextToken=deep_parameter_token
                    ),
                    calls,
                ),
            )
        )
        return rows
    finally:
        server.stop()


def main() -> int:
    sizes = [int(s) for s in os.environ.get("KHOA_SCALE_SIZES", "1000,100000").split(",")]
    calls = int(os.environ.get("KHOA_SCALE_CALLS", "50"))
    results: list[tuple[str, int, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="khoa-scale-") as tmp:
        for size in sizes:
            print(f"measuring with {size:,} secrets and {size:,} parameters ...", file=sys.stderr)
            results.extend(measure(size, calls, Path(tmp)))
    baseline = {name: p50 for name, size, p50, _ in results if size == sizes[0]}
    lines = [
        "# Page cost against store size",
        "",
        f"{calls} calls per row through boto3 (SigV4 on, audit on), SQLite, one worker.",
        "",
        "| call | items stored | p50 ms | p99 ms | p50 vs smallest store |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, size, p50, p99 in results:
        lines.append(f"| {name} | {size:,} | {p50:.2f} | {p99:.2f} | {p50 / baseline[name]:.2f}x |")
    report = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scale.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
