"""Fuzz every operation of every service Khoa serves, against a real server process.

Requests are generated from botocore's service models (every operation of kms, secretsmanager, ssm,
sts, iam and cloudtrail, implemented or not): valid ones naming real resources, boundary values, and
mutations (wrong types, missing members, huge strings, 1,000-5,000 levels of nesting, unicode, NUL,
lone surrogates, overflowing numbers, garbage paging tokens and base64, wrong content types,
malformed and duplicate-key JSON, long targets, mangled query fields and list indexes). The run is
deterministic: ``KHOA_FUZZ_SEED`` (default below) fixes every case, so a failure reproduces with the
same seed; ``KHOA_FUZZ_SCALE`` multiplies the number of cases for a longer local run (raise pytest's
per-test timeout with ``-o timeout=0`` for large scales), e.g.
``KHOA_FUZZ_SEED=7 KHOA_FUZZ_SCALE=3 .venv/bin/pytest -q -s -o timeout=0 tests/fuzz``.

Every answer is checked: never a 5xx, never a hang (10 s client timeout), every 4xx an AWS-shaped
error (``__type`` JSON, or an XML ``ErrorResponse`` for IAM/STS) without a traceback, unimplemented
operations get the AWS unknown-operation error, garbage paging tokens are refused, broken
authentication is never answered 2xx, and the limited user gets no 2xx for an operation its policy
does not allow. For EVERY refused request the row counts of all resource tables (read-only from the
server's database) must not change, and for every refused mutating request (``DIGEST_EVERY`` = 1) a
digest of every row of the tables that service writes must not change either. Afterwards the server
must still be healthy (health check, then a normal create/encrypt/decrypt and GetCallerIdentity).
"""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fuzz import harness
from tests.fuzz.generate import Campaign, Case, auth_cases, plan, region_cases
from tests.support.server import ACCESS_KEY_ID, ACCOUNT_ID, SECRET_ACCESS_KEY, KhoaServer
from tests.support.services import every_service

SEED = int(os.environ.get("KHOA_FUZZ_SEED", "20261206"))
SCALE = float(os.environ.get("KHOA_FUZZ_SCALE", "1"))
MINIMUM_CASES = 10_000
# Digest the service's resource tables around every N-th refused mutating request (1: all of them;
# the row counts of every resource table are compared around every refused request).
DIGEST_EVERY = 1
# Wall-clock budgets (seconds) for the sending loops; exhausting one is a failure, not a skip.
DEV_BUDGET = 240.0 * SCALE
SIGNED_BUDGET = 90.0 * SCALE


# Failures another engineer's open change fixes, as (service, operation, kind, problem prefix) ->
# why. Matching failures are reported, not failed; an entry that no longer fails fails the test, so
# the list only shrinks. Keep it empty when nothing is open.
KNOWN_OPEN: dict[tuple[str, str, str, str], str] = {}


def _handlers() -> dict[str, set[str]]:
    return {name: set(service.handlers) for name, service in every_service().items()}


def _known(case: Case, problem: str) -> tuple[str, str, str, str] | None:
    for key in KNOWN_OPEN:
        service, operation, kind, prefix = key
        if (
            case.service == service
            and case.operation == operation
            and kind in (case.kind, "*")
            and problem.startswith(prefix)
        ):
            return key
    return None


def _verdict(outcome: harness.Outcome, cases: list[Case], minimum: int) -> None:
    """Fail with every unexpected problem (grouped, with reproducible cases), or if known-open
    failures stopped happening."""
    unexpected: list[str] = []
    seen_known: set[tuple[str, str, str, str]] = set()
    for case, problem in outcome.failed_cases:
        key = _known(case, problem)
        if key is None:
            unexpected.append(f"{problem}\n  {case.describe()}")
        else:
            seen_known.add(key)
    loop_failures = [f for f in outcome.failures if f.startswith("time budget")]
    report = (
        f"seed {SEED}: sent {outcome.sent} of {len(cases)} cases;"
        f" statuses {dict(sorted(outcome.statuses.items()))};"
        f" row counts of every resource table compared around {outcome.checked_counts} refused requests,"
        f" row digests of the service's tables around {outcome.checked_digests} refused mutating ones;"
        f" slowest answer {outcome.slowest:.2f} s"
    )
    print(report)
    for key in sorted(seen_known):
        print(f"known open (not failed): {key}: {KNOWN_OPEN[key]}")
    assert not loop_failures, loop_failures
    assert not unexpected, f"{len(unexpected)} problems; {report}\n\n" + "\n\n".join(unexpected[:40])
    assert outcome.sent >= minimum, report
    if SCALE == 1:
        stale = [key for key in KNOWN_OPEN if key not in seen_known and _applies(key, cases)]
        assert not stale, f"known-open entries no longer fail; remove them from KNOWN_OPEN: {stale}"


def _applies(key: tuple[str, str, str, str], cases: list[Case]) -> bool:
    return any(c.service == key[0] and c.operation == key[1] for c in cases)


# Operations AWS answers without any permission (GetCallerIdentity: "No permissions are required").
_NEEDS_NO_PERMISSION = {("sts", "GetCallerIdentity")}


def _permits(policy: dict[str, Any]) -> Callable[[Case], bool]:
    """Whether an identity policy (Allow/Deny statements on Resource "*") lets its user call a case's
    operation: the oracle that turns any 2xx outside it into a found escalation."""

    def matches(statement: dict[str, Any], action: str) -> bool:
        return any(fnmatch.fnmatchcase(action, pattern.lower()) for pattern in statement["Action"])

    def allowed(case: Case) -> bool:
        if (case.service, case.operation) in _NEEDS_NO_PERMISSION:
            return True
        action = f"{case.service}:{case.operation}".lower()
        statements = policy["Statement"]
        if any(s["Effect"] == "Deny" and matches(s, action) for s in statements):
            return False
        return any(s["Effect"] == "Allow" and matches(s, action) for s in statements)

    return allowed


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KhoaServer]:
    instance = KhoaServer(tmp_path_factory.mktemp("khoa-fuzz-dev") / "data", dev=True).start()
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def signed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KhoaServer]:
    instance = KhoaServer(tmp_path_factory.mktemp("khoa-fuzz-signed") / "data").start()
    yield instance
    instance.stop()


def _run(
    server: KhoaServer,
    cases: list[Case],
    access_key: str,
    secret_key: str,
    budget: float,
    allowed: Callable[[Case], bool] | None = None,
) -> harness.Outcome:
    probe = harness.StateProbe(server.database_url or Path(server.data_dir) / "khoa.db")
    wire = harness.Wire(server, access_key, secret_key)
    try:
        return harness.run(cases, wire, probe, DIGEST_EVERY, time.monotonic() + budget, allowed)
    finally:
        wire.close()
        probe.close()


@pytest.mark.slow
def test_fuzz_every_operation_as_account_root(dev_server: KhoaServer) -> None:
    """The bulk of the run: a --dev server, so every request reaches validation and the handlers."""
    pool = harness.populate(dev_server, "testing", "testing")
    handlers = _handlers()
    campaign = Campaign(SEED, handlers, pool)
    cases = plan(
        campaign,
        handlers,
        per_operation=round(52 * SCALE),
        per_unimplemented=max(1, round(3 * SCALE)),
        protocol_per_service=round(120 * SCALE),
    )
    cases += region_cases(campaign, round(200 * SCALE))
    for position, case in enumerate(cases):
        case.index = position
    # Every operation of every model is in the plan, implemented or not.
    for name, operations in handlers.items():
        planned = {c.operation for c in cases if c.service == name}
        assert set(campaign.fuzzers[name].operations) <= planned
        assert operations <= set(campaign.fuzzers[name].operations)
    outcome = _run(dev_server, cases, "testing", "testing", DEV_BUDGET)
    harness.healthy(dev_server, "testing", "testing")
    _verdict(outcome, cases, minimum=round(MINIMUM_CASES * SCALE))


@pytest.mark.slow
def test_fuzz_every_operation_as_limited_user(signed_server: KhoaServer) -> None:
    """A slice signed by an IAM user with a narrow policy (and an explicit Deny): the authorisation
    path of every operation meets the same mutations, plus requests whose authentication is broken."""
    pool = harness.populate(signed_server, ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    iam_client = signed_server.client("iam")
    iam_client.create_user(UserName="fz-limited")
    policy = dict(
        Version="2012-10-17",
        Statement=[
            {
                "Effect": "Allow",
                "Action": [
                    "kms:Describe*",
                    "kms:List*",
                    "kms:Encrypt",
                    "kms:Decrypt",
                    "secretsmanager:DescribeSecret",
                    "secretsmanager:ListSecrets",
                    "ssm:GetParameter*",
                    "ssm:DescribeParameters",
                    "iam:Get*",
                    "iam:List*",
                    "cloudtrail:LookupEvents",
                ],
                "Resource": "*",
            },
            {"Effect": "Deny", "Action": ["kms:Decrypt", "iam:GetUser"], "Resource": "*"},
        ],
    )
    iam_client.put_user_policy(UserName="fz-limited", PolicyName="fuzz", PolicyDocument=json.dumps(policy))
    key = iam_client.create_access_key(UserName="fz-limited")["AccessKey"]
    handlers = _handlers()
    campaign = Campaign(SEED + 1, handlers, pool)
    cases = plan(
        campaign,
        handlers,
        per_operation=round(6 * SCALE),
        per_unimplemented=1,
        protocol_per_service=round(15 * SCALE),
    )
    cases += auth_cases(campaign, round(160 * SCALE))
    for position, case in enumerate(cases):
        case.index = position
    outcome = _run(
        signed_server, cases, key["AccessKeyId"], key["SecretAccessKey"], SIGNED_BUDGET, _permits(policy)
    )
    harness.healthy(signed_server, ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    denied = signed_server.client(
        "sts", aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"]
    ).get_caller_identity()
    assert denied["Arn"] == f"arn:aws:iam::{ACCOUNT_ID}:user/fz-limited"
    _verdict(outcome, cases, minimum=1_000)


@pytest.mark.slow
@pytest.mark.postgres
def test_fuzz_every_operation_on_postgresql(private_postgres: str, tmp_path: Path) -> None:
    """A slice against a PostgreSQL-backed server (signed as the account root, plus broken
    authentication): PostgreSQL refuses what SQLite takes (U+0000 in text, values longer than a
    column), so a value that passes validation but not the database shows here as a 5xx."""
    server = KhoaServer(tmp_path / "data", database_url=private_postgres).start()
    try:
        pool = harness.populate(server, ACCESS_KEY_ID, SECRET_ACCESS_KEY)
        handlers = _handlers()
        campaign = Campaign(SEED + 2, handlers, pool)
        cases = plan(
            campaign,
            handlers,
            per_operation=round(10 * SCALE),
            per_unimplemented=1,
            protocol_per_service=round(20 * SCALE),
        )
        cases += auth_cases(campaign, round(90 * SCALE)) + region_cases(campaign, round(40 * SCALE))
        for position, case in enumerate(cases):
            case.index = position
        outcome = _run(server, cases, ACCESS_KEY_ID, SECRET_ACCESS_KEY, SIGNED_BUDGET)
        harness.healthy(server, ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    finally:
        server.stop()
    _verdict(outcome, cases, minimum=2_000)


_PLAN_DIGEST = """
import hashlib
from tests.fuzz.generate import Campaign, Pool, auth_cases, plan, region_cases
from tests.fuzz.test_fuzz_operations import SEED, _handlers
pool = Pool()
pool.add("kms", "KeyId", "key-1", "key-2")
pool.fresh[("iam", "UserName")] = "user-"
handlers = _handlers()
campaign = Campaign(SEED, handlers, pool)
cases = plan(campaign, handlers, 6, 1, 10) + auth_cases(campaign, 20) + region_cases(campaign, 20)
digest = hashlib.sha256()
for c in cases:
    digest.update(repr((c.service, c.operation, c.kind, c.body, sorted(c.headers.items()), c.method,
                        c.path, c.auth, c.region)).encode())
print(len(cases), digest.hexdigest())
"""


def test_the_plan_is_the_same_in_every_process() -> None:
    """A seed makes the same requests whatever the process's hash seed or clock: failures reproduce."""
    outputs = set()
    for hash_seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        run = subprocess.run(
            [sys.executable, "-c", _PLAN_DIGEST],
            env=env,
            cwd=Path(__file__).resolve().parents[2],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        outputs.add(run.stdout.strip())
    assert len(outputs) == 1, outputs
