"""Log file delivery and digests, in process: CloudTrail's formats, its signature (checked by the
AWS CLI's own validator), the chain, crash recovery, concurrency, retention and the verifier."""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import json
import os
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from awscli.customizations.cloudtrail.validation import (
    DigestSignatureError,
    Sha256RSADigestValidator,
    extract_digest_key_date,
)
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import Engine, event, func, insert, select, update

from khoa.audit import retention, verify
from khoa.audit.delivery import GAP_SECONDS
from khoa.audit.errors import TrailConflict
from khoa.audit.events import build as build_event
from khoa.audit.files import STAGING_DIR, AuditFiles
from khoa.audit.formats import BUCKET, string_to_sign
from khoa.audit.recorder import rows_for
from khoa.audit.signing import fingerprint, key_binding, public_key_der, vouched_public_keys
from khoa.audit.stored import StoredFiles
from khoa.audit.trail import AuditTrail
from khoa.audit.usage import UsageTracker
from khoa.audit.verify import (
    BROKEN_CHAIN,
    DELETED,
    INSERTED,
    INVALID_DIGEST,
    MODIFIED,
    REORDERED,
    ROW_DELETED,
    ROW_INSERTED,
    ROW_MODIFIED,
    UNTRUSTED_KEY,
    EventRows,
    Expectations,
    load_public_keys,
    load_records,
    verify_trail,
)
from khoa.auth.principal import Principal
from khoa.crypto.barrier import ROOT_KEY_BYTES, Barrier, BarrierError
from khoa.settings import Settings
from khoa.storage import schema
from khoa.storage.database import create_database_engine, migrate

ACCOUNT = "111122223333"
REGION = "us-east-1"
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC).timestamp()
DIGEST_FIELDS = [
    "awsAccountId",
    "digestStartTime",
    "digestEndTime",
    "digestS3Bucket",
    "digestS3Object",
    "digestPublicKeyFingerprint",
    "digestSignatureAlgorithm",
    "newestEventTime",
    "oldestEventTime",
    "previousDigestS3Bucket",
    "previousDigestS3Object",
    "previousDigestHashValue",
    "previousDigestHashAlgorithm",
    "previousDigestSignature",
    "logFiles",
]
LOG_KEY = re.compile(
    r"^AWSLogs/(\d{12})/CloudTrail/([a-z0-9-]+)/(\d{4})/(\d{2})/(\d{2})/"
    r"\1_CloudTrail_\2_\3\4\5T\d{4}Z_[A-Za-z0-9]{16}\.json\.gz$"
)
DIGEST_KEY = re.compile(
    r"^AWSLogs/(\d{12})/CloudTrail-Digest/([a-z0-9-]+)/(\d{4})/(\d{2})/(\d{2})/"
    r"\1_CloudTrail-Digest_\2_khoa_\2_\3\4\5T\d{6}Z\.json\.gz$"
)


@dataclass
class Env:
    engine: Engine
    barrier: Barrier
    settings: Settings
    trail: AuditTrail

    @property
    def audit(self) -> Path:
        return self.settings.effective_audit_dir

    def new_trail(self) -> AuditTrail:
        trail = AuditTrail(self.engine, self.barrier, self.settings)
        trail.settle_seconds = 0
        return trail

    def verify(self) -> Any:
        return verify_trail(self.audit, load_public_keys(self.engine), load_records(self.engine))


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    engine = create_database_engine(f"sqlite:///{tmp_path / 'khoa.db'}")
    migrate(engine)
    barrier = Barrier(os.urandom(ROOT_KEY_BYTES))
    settings = Settings(data_dir=tmp_path)
    trail = AuditTrail(engine, barrier, settings)
    trail.settle_seconds = 0
    yield Env(engine, barrier, settings, trail)
    engine.dispose()


def add_events(
    engine: Engine, count: int, *, account: str = ACCOUNT, region: str = REGION, at: float = T0
) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(count)]
    rows = []
    for i, event_id in enumerate(ids):
        record = {
            "eventVersion": "1.08",
            "eventTime": datetime.fromtimestamp(at + i, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "eventSource": "kms.amazonaws.com",
            "eventName": "Encrypt",
            "awsRegion": region,
            "eventID": event_id,
            "recipientAccountId": account,
        }
        rows.append(
            {
                "event_id": event_id,
                "account_id": account,
                "region": region,
                "event_time": at + i,
                "event_source": "kms.amazonaws.com",
                "event_name": "Encrypt",
                "read_only": True,
                "record": json.dumps(record, separators=(",", ":")),
            }
        )
    with engine.begin() as conn:
        conn.execute(insert(schema.audit_events), rows)
    return ids


def read_gz_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(gzip.decompress(path.read_bytes()))
    return data


def digests_of(audit: Path) -> list[Path]:
    return sorted(audit.glob("AWSLogs/*/CloudTrail-Digest/**/*.json.gz"))


def logs_of(audit: Path) -> list[Path]:
    return sorted(audit.glob("AWSLogs/*/CloudTrail/**/*.json.gz"))


def events_in_files(audit: Path) -> list[str]:
    return [r["eventID"] for path in logs_of(audit) for r in read_gz_json(path)["Records"]]


def kinds(report: Any) -> set[str]:
    return {f.kind for f in report.findings}


# -- formats and the signature ------------------------------------------------------------------


def test_string_to_sign_is_cloudtrails() -> None:
    first = string_to_sign("2026-03-01T13:00:00Z", BUCKET, "AWSLogs/x.json.gz", "ab" * 32, None)
    assert first == f"2026-03-01T13:00:00Z\nkhoa-audit/AWSLogs/x.json.gz\n{'ab' * 32}\nnull".encode()
    later = string_to_sign("2026-03-01T14:00:00Z", BUCKET, "AWSLogs/y.json.gz", "cd" * 32, "0f" * 256)
    assert later.endswith(b"\n" + b"0f" * 256) and not later.endswith(b"\n")


def test_digest_layout_fields_and_chain(env: Env) -> None:
    ids = add_events(env.engine, 3)
    first = env.trail.close_period(T0 + 60)
    add_events(env.engine, 2, at=T0 + 120)
    second = env.trail.close_period(T0 + 180)
    assert len(first.log_files) == len(first.digests) == 1
    assert len(second.log_files) == len(second.digests) == 1
    for key in first.log_files + second.log_files:
        assert LOG_KEY.match(key), key
    for key in first.digests + second.digests:
        assert DIGEST_KEY.match(key), key

    # The log file: {"Records": [...]} in sequence order; the digest lists the SHA-256 of that content.
    log_content = gzip.decompress((env.audit / first.log_files[0]).read_bytes())
    assert [r["eventID"] for r in json.loads(log_content)["Records"]] == ids

    one = read_gz_json(env.audit / first.digests[0])
    two = read_gz_json(env.audit / second.digests[0])
    assert list(one) == DIGEST_FIELDS and list(two) == DIGEST_FIELDS
    assert one["awsAccountId"] == ACCOUNT
    assert one["digestS3Bucket"] == BUCKET and one["digestS3Object"] == first.digests[0]
    assert one["digestSignatureAlgorithm"] == "SHA256withRSA"
    assert (
        one["oldestEventTime"] == "2026-03-01T12:00:00Z" and one["newestEventTime"] == "2026-03-01T12:00:02Z"
    )
    assert one["digestEndTime"] == "2026-03-01T12:01:00Z"
    for name in DIGEST_FIELDS:
        if name.startswith("previousDigest"):
            assert one[name] is None, name
    assert one["logFiles"] == [
        {
            "s3Bucket": BUCKET,
            "s3Object": first.log_files[0],
            "hashValue": hashlib.sha256(log_content).hexdigest(),
            "hashAlgorithm": "SHA-256",
            "newestEventTime": "2026-03-01T12:00:02Z",
            "oldestEventTime": "2026-03-01T12:00:00Z",
        }
    ]
    # The chain: the second digest starts where the first ended and names its location, hash, signature.
    first_content = gzip.decompress((env.audit / first.digests[0]).read_bytes())
    first_signature = (env.audit / (first.digests[0] + ".sig")).read_text().strip()
    assert two["digestStartTime"] == one["digestEndTime"]
    assert two["previousDigestS3Bucket"] == BUCKET
    assert two["previousDigestS3Object"] == first.digests[0]
    assert two["previousDigestHashValue"] == hashlib.sha256(first_content).hexdigest()
    assert two["previousDigestHashAlgorithm"] == "SHA-256"
    assert two["previousDigestSignature"] == first_signature
    assert re.fullmatch(r"[0-9a-f]{512}", first_signature)  # RSA-2048: 256 bytes, hex
    assert env.verify().intact


def test_aws_cli_validator_accepts_digests_and_rejects_edits(env: Env) -> None:
    """The AWS CLI's own digest validator (``aws cloudtrail validate-logs``) checks Khoa's digests."""
    add_events(env.engine, 4)
    env.trail.close_period(T0 + 60)
    add_events(env.engine, 1, at=T0 + 100)
    env.trail.close_period(T0 + 200)
    env.trail.close_period(T0 + 300)  # an empty period still gets its digest
    with env.engine.connect() as conn:
        (key_row,) = conn.execute(select(schema.audit_trail_keys)).all()
    public_value = base64.b64encode(key_row.public_key).decode()  # ListPublicKeys' Value
    assert fingerprint(key_row.public_key) == key_row.fingerprint
    validator = Sha256RSADigestValidator()
    paths = digests_of(env.audit)
    assert len(paths) == 3
    for path in paths:
        key = path.relative_to(env.audit).as_posix()
        inflated = gzip.decompress(path.read_bytes())
        data = json.loads(inflated)
        data["_signature"] = (env.audit / (key + ".sig")).read_text().strip()
        data["_signature_algorithm"] = "SHA256withRSA"
        assert data["digestPublicKeyFingerprint"] == key_row.fingerprint
        validator.validate(BUCKET, key, public_value, data, inflated)
        assert extract_digest_key_date(key) == datetime.fromisoformat(
            data["digestEndTime"].replace("Z", "+00:00")
        ).strftime("%Y%m%dT%H%M%SZ")
        with pytest.raises(DigestSignatureError):
            validator.validate(BUCKET, key, public_value, data, inflated.replace(b"SHA-256", b"SHA-512"))
        with pytest.raises(DigestSignatureError):
            validator.validate(BUCKET, key, public_value, {**data, "digestS3Object": key + "x"}, inflated)


def test_trail_key_is_sealed_and_bound_to_its_row(env: Env) -> None:
    add_events(env.engine, 1)
    env.trail.close_period(T0 + 60)
    with env.engine.connect() as conn:
        row = conn.execute(select(schema.audit_trail_keys)).one()
    assert b"PRIVATE KEY" not in row.private_key_sealed
    opened = env.barrier.open(row.private_key_sealed, key_binding(row.fingerprint))
    assert len(opened) > 1000  # PKCS#8 DER of an RSA-2048 key
    with pytest.raises(BarrierError):
        env.barrier.open(row.private_key_sealed, key_binding("0" * 32))
    # A sealed key copied into another key's row does not open there.
    with env.engine.begin() as conn:
        conn.execute(update(schema.audit_trail_keys).values(valid_to=T0))
        conn.execute(
            insert(schema.audit_trail_keys).values(
                fingerprint="f" * 32,
                public_key=row.public_key,
                private_key_sealed=row.private_key_sealed,
                valid_from=T0 + 1,
                valid_to=None,
            )
        )
    with pytest.raises(BarrierError):
        env.trail.signing_key(T0 + 2)
    for path in env.audit.rglob("*"):
        if path.is_file():
            assert b"PRIVATE KEY" not in path.read_bytes()


def test_caller_chosen_regions_cannot_escape_the_layout(env: Env) -> None:
    add_events(env.engine, 1, region="../../../etc")
    add_events(env.engine, 1, account="not-an-account")
    closed = env.trail.close_period(T0 + 60)
    assert sorted(k.split("/")[1] + "/" + k.split("/")[3] for k in closed.log_files) == [
        f"{ACCOUNT}/unknown",
        "unknown/us-east-1",
    ]
    for path in env.settings.data_dir.rglob("*"):
        assert path.resolve().is_relative_to(env.settings.data_dir.resolve())
    assert env.verify().intact


# -- tampering, as the verifier sees it ------------------------------------------------------------


def _build_trail(env: Env) -> tuple[list[str], list[str]]:
    logs: list[str] = []
    digests: list[str] = []
    for period in range(3):
        for batch in range(2):
            add_events(env.engine, 3, at=T0 + period * 3600 + batch * 60)
            logs += env.trail.close_period(T0 + period * 3600 + batch * 60 + 30).log_files
            digests = [d.relative_to(env.audit).as_posix() for d in digests_of(env.audit)]
    return logs, digests


def _rewrite_log(path: Path, change: Callable[[bytes], bytes]) -> None:
    path.write_bytes(gzip.compress(change(gzip.decompress(path.read_bytes()))))


TAMPERING: dict[str, tuple[Callable[[Path, list[str], list[str]], None], set[str]]] = {
    "one byte of the compressed file": (
        lambda a, logs, d: (a / logs[1]).write_bytes(
            (lambda b: b[:20] + bytes([b[20] ^ 1]) + b[21:])((a / logs[1]).read_bytes())
        ),
        {MODIFIED},
    ),
    "one byte of the content": (
        lambda a, logs, d: _rewrite_log(a / logs[2], lambda c: c.replace(b"Encrypt", b"Encryqt", 1)),
        {MODIFIED},
    ),
    "log file deleted": (lambda a, logs, d: (a / logs[0]).unlink(), {DELETED}),
    "forged log file inserted": (
        lambda a, logs, d: (a / logs[0].replace(logs[0][-24:-8], "FORGEDforged0000")).write_bytes(
            gzip.compress(b'{"Records":[]}')
        ),
        {INSERTED},
    ),
    "log files swapped": (
        lambda a, logs, d: [
            os.replace(a / logs[1], a / "tmp"),
            os.replace(a / logs[3], a / logs[1]),
            os.replace(a / "tmp", a / logs[3]),
        ],
        {REORDERED},
    ),
    "middle digest deleted": (lambda a, logs, d: (a / d[2]).unlink(), {BROKEN_CHAIN, DELETED}),
    "newest digest deleted": (lambda a, logs, d: (a / d[-1]).unlink(), {BROKEN_CHAIN}),
    "digest edited": (
        lambda a, logs, d: _rewrite_log(a / d[1], lambda c: c.replace(b'"SHA-256"', b'"SHA-512"', 1)),
        {INVALID_DIGEST},
    ),
    "digest signature deleted": (lambda a, logs, d: (a / (d[1] + ".sig")).unlink(), {INVALID_DIGEST}),
    "digests swapped": (
        lambda a, logs, d: [
            os.replace(a / d[1], a / "tmp"),
            os.replace(a / d[3], a / d[1]),
            os.replace(a / "tmp", a / d[3]),
        ],
        {REORDERED},
    ),
}


@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_verifier_reports_tampering(env: Env, case: str) -> None:
    logs, digests = _build_trail(env)
    assert len(digests) == 6 and len(logs) == 6
    before = env.verify()
    assert before.intact and before.digests_valid == 6 and before.log_files_valid == 6
    tamper, expected = TAMPERING[case]
    tamper(env.audit, logs, digests)
    report = env.verify()
    assert not report.intact
    assert expected <= kinds(report), report.findings


def test_verify_range_limits_what_is_checked(env: Env) -> None:
    logs, _ = _build_trail(env)
    (env.audit / logs[0]).unlink()  # in the first period
    records, keys = load_records(env.engine), load_public_keys(env.engine)
    assert not verify_trail(env.audit, keys, records).intact
    later = verify_trail(env.audit, keys, records, start=T0 + 3600 + 10)
    assert later.intact and 0 < later.digests_checked < 6
    assert not verify_trail(env.audit, keys, records, end=T0 + 600).intact


def test_verifier_with_pinned_keys_rejects_a_replaced_key(env: Env, tmp_path: Path) -> None:
    """Whoever can write the database could register a key of their own; pinned keys catch that."""
    _build_trail(env)
    records = load_records(env.engine)
    honest = load_public_keys(env.engine)
    assert verify_trail(env.audit, honest, records).intact
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    report = verify_trail(env.audit, {next(iter(honest)): other}, records)
    assert INVALID_DIGEST in kinds(report)


# -- the database's copy ---------------------------------------------------------------------------


def _stored_report(env: Env, directory: Path, *, complete: bool) -> Any:
    return verify_trail(
        directory,
        load_public_keys(env.engine),
        load_records(env.engine),
        stored=StoredFiles(env.engine),
        directory_complete=complete,
    )


def test_a_node_holding_part_of_the_trail_verifies_it_from_the_database(env: Env, tmp_path: Path) -> None:
    """Nodes sharing a database each hold the files they delivered; the database holds them all."""
    logs, digests = _build_trail(env)
    for key in logs[::2] + digests[1::2]:  # delivered by another node: not on this one's disk
        (env.audit / key).unlink()
    assert not env.verify().intact  # the directory alone is not the whole trail
    report = _stored_report(env, env.audit, complete=False)
    assert report.intact and report.digests_valid == 6 and report.log_files_valid == 6
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    assert _stored_report(env, empty, complete=False).intact  # a node that never delivered
    # On a single node the directory must still hold every file: a deletion is found.
    assert DELETED in kinds(_stored_report(env, env.audit, complete=True))


@pytest.mark.parametrize("complete", [True, False])
def test_the_database_copy_is_checked_against_the_file_and_the_digests(env: Env, complete: bool) -> None:
    logs, _ = _build_trail(env)
    assert _stored_report(env, env.audit, complete=complete).intact
    forged = gzip.compress(b'{"Records":[]}', mtime=0)
    with env.engine.begin() as conn:
        conn.execute(
            update(schema.audit_log_files)
            .where(schema.audit_log_files.c.s3_object == logs[1])
            .values(content=forged)
        )
    report = _stored_report(env, env.audit, complete=complete)
    assert MODIFIED in kinds(report) and "database" in str(report.findings)
    (env.audit / logs[1]).unlink()  # now only the forged copy is left
    assert not _stored_report(env, env.audit, complete=complete).intact


def test_export_writes_the_whole_trail_where_it_verifies_as_a_directory(env: Env, tmp_path: Path) -> None:
    logs, digests = _build_trail(env)
    out = tmp_path / "exported"
    assert StoredFiles(env.engine).export(out) == len(logs) + 2 * len(digests)
    assert sorted(p.relative_to(out).as_posix() for p in logs_of(out)) == sorted(logs)
    report = verify_trail(out, load_public_keys(env.engine), load_records(env.engine))
    assert report.intact and report.digests_valid == 6 and report.log_files_valid == 6
    assert StoredFiles(env.engine).export(out) == 0  # files already there are kept


# -- delivery ------------------------------------------------------------------------------------


def test_pending_log_files_are_intact_but_not_yet_digested(env: Env) -> None:
    add_events(env.engine, 2)
    env.trail.close_period(T0 + 60)
    add_events(env.engine, 2, at=T0 + 100)
    env.trail._deliver(T0 + 120, env.trail._newest_pending() or 0)
    report = env.verify()
    assert report.intact and report.pending_log_files == 1
    with env.engine.connect() as conn:
        pending = conn.execute(
            select(schema.audit_log_files.c.s3_object).where(schema.audit_log_files.c.digest_id.is_(None))
        ).scalar_one()
    _rewrite_log(env.audit / pending, lambda c: c.replace(b"Encrypt", b"Decrypt"))
    assert MODIFIED in kinds(env.verify())


def test_job_delivers_settled_events_and_writes_digests_each_period(env: Env) -> None:
    settings = replace(env.settings, audit_delivery_seconds=0.0, audit_digest_seconds=3600.0)
    trail = AuditTrail(env.engine, env.barrier, settings)
    trail.job_settle_seconds = 0.0
    ids = add_events(env.engine, 5)
    trail.run_job(datetime.fromtimestamp(T0 + 10, UTC))  # notes the newest event; delivers nothing yet
    assert events_in_files(env.audit) == []
    trail.run_job(datetime.fromtimestamp(T0 + 20, UTC))
    assert events_in_files(env.audit) == ids and digests_of(env.audit) == []
    trail.run_job(datetime.fromtimestamp(T0 + 3600, UTC))
    assert digests_of(env.audit) == []  # the first period is not over yet
    trail.run_job(datetime.fromtimestamp(T0 + 3621, UTC))
    assert len(digests_of(env.audit)) == 1
    trail.run_job(datetime.fromtimestamp(T0 + 3700, UTC))
    assert len(digests_of(env.audit)) == 1
    trail.run_job(datetime.fromtimestamp(T0 + 7300, UTC))  # nothing happened: a digest all the same
    assert len(digests_of(env.audit)) == 2
    assert read_gz_json(digests_of(env.audit)[-1])["logFiles"] == []
    assert env.verify().intact


def test_job_waits_for_events_to_settle(env: Env) -> None:
    settings = replace(env.settings, audit_delivery_seconds=0.0)
    trail = AuditTrail(env.engine, env.barrier, settings)
    trail.job_settle_seconds = 3600.0
    add_events(env.engine, 2)
    for _ in range(3):
        trail.run_job(datetime.fromtimestamp(T0, UTC))
    assert events_in_files(env.audit) == []


def test_retention_removes_only_delivered_old_events(env: Env) -> None:
    settings = replace(env.settings, audit_retention_days=1.0)
    trail = AuditTrail(env.engine, env.barrier, settings)
    trail.settle_seconds = 0
    add_events(env.engine, 3, at=T0)
    trail.close_period(T0 + 60)
    add_events(env.engine, 2, at=T0 + 2 * 86400)  # delivered, recent
    trail._deliver(T0 + 2 * 86400, 5)
    add_events(env.engine, 2, at=T0 + 10)  # old, but not delivered yet
    UsageTracker(env.engine).run(datetime.fromtimestamp(T0 + 2 * 86400, UTC))
    assert trail.apply_retention(T0 + 2 * 86400 + 60) == 3
    with env.engine.connect() as conn:
        left = conn.execute(select(func.count()).select_from(schema.audit_events)).scalar()
    assert left == 4
    assert len(events_in_files(env.audit)) == 3 + 2  # log files stay
    assert env.verify().intact
    keep_all = AuditTrail(env.engine, env.barrier, replace(settings, audit_retention_days=0))
    assert keep_all.apply_retention(T0 + 400 * 86400) == 0


def test_retention_deletes_in_batches(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retention, "BATCH", 4)
    trail = AuditTrail(env.engine, env.barrier, replace(env.settings, audit_retention_days=1.0))
    trail.settle_seconds = 0
    add_events(env.engine, 11, at=T0)
    trail.close_period(T0 + 60)
    add_events(env.engine, 2, at=T0 + 20)  # old, not delivered: kept
    UsageTracker(env.engine).run(datetime.fromtimestamp(T0 + 60, UTC))
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(env.engine, "before_cursor_execute", seen)
    try:
        assert trail.apply_retention(T0 + 2 * 86400) == 11
    finally:
        event.remove(env.engine, "before_cursor_execute", seen)
    # windows of 4: 4 + 4 + 3 (the 12th is not delivered), then a window with nothing to remove
    assert sum(1 for s in statements if s.lstrip().upper().startswith("DELETE")) == 4
    with env.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.audit_events)).scalar() == 2


def test_interrupted_delivery_is_finished_or_dropped(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = add_events(env.engine, 3)
    original = AuditFiles.publish

    def crash(self: AuditFiles, staged: Path, key: str) -> None:
        raise KeyboardInterrupt("power cut after the commit, before the file was moved into place")

    monkeypatch.setattr(AuditFiles, "publish", crash)
    with pytest.raises(KeyboardInterrupt):
        env.trail.close_period(T0 + 60)
    monkeypatch.setattr(AuditFiles, "publish", original)
    staging = env.audit / STAGING_DIR
    assert len(list(staging.iterdir())) == 1 and events_in_files(env.audit) == []
    # An abandoned file whose transaction never committed is dropped once stale.
    stale = staging / "AWSLogs!111122223333!CloudTrail!us-east-1!2026!03!01!orphan.json.gz"
    stale.write_bytes(gzip.compress(b'{"Records":[]}'))
    os.utime(stale, (0, 0))
    closed = env.new_trail().close_period(T0 + 120)
    assert list(staging.iterdir()) == []
    assert events_in_files(env.audit) == ids and len(closed.digests) == 1
    assert env.verify().intact


def test_a_conflicting_delivery_keeps_no_file_and_looks_again(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = add_events(env.engine, 2)
    original = AuditFiles.stage
    raced: list[str] = []
    theirs: list[str] = []

    def stage_then_race(self: AuditFiles, key: str, data: bytes) -> Path:
        staged = original(self, key, data)
        if not raced:  # another process delivers both events between our read and our commit
            raced.append(key)
            theirs.extend(env.new_trail()._deliver(T0, 2))
        return staged

    monkeypatch.setattr(AuditFiles, "stage", stage_then_race)
    ours = env.trail._deliver(T0, 2)
    assert ours == [] and len(theirs) == 1 and raced[0] not in theirs
    assert events_in_files(env.audit) == ids
    assert list((env.audit / STAGING_DIR).iterdir()) == []
    with env.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.audit_log_files)).scalar() == 1


def test_concurrent_writers_never_lose_or_duplicate_an_event(env: Env) -> None:
    trails = [env.new_trail(), env.new_trail()]
    stop = threading.Event()
    added: list[str] = []
    errors: list[BaseException] = []

    def produce() -> None:
        for i in range(40):
            added.extend(add_events(env.engine, 3, at=T0 + i, region=("us-east-1", "eu-west-1")[i % 2]))
        stop.set()

    def close(trail: AuditTrail) -> None:
        try:
            while not stop.is_set():
                trail.close_period(wait=30)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def race(trail: AuditTrail) -> None:  # no lock: the conditional updates alone keep it right
        try:
            while not stop.is_set():
                newest = trail._newest_pending()
                if newest is not None:
                    with contextlib.suppress(TrailConflict):
                        trail._deliver(T0 + 5000, newest)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [
        threading.Thread(target=produce),
        threading.Thread(target=close, args=(trails[0],)),
        threading.Thread(target=close, args=(trails[1],)),
        threading.Thread(target=race, args=(env.new_trail(),)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    env.trail.close_period()
    delivered = events_in_files(env.audit)
    assert sorted(delivered) == sorted(added) and len(set(delivered)) == len(delivered)
    with env.engine.connect() as conn:
        positions = conn.execute(
            select(schema.audit_digests.c.region, schema.audit_digests.c.position).order_by(
                schema.audit_digests.c.region, schema.audit_digests.c.position
            )
        ).all()
    for region in ("eu-west-1", "us-east-1"):
        chain = [p for r, p in positions if r == region]
        assert chain == list(range(1, len(chain) + 1))
    assert env.verify().intact


def _renumber(engine: Engine, moves: dict[str, int]) -> None:
    with engine.begin() as conn:
        for event_id, seq in moves.items():
            conn.execute(
                update(schema.audit_events).where(schema.audit_events.c.event_id == event_id).values(seq=seq)
            )


def test_a_sequence_number_passed_before_its_commit_is_delivered_when_it_appears(env: Env) -> None:
    """PostgreSQL hands out sequence numbers in one order and commits in another: delivery holds a
    gap it passed and delivers the event when its transaction commits, once."""
    first = add_events(env.engine, 3)
    _renumber(env.engine, {first[2]: 4})  # 1, 2 and 4 are there; 3 has not committed yet
    env.trail._deliver(T0, 4)
    assert events_in_files(env.audit) == [first[0], first[1], first[2]]
    assert env.trail._delivery_state().held.keys() == {3}
    late = add_events(env.engine, 1)
    _renumber(env.engine, {late[0]: 3})
    env.trail._deliver(T0 + 60, 4)
    assert sorted(events_in_files(env.audit)) == sorted([*first, *late])
    state = env.trail._delivery_state()
    assert state.delivered_seq == 4 and state.held == {}


def test_a_gap_that_never_fills_is_given_up(env: Env) -> None:
    ids = add_events(env.engine, 2)
    _renumber(env.engine, {ids[1]: 3})  # 2 was rolled back
    env.trail._deliver(T0, 3)
    assert env.trail._delivery_state().held.keys() == {2}
    env.trail._deliver(T0 + GAP_SECONDS + 1, 3)
    state = env.trail._delivery_state()
    assert state.held == {} and state.delivered_seq == 3
    assert events_in_files(env.audit) == ids


def test_rows_delivered_by_the_old_scheme_are_not_delivered_again(env: Env) -> None:
    ids = add_events(env.engine, 3)
    with env.engine.begin() as conn:  # revision 0010 marked delivered rows with their file
        conn.execute(
            update(schema.audit_events).where(schema.audit_events.c.event_id == ids[1]).values(log_file="old")
        )
    env.trail._deliver(T0, 3)
    assert events_in_files(env.audit) == [ids[0], ids[2]]
    assert env.trail._delivery_state().held == {}


# -- trust in keys, pinned heads and overdue digests (someone who can write the database) -----------


def _expect(**kwargs: Any) -> Expectations:
    return Expectations(**{"digest_seconds": 3600.0, "grace_seconds": 300.0, **kwargs})


def _check(env: Env, **kwargs: Any) -> Any:
    keys, untrusted = vouched_public_keys(env.engine, env.barrier)
    return verify_trail(env.audit, keys, load_records(env.engine), untrusted_keys=untrusted, **kwargs)


def _drop_digest(env: Env, key: str) -> None:
    """What someone who can write the database and the directory does to cut a chain's end: the
    digest, its log files and their rows go (no key needed)."""
    with env.engine.begin() as conn:
        digest_id = conn.execute(
            select(schema.audit_digests.c.digest_id).where(schema.audit_digests.c.s3_object == key)
        ).scalar_one()
        files = conn.execute(
            select(schema.audit_log_files.c.s3_object).where(schema.audit_log_files.c.digest_id == digest_id)
        ).scalars()
        for log_key in files:
            (env.audit / log_key).unlink()
        conn.execute(schema.audit_log_files.delete().where(schema.audit_log_files.c.digest_id == digest_id))
        conn.execute(schema.audit_digests.delete().where(schema.audit_digests.c.digest_id == digest_id))
    (env.audit / key).unlink()
    (env.audit / (key + ".sig")).unlink()


def test_only_keys_the_root_key_vouches_for_are_trusted(env: Env) -> None:
    _build_trail(env)
    trusted, untrusted = vouched_public_keys(env.engine, env.barrier)
    assert len(trusted) == 1 and untrusted == {}
    assert _check(env).intact
    (genuine,) = trusted
    with env.engine.connect() as conn:
        row = conn.execute(select(schema.audit_trail_keys)).one()
    mine = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    der = public_key_der(mine)
    planted = fingerprint(der)
    copied = fingerprint(
        public_key_der(rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key())
    )
    with env.engine.begin() as conn:
        conn.execute(
            insert(schema.audit_trail_keys),
            [
                # a key of one's own beside a sealed value one could not make
                {
                    "fingerprint": planted,
                    "public_key": der,
                    "private_key_sealed": b"\x01" + b"\x00" * 40,
                    "valid_from": 0.0,
                    "valid_to": 1.0,
                },
                # the genuine sealed private half under another key's row: bound to its own row, it
                # does not open there
                {
                    "fingerprint": copied,
                    "public_key": der,
                    "private_key_sealed": row.private_key_sealed,
                    "valid_from": 0.0,
                    "valid_to": 1.0,
                },
            ],
        )
    trusted, untrusted = vouched_public_keys(env.engine, env.barrier)
    assert set(trusted) == {genuine} and set(untrusted) == {planted, copied}
    assert "does not open with the root key" in untrusted[planted]
    assert "fingerprint" in untrusted[copied]
    report = _check(env)
    assert kinds(report) == {UNTRUSTED_KEY}
    # Another installation's root key vouches for none of them.
    other = Barrier(os.urandom(ROOT_KEY_BYTES))
    assert vouched_public_keys(env.engine, other)[0] == {}


def test_a_pinned_digest_must_still_be_in_the_chain(env: Env) -> None:
    _, digests = _build_trail(env)
    report = _check(env, expect=_expect(pinned=frozenset()))
    assert report.intact
    (head,) = report.heads
    assert head.key == digests[-1]
    assert head.hash_value == hashlib.sha256(gzip.decompress((env.audit / head.key).read_bytes())).hexdigest()
    pinned = _check(env, expect=Expectations(pinned=frozenset({head.hash_value})))
    assert pinned.intact and pinned.pinned_found == 1
    _drop_digest(env, digests[-1])
    assert _check(env).intact  # the database no longer remembers it: nothing else tells
    cut = _check(env, expect=Expectations(pinned=frozenset({head.hash_value})))
    assert kinds(cut) == {BROKEN_CHAIN}
    assert cut.findings[0].path == f"pinned digest sha256 {head.hash_value}"
    # The next digest, chained onto the cut, does not make it whole again.
    add_events(env.engine, 1, at=T0 + 4 * 3600)
    env.trail.close_period(T0 + 4 * 3600 + 30)
    assert kinds(_check(env, expect=Expectations(pinned=frozenset({head.hash_value})))) == {BROKEN_CHAIN}


def test_a_stopped_server_is_never_taken_for_a_truncated_chain(env: Env) -> None:
    """The leader's own cadence, across a week's stop: every pass leaves a trail with no overdue chain."""
    settings = replace(env.settings, audit_delivery_seconds=0.0, audit_digest_seconds=3600.0)
    passes = [T0 + s for s in (10, 20, 3621, 3700, 7300, 9000)]
    passes += [T0 + 7 * 86400 + s for s in (0, 10, 20, 3000, 3620, 3630)]  # after a week's stop
    trail = AuditTrail(env.engine, env.barrier, settings)
    trail.job_settle_seconds = 0.0
    for at in passes:
        if at == passes[6]:
            trail = AuditTrail(env.engine, env.barrier, settings)  # the server started again
            trail.job_settle_seconds = 0.0
        add_events(env.engine, 2, at=at - 5)
        add_events(env.engine, 1, at=at - 5, region="eu-west-1")
        trail.run_job(datetime.fromtimestamp(at, UTC))
        report = _check(env, expect=_expect())
        assert report.intact, (at - T0, report.findings)
    assert len(digests_of(env.audit)) >= 8


def test_a_chain_whose_newest_digests_are_gone_while_the_trail_went_on_is_reported(env: Env) -> None:
    for hour in range(4):
        add_events(env.engine, 2, at=T0 + hour * 3600)
        add_events(env.engine, 1, at=T0 + hour * 3600, region="eu-west-1")
        env.trail.close_period(T0 + hour * 3600 + 60)
    east = [d.relative_to(env.audit).as_posix() for d in digests_of(env.audit) if "/us-east-1/" in str(d)]
    assert len(east) == 4 and _check(env, expect=_expect()).intact
    # One period cut from one chain: the other chain's digests are a period apart from it, within
    # the grace: not evidence enough.
    _drop_digest(env, east[3])
    assert _check(env, expect=_expect()).intact
    # Two periods cut: eu-west-1 had its digests written two hours after us-east-1's newest.
    _drop_digest(env, east[2])
    report = _check(env, expect=_expect())
    assert kinds(report) == {BROKEN_CHAIN}
    assert report.findings[0].path == east[1] and "truncated" in report.findings[0].detail
    assert _check(env).intact  # (without the period, verify cannot tell)
    assert _check(env, expect=_expect(), end=T0 + 2 * 3600).intact  # a range that ends before


def _recorded(engine: Engine, count: int, at: float) -> list[str]:
    """Events as the recorder writes them (record and columns), by the account root."""
    events = [
        build_event(
            model=None,
            service="kms",
            operation="ListKeys",
            region=REGION,
            request_id=f"req-{i}",
            principal=Principal.account_root(ACCOUNT, "AKIAEXAMPLE000000001"),
            access_key_id="AKIAEXAMPLE000000001",
            source_ip="192.0.2.1",
            user_agent="test",
            params={},
            result={},
            error_code=None,
            error_message=None,
            now=datetime.fromtimestamp(at + i, UTC),
            recipient_account=ACCOUNT,
        )
        for i in range(count)
    ]
    with engine.begin() as conn:
        conn.execute(insert(schema.audit_events), rows_for(events))
    return [e.event_id for e in events]


def _rows_report(env: Env) -> Any:
    return _check(env, events=EventRows(env.engine, 0.0, T0))


def test_delivered_rows_are_held_to_their_log_files(env: Env) -> None:
    ids = _recorded(env.engine, 4, T0)
    env.trail.close_period(T0 + 60)
    _recorded(env.engine, 2, T0 + 120)  # not delivered: vouched for by nothing, not compared
    report = _rows_report(env)
    assert report.intact and report.rows_checked == report.rows_valid == 4
    with env.engine.begin() as conn:
        conn.execute(
            update(schema.audit_events)
            .where(schema.audit_events.c.event_id == ids[0])
            .values(source_ip="10.9.9.9")
        )
        conn.execute(schema.audit_events.delete().where(schema.audit_events.c.event_id == ids[1]))
    report = _rows_report(env)
    assert kinds(report) == {ROW_MODIFIED, ROW_DELETED}
    assert "source_ip" in next(f.detail for f in report.findings if f.kind == ROW_MODIFIED)
    # Rows older than the retention may have gone.
    old = _check(env, events=EventRows(env.engine, 1.0, T0 + 3 * 86400))
    assert kinds(old) == {ROW_MODIFIED}


@pytest.mark.parametrize("named", [True, False])
def test_a_row_counted_as_delivered_must_be_in_a_log_file(
    env: Env, monkeypatch: pytest.MonkeyPatch, named: bool
) -> None:
    if not named:  # more events than verify keeps the IDs of: counted, not named
        monkeypatch.setattr(verify, "_SEEN_LIMIT", 2)
    _recorded(env.engine, 4, T0)
    env.trail.close_period(T0 + 60)
    assert _rows_report(env).intact
    (extra,) = _recorded(env.engine, 1, T0 + 10)
    with env.engine.begin() as conn:
        newest = conn.execute(select(func.max(schema.audit_events.c.seq))).scalar()
        conn.execute(update(schema.audit_delivery).values(delivered_seq=newest))
    report = _rows_report(env)
    assert kinds(report) == {ROW_INSERTED}
    (finding,) = report.findings
    assert (extra in finding.detail) == named
    assert finding.path == (f"audit_events seq {newest}" if named else "audit_events")
