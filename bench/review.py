"""``khoa review`` against a large installation: how long the whole checklist takes in CI.

A fresh installation (created by a server start) gets KHOA_REVIEW_BENCH_SECRETS secrets (default
100,000) written straight into its database in bulk, as bench/scale.py does: a mix that exercises
every secret rule (production names and Environment tags, names outside the convention, rotation on
with and without a completed rotation, credential fields in the leak fingerprints, resource policies),
plus 1,000 String parameters, 100 customer managed keys and 200,000 audit events. Then
``khoa review --format json`` is run as an operator would (a subprocess, interpreter start included)
and timed. Report: bench/results/review.md.

    KHOA_REVIEW_BENCH_SECRETS  secrets to store (default 100000)
    KHOA_REVIEW_BENCH_RUNS     timed runs (default 3)
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
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
PUBLIC = json.dumps(
    {
        "default": json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": "*",
                        "Action": "secretsmanager:GetSecretValue",
                        "Resource": "*",
                    }
                ],
            }
        )
    }
)


def _secret(i: int, now: float) -> dict[str, Any]:
    env = ("prod", "staging", "dev")[i % 3]
    name = f"{env}/app-{i % 500}/db/secret-{i:07d}" if i % 11 else f"Legacy_Secret_{i:07d}"
    rotating = i % 4 == 0
    return {
        "secret_id": str(uuid.uuid4()),
        "account_id": ACCOUNT_ID,
        "region": REGION,
        "name": name,
        "arn": f"arn:aws:secretsmanager:{REGION}:{ACCOUNT_ID}:secret:{name}-AbCdEf",
        "description": None,
        "kms_key_id": None,
        "created_at": now - 200 * 86400 + i * 1e-3,
        "last_changed_at": now,
        "last_accessed_at": None,
        "deleted_at": None,
        "deletion_due_at": None,
        "rotation_enabled": rotating,
        "rotation_lambda_arn": f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:rotator" if rotating else None,
        "rotation_rules": json.dumps({"AutomaticallyAfterDays": 30}) if rotating else None,
        "last_rotated_at": now - (i % 60) * 86400 if rotating and i % 8 else None,
        "next_rotation_at": None,
        "resource_policy": PUBLIC if i % 1000 == 0 else None,
        "primary_region": None,
        "primary_secret_id": None,
        "owning_service": None,
        "secret_type": None,
    }


def populate(database: Path, count: int) -> None:
    engine = create_engine(f"sqlite:///{database}")
    now = time.time()
    secrets = [_secret(i, now) for i in range(count)]
    tags = [
        {"secret_id": s["secret_id"], "tag_key": "Environment", "tag_value": "production", "position": 0}
        for i, s in enumerate(secrets)
        if i % 5 == 0
    ]
    fingerprints = [
        {
            "row_id": uuid.uuid4().hex + uuid.uuid4().hex,
            "account_id": ACCOUNT_ID,
            "fingerprint": uuid.uuid4().hex,
            "region": REGION,
            "resource_type": "secret",
            "resource_id": s["secret_id"],
            "resource_arn": s["arn"],
            "version_id": str(uuid.uuid4()),
            "field": "password",
            "created_at": now,
            "invalid_since": None,
            "expires_at": None,
        }
        for i, s in enumerate(secrets)
        if i % 2 == 0
    ]
    parameters, versions = [], []
    for i in range(1000):
        param_id = str(uuid.uuid4())
        parameters.append(
            {
                "param_id": param_id,
                "account_id": ACCOUNT_ID,
                "region": REGION,
                "name": f"/bench/app/p{i:05d}",
                "parent_path": "/bench/app",
                "version": 1,
                "tier": "Standard",
                "policies": None,
                "expires_at": None,
            }
        )
        value = (
            f"postgres://app:Pw{i:05d}xYz@db:5432/app"
            if i % 100 == 0
            else f"https://service-{i}.internal/api"
        )
        versions.append(
            {
                "param_id": param_id,
                "version": 1,
                "param_type": "String",
                "value": value,
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
    keys = [
        {
            "key_id": str(uuid.uuid4()),
            "account_id": ACCOUNT_ID,
            "region": REGION,
            "description": "",
            "key_spec": "SYMMETRIC_DEFAULT",
            "key_usage": "ENCRYPT_DECRYPT",
            "origin": "AWS_KMS",
            "key_manager": "CUSTOMER",
            "state": "PendingDeletion" if i % 10 == 0 else "Enabled",
            "created_at": now,
            "deletion_date": now + 7 * 86400 if i % 10 == 0 else None,
            "pending_window_days": 7 if i % 10 == 0 else None,
            "policy": json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT_ID}:root"},
                            "Action": "kms:*",
                            "Resource": "*",
                        }
                    ],
                }
            ),
            "rotation_enabled": i % 2 == 0,
            "multi_region": False,
        }
        for i in range(100)
    ]
    events = [
        {
            "event_id": str(uuid.uuid4()),
            "account_id": ACCOUNT_ID,
            "region": REGION,
            "event_time": now - (i % (30 * 86400)),
            "event_source": "kms.amazonaws.com" if i % 2 else "secretsmanager.amazonaws.com",
            "event_name": "Decrypt" if i % 2 else "GetSecretValue",
            "username": "app",
            "access_key_id": None,
            "resource_names": f"arn:aws:kms:{REGION}:{ACCOUNT_ID}:key/{keys[i % 100]['key_id']}"
            if i % 2
            else secrets[i % count]["arn"],
            "resource_types": None,
            "read_only": True,
            "error_code": None,
            "record": "{}",
            "event_type": "AwsApiCall",
            "principal_arn": f"arn:aws:iam::{ACCOUNT_ID}:role/app-{i % 50}",
            "source_ip": "127.0.0.1",
        }
        for i in range(200_000)
    ]
    with engine.begin() as conn:
        for table, rows in (
            (schema.sm_secrets, secrets),
            (schema.sm_tags, tags),
            (schema.leak_fingerprints, fingerprints),
            (schema.ssm_parameters, parameters),
            (schema.ssm_parameter_versions, versions),
            (schema.kms_keys, keys),
            (schema.audit_events, events),
        ):
            for start in range(0, len(rows), 5000):
                conn.execute(insert(table), rows[start : start + 5000])
    engine.dispose()


def main() -> int:
    count = int(os.environ.get("KHOA_REVIEW_BENCH_SECRETS", "100000"))
    runs = int(os.environ.get("KHOA_REVIEW_BENCH_RUNS", "3"))
    with tempfile.TemporaryDirectory(prefix="khoa-review-") as tmp:
        server = KhoaServer(Path(tmp) / "data")
        server.start()
        server.stop()
        print(f"populating {count:,} secrets ...", file=sys.stderr)
        populate(server.data_dir / "khoa.db", count)
        env = {k: v for k, v in server.env().items() if not k.startswith("KHOA_TEST")}
        command = [
            sys.executable,
            "-m",
            "khoa",
            "review",
            "--format",
            "json",
            "--data-dir",
            str(server.data_dir),
        ]
        times, findings = [], 0
        for _ in range(runs):
            started = time.perf_counter()
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
            times.append(time.perf_counter() - started)
            if done.returncode not in (0, 1):
                print(done.stderr, file=sys.stderr)
                return 1
            findings = len(json.loads(done.stdout)["findings"])
    report = "\n".join(
        [
            "# khoa review against a large installation",
            "",
            f"{count:,} secrets (a mix that triggers every secret rule), 1,000 String parameters, 100 keys, "
            f"200,000 audit events; SQLite; `khoa review --format json` as a subprocess, {runs} runs.",
            "",
            "| secrets | findings | median s | max s |",
            "|---:|---:|---:|---:|",
            f"| {count:,} | {findings:,} | {statistics.median(times):.1f} | {max(times):.1f} |",
            "",
        ]
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "review.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
