"""Cost against store size, two measurements.

pages: ListSecrets and GetParametersByPath with 1,000 vs 100,000 items, and the web console's pages
over them (the secrets list, a deep page of it, the parameter tree). For each size a fresh Khoa
server (SQLite, SigV4 on) gets that many secrets and parameters — written straight into its database
in bulk, because creating 100,000 of each through the API would take longer than the measurement —
then one page (the first, and one deep in the listing) is timed many times through boto3, and each
console page through a signed-in HTTP client. Cost should follow the page, not the store. Report:
bench/results/scale.md.

versions: PutSecretValue on a secret keeping 10 vs 5,000 versions. AWS keeps every version younger
than 24 hours beyond its 100-version limit, so a busy secret holds thousands, and every write prunes
(store.tables.prune_deprecated). One server holds one secret per count; each is created through the
API and its one sealed version copied in bulk, under new version ids and creation times of the last
hour, into sm_versions (the put path never opens an old version, so copies sealed for another id
stand in for real ones). Then PutSecretValue is timed through boto3 on each secret in turn, call by
call, so both see the same server and disk. Cost should not follow the count. Report:
bench/results/scale-versions.md.

    KHOA_SCALE_ONLY      pages or versions (default: both)
    KHOA_SCALE_SIZES     comma list of store sizes for pages (default 1000,100000)
    KHOA_SCALE_VERSIONS  comma list of kept-version counts for versions (default 10,5000)
    KHOA_SCALE_CALLS     timed calls per measurement (default 50)
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

from sqlalchemy import create_engine, insert, select  # noqa: E402
from tests.support.console import ConsoleClient  # noqa: E402
from tests.support.server import ACCESS_KEY_ID, ACCOUNT_ID, REGION, SECRET_ACCESS_KEY, KhoaServer  # noqa: E402

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
    return percentiles(samples)


def percentiles(samples: list[float]) -> tuple[float, float]:
    """p50 and p99 of ``samples`` (milliseconds)."""
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[max(int(len(ordered) * 0.99) - 1, 0)]


def populate_versions(database: Path, arn: str, count: int) -> None:
    """Give the secret ``arn`` (created through the API with one version) ``count`` versions in all:
    copies of its sealed version, created over the last hour, so all are kept (younger than 24 h)."""
    engine = create_engine(f"sqlite:///{database}")
    versions = schema.sm_versions
    secrets = schema.sm_secrets
    with engine.begin() as conn:
        original = (
            conn.execute(
                select(versions)
                .join(secrets, secrets.c.secret_id == versions.c.secret_id)
                .where(secrets.c.arn == arn)
            )
            .one()
            ._mapping
        )
        start = time.time() - 3600
        rows = [
            {
                **original,
                "version_id": str(uuid.uuid4()),
                "created_at": start + i * 0.5,
                "last_accessed_at": None,
            }
            for i in range(count - 1)
        ]
        for first in range(0, len(rows), 5000):
            conn.execute(insert(versions), rows[first : first + 5000])
    engine.dispose()


def kept_versions(sm: Any, arn: str) -> int:
    """How many versions ListSecretVersionIds lists for the secret, deprecated ones included."""
    total = 0
    token: dict[str, str] = {}
    while True:
        page = sm.list_secret_version_ids(SecretId=arn, IncludeDeprecated=True, MaxResults=100, **token)
        total += len(page["Versions"])
        if "NextToken" not in page:
            return total
        token = {"NextToken": page["NextToken"]}


def measure_versions(counts: list[int], calls: int, workdir: Path) -> list[tuple[int, float, float]]:
    """(versions kept, p50 ms, p99 ms) of PutSecretValue, for a secret keeping each count."""
    server = KhoaServer(workdir / "data-versions")
    server.start()
    try:
        sm = server.client("secretsmanager")
        arns = {}
        for count in counts:
            arn = sm.create_secret(Name=f"busy/kept-{count}", SecretString="v0")["ARN"]
            populate_versions(server.data_dir / "khoa.db", arn, count)
            arns[count] = arn
        for count in counts:  # warm up: connections, caches, the key
            sm.put_secret_value(SecretId=arns[count], SecretString="warm-up")
        samples: dict[int, list[float]] = {count: [] for count in counts}
        for i in range(calls):
            for count in counts:
                started = time.perf_counter()
                sm.put_secret_value(SecretId=arns[count], SecretString=f"value-{i}")
                samples[count].append((time.perf_counter() - started) * 1000)
        kept = {count: kept_versions(sm, arns[count]) for count in counts}
        expected = {count: count + calls + 1 for count in counts}
        if kept != expected:
            raise SystemExit(
                f"versions kept after the puts: {kept}, expected {expected} (all younger than 24 h)"
            )
        return [(count, *percentiles(samples[count])) for count in counts]
    finally:
        server.stop()


def versions_report(counts: list[int], calls: int) -> str:
    with tempfile.TemporaryDirectory(prefix="khoa-scale-") as tmp:
        print(f"measuring PutSecretValue on secrets keeping {counts} versions ...", file=sys.stderr)
        rows = measure_versions(counts, calls, Path(tmp))
    base_p50, base_p99 = rows[0][1], rows[0][2]
    lines = [
        "# PutSecretValue cost against versions kept",
        "",
        f"{calls} calls per row through boto3 (SigV4 on, audit on), SQLite, one worker; the secrets are",
        "written in turn, call by call. Every version is younger than 24 hours, so all are kept.",
        "",
        "| versions kept (before the puts) | p50 ms | p99 ms | p50 vs fewest | p99 vs fewest |",
        "|---:|---:|---:|---:|---:|",
    ]
    for count, p50, p99 in rows:
        lines.append(f"| {count:,} | {p50:.2f} | {p99:.2f} | {p50 / base_p50:.2f}x | {p99 / base_p99:.2f}x |")
    return "\n".join(lines) + "\n"


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
        rows.extend(console_rows(server, size, calls, deep_secret_token))
        return rows
    finally:
        server.stop()


def console_rows(
    server: KhoaServer, size: int, calls: int, deep_token: str | None
) -> list[tuple[str, int, float, float]]:
    """The web console's pages over the same store: each is an HTML page rendered from one API page
    (plus, for the tree, a bounded scan for the paths below), so its cost too should not follow the
    store."""
    console = ConsoleClient(server.endpoint)
    if console.sign_in(ACCESS_KEY_ID, SECRET_ACCESS_KEY).status != 200:
        raise RuntimeError("the console did not sign in")

    def page(path: str, query: dict[str, str]) -> None:
        if console.get(path, query).status != 200:
            raise RuntimeError(f"the console answered {path} with an error")

    return [
        ("Console: secrets list (50)", size, *timed(lambda: page("/console/secrets", {}), calls)),
        (
            "Console: secrets list, deep page",
            size,
            *timed(lambda: page("/console/secrets", {"next": deep_token or ""}), calls),
        ),
        (
            "Console: parameter tree /scale/app/",
            size,
            *timed(lambda: page("/console/parameters", {"path": "/scale/app/"}), calls),
        ),
    ]


def pages_report(calls: int) -> str:
    sizes = [int(s) for s in os.environ.get("KHOA_SCALE_SIZES", "1000,100000").split(",")]
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
    return "\n".join(lines) + "\n"


def main() -> int:
    only = os.environ.get("KHOA_SCALE_ONLY", "")
    if only not in ("", "pages", "versions"):
        print(f"KHOA_SCALE_ONLY must be pages or versions, not {only!r}", file=sys.stderr)
        return 2
    calls = int(os.environ.get("KHOA_SCALE_CALLS", "50"))
    RESULTS.mkdir(exist_ok=True)
    if only != "versions":
        report = pages_report(calls)
        (RESULTS / "scale.md").write_text(report)
        print(report)
    if only != "pages":
        counts = [int(c) for c in os.environ.get("KHOA_SCALE_VERSIONS", "10,5000").split(",")]
        report = versions_report(counts, calls)
        (RESULTS / "scale-versions.md").write_text(report)
        print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
