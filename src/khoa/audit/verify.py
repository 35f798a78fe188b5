"""``khoa audit verify``: CloudTrail's log file integrity validation over the trail's files.

For every digest file: it must sit where it says it belongs, be signed (SHA256withRSA over CloudTrail's
string to sign) by a trusted trail key, and name a previous digest that exists with the hash and
signature it records. For every log file a digest lists: it must exist and its uncompressed content
must hash to the listed SHA-256. Files that no digest lists are inserted, unless the database knows
them as delivered and not yet digested (and their hash matches).

Which keys are trusted is the caller's choice: keys pinned by the operator, or the database's keys
that the root key vouches for (:func:`khoa.audit.signing.vouched_public_keys`); a key row the root key
does not vouch for is reported (``UNTRUSTED KEY``). Never the database's listing alone: whoever can
write the database could add a key of their own and re-sign an edited trail with it.

The newest end of each chain: the database's list of digests catches a newest digest deleted from
the directory only (the database still names it), but not one deleted from both, by someone who can
write the database and the directory. Two checks reach further: digests the operator pinned
(``--expect-digest``: the heads an earlier run printed, kept where the trail's writers cannot change
them) must still be in the chain; and, when the digest period is given, no chain's newest digest may
end more than one period (plus a grace) before the latest delivery the trail shows, since the server
writes every chain's digest each period for as long as it delivers.

The events' database rows (what LookupEvents, ``khoa audit tail`` and the alert rules read) are
compared with the signed log files they were delivered to: a delivered row deleted (younger than the
retention), altered, or added is reported. Rows not delivered yet are vouched for by nothing.

The database keeps a copy of every file (:mod:`khoa.audit.stored`). On a single node
(``directory_complete``) the directory is the trail checked, as its only writer put every file there,
and each file must also agree with the database's copy. A node of a cluster holds only the files it
delivered itself, so there the database's copy stands in for every file the directory lacks: the
whole trail verifies from any node.
"""

from __future__ import annotations

import gzip
import json
import math
import zlib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from sqlalchemy import Engine, func, or_, select

from khoa.audit.files import SIGNATURE_SUFFIX, STAGING_DIR
from khoa.audit.formats import BUCKET, iso, parse_iso, sha256_hex, string_to_sign
from khoa.audit.outcomes import PENDING_KEY, UNKNOWN_CODE
from khoa.audit.signing import fingerprint, public_key_der
from khoa.audit.stored import StoredFiles
from khoa.storage import schema

# Finding kinds, worst first in the report.
BROKEN_CHAIN = "BROKEN CHAIN"
UNTRUSTED_KEY = "UNTRUSTED KEY"
INVALID_DIGEST = "INVALID DIGEST"
DELETED = "DELETED"
MODIFIED = "MODIFIED"
REORDERED = "REORDERED"
INSERTED = "INSERTED"
# An event's database row against the signed log file it was delivered to.
ROW_DELETED = "ROW DELETED"
ROW_MODIFIED = "ROW MODIFIED"
ROW_INSERTED = "ROW INSERTED"
_ORDER = [
    BROKEN_CHAIN,
    UNTRUSTED_KEY,
    INVALID_DIGEST,
    DELETED,
    MODIFIED,
    REORDERED,
    INSERTED,
    ROW_DELETED,
    ROW_MODIFIED,
    ROW_INSERTED,
]
# Row findings of one kind shown one by one; beyond, one finding counts the rest.
_ROW_FINDINGS_SHOWN = 50
# The least time past a chain's due digest before its absence counts (see overdue_grace).
MIN_OVERDUE_GRACE_SECONDS = 300.0


def overdue_grace(job_interval_seconds: float) -> float:
    """How late a chain's digest may be while the trail is delivered: the leader writes due digests
    on its job pass (every ``KHOA_JOB_INTERVAL_SECONDS``), a pass that fails is retried on the next,
    and nodes' clocks differ a little."""
    return max(MIN_OVERDUE_GRACE_SECONDS, 3.0 * job_interval_seconds)


@dataclass(frozen=True)
class Finding:
    kind: str
    path: str
    detail: str


@dataclass(frozen=True)
class Head:
    """The newest valid digest of a chain: what to record, to pin it later (``--expect-digest``)."""

    account_id: str
    region: str
    key: str
    hash_value: str  # hex SHA-256 of the uncompressed digest, as the next digest names it
    end_time: float | None

    def as_json(self) -> dict[str, Any]:
        return {
            "account": self.account_id,
            "region": self.region,
            "digest": self.key,
            "hashValue": self.hash_value,
            "endTime": iso(self.end_time) if self.end_time is not None else None,
        }


@dataclass(frozen=True)
class Expectations:
    """What the trail must show beyond its own consistency.

    ``pinned``: hex SHA-256s of digests (uncompressed) that must be valid digests of the trail;
    ``digest_seconds``: the digest period (``KHOA_AUDIT_DIGEST_SECONDS``): when given, every chain's
    newest digest must end no more than a period plus ``grace_seconds`` before the latest delivery
    or digest the trail shows (checked when no end time limits the verification)."""

    pinned: frozenset[str] = frozenset()
    digest_seconds: float | None = None
    grace_seconds: float = MIN_OVERDUE_GRACE_SECONDS


@dataclass(frozen=True)
class EventRows:
    """The database whose ``audit_events`` rows are compared with the log files.

    ``retention_days`` (``KHOA_AUDIT_RETENTION_DAYS``; 0 keeps everything): delivered rows older
    than that may be gone; ``now``: the verifier's clock; ``longest_write_seconds``: the longest a
    write runs (its row keeps its start time, its completed record the time it ended)."""

    engine: Engine
    retention_days: float = 0.0
    now: float = 0.0
    longest_write_seconds: float = 3600.0


def longest_write_seconds(rotation_step_timeout_seconds: float) -> float:
    """The longest a write call runs: an emergency rotation runs a rotation function's four steps,
    each for up to ``KHOA_ROTATION_STEP_TIMEOUT_SECONDS``; other writes take seconds. An hour at least."""
    return max(3600.0, 4 * rotation_step_timeout_seconds + 120.0)


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    digests_checked: int = 0
    digests_valid: int = 0
    log_files_checked: int = 0
    log_files_valid: int = 0
    pending_log_files: int = 0
    first_time: float | None = None
    last_time: float | None = None
    heads: list[Head] = field(default_factory=list)
    pinned_found: int = 0
    rows_checked: int | None = None  # None: the rows were not compared
    rows_valid: int = 0

    @property
    def intact(self) -> bool:
        return not self.findings

    def add(self, kind: str, path: str, detail: str) -> None:
        finding = Finding(kind, path, detail)
        if finding not in self.findings:
            self.findings.append(finding)

    def sorted_findings(self) -> list[Finding]:
        return sorted(self.findings, key=lambda f: (_ORDER.index(f.kind), f.path))

    def as_json(self) -> dict[str, Any]:
        return {
            "intact": self.intact,
            "digestFiles": {"checked": self.digests_checked, "valid": self.digests_valid},
            "logFiles": {
                "checked": self.log_files_checked,
                "valid": self.log_files_valid,
                "pendingDigest": self.pending_log_files,
            },
            "eventRows": (
                {"checked": self.rows_checked, "valid": self.rows_valid}
                if self.rows_checked is not None
                else None
            ),
            "heads": [head.as_json() for head in self.heads],
            "pinnedDigests": {"found": self.pinned_found},
            "findings": [
                {"kind": f.kind, "file": f.path, "detail": f.detail} for f in self.sorted_findings()
            ],
        }


@dataclass
class _Digest:
    key: str
    chain: tuple[str, str]
    content: bytes | None = None
    data: dict[str, Any] = field(default_factory=dict)
    signature: str | None = None
    valid: bool = False
    error: str = ""

    @property
    def start(self) -> float | None:
        return _time_of(self.data.get("digestStartTime"))

    @property
    def end(self) -> float | None:
        return _time_of(self.data.get("digestEndTime"))


@dataclass(frozen=True)
class _Expected:
    """What a log file must hash to, and who says so (a digest, or the database for pending files)."""

    key: str
    hash_value: str
    source: str
    pending: bool = False


@dataclass
class TrailRecords:
    """What the database remembers of the trail: its digests and log files, and the delivery cursor
    (``delivered_seq`` and the ``held`` numbers below it: every other event up to it was delivered),
    read before the files so that every event it counts as delivered is in a log file listed here."""

    digests: list[Any] = field(default_factory=list)
    log_files: list[Any] = field(default_factory=list)
    digest_keys: dict[int, str] = field(default_factory=dict)
    delivered_seq: int = 0
    held: frozenset[int] = frozenset()


def _time_of(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_iso(value)
    except ValueError:
        return None


def _inflate(data: bytes) -> bytes | None:
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error):
        return None


def load_public_keys(engine: Engine) -> dict[str, rsa.RSAPublicKey]:
    """Every key the database lists, vouched for by nothing: whoever can write the database can add
    one. ``khoa audit verify`` trusts :func:`khoa.audit.signing.vouched_public_keys` or pinned keys."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(schema.audit_trail_keys.c.fingerprint, schema.audit_trail_keys.c.public_key)
        )
        keys: dict[str, rsa.RSAPublicKey] = {}
        for row in rows:
            key = serialization.load_der_public_key(row.public_key)
            if isinstance(key, rsa.RSAPublicKey) and fingerprint(public_key_der(key)) == row.fingerprint:
                keys[row.fingerprint] = key
    return keys


def load_pem_keys(directory: Path) -> dict[str, rsa.RSAPublicKey]:
    """Pinned keys exported by ``khoa audit public-keys`` (any ``*.pem`` holding an RSA public key)."""
    keys: dict[str, rsa.RSAPublicKey] = {}
    for path in sorted(directory.glob("*.pem")):
        key = serialization.load_pem_public_key(path.read_bytes())
        if isinstance(key, rsa.RSAPublicKey):
            keys[fingerprint(public_key_der(key))] = key
    return keys


def load_records(engine: Engine) -> TrailRecords:
    cursors = schema.audit_delivery
    with engine.connect() as conn:
        cursor = conn.execute(
            select(cursors.c.delivered_seq, cursors.c.held).where(cursors.c.name == "trail")
        ).first()
        digests = list(conn.execute(select(schema.audit_digests).order_by(schema.audit_digests.c.digest_id)))
        files = list(conn.execute(select(schema.audit_log_files).order_by(schema.audit_log_files.c.file_id)))
    delivered_seq, held = 0, frozenset[int]()
    if cursor is not None:
        delivered_seq = int(cursor.delivered_seq)
        held = frozenset(int(pair[0]) for pair in json.loads(cursor.held or "[]"))
    return TrailRecords(digests, files, {d.digest_id: d.s3_object for d in digests}, delivered_seq, held)


def _in_range(start: float | None, end: float | None, lo: float | None, hi: float | None) -> bool:
    if lo is not None and end is not None and end < lo:
        return False
    return not (hi is not None and start is not None and start > hi)


def _name_time(key: str) -> float | None:
    """The timestamp in a log file's name (``..._YYYYMMDDTHHmmZ_unique.json.gz``)."""
    parts = key.rsplit("/", 1)[-1].split("_")
    if len(parts) < 5:
        return None
    try:
        return datetime.strptime(parts[3], "%Y%m%dT%H%MZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def _classify(directory: Path) -> tuple[list[str], list[str], list[str]]:
    """Digest keys, log file keys and unexpected files under ``AWSLogs/``."""
    digests: list[str] = []
    logs: list[str] = []
    other: list[str] = []
    root = directory / "AWSLogs"
    if not root.is_dir():
        return digests, logs, other
    for path in sorted(root.rglob("*")):
        if path.is_dir():
            continue
        key = path.relative_to(directory).as_posix()
        parts = key.split("/")
        kind = parts[2] if len(parts) > 2 else ""
        if kind == "CloudTrail-Digest" and key.endswith(".json.gz"):
            digests.append(key)
        elif kind == "CloudTrail-Digest" and key.endswith(".json.gz" + SIGNATURE_SUFFIX):
            continue
        elif kind == "CloudTrail" and key.endswith(".json.gz"):
            logs.append(key)
        else:
            other.append(key)
    return digests, logs, other


class _Copies:
    """The trail's files: the directory's, else (``fill``) the database's copy (``stored``)."""

    def __init__(self, directory: Path, stored: StoredFiles | None, report: Report, fill: bool) -> None:
        self.directory = directory
        self.stored = stored
        self.report = report
        self.fill = fill

    def keys(self, local: list[str], kept: frozenset[str]) -> list[str]:
        return sorted(set(local) | kept) if self.fill else local

    def read(self, key: str) -> bytes | None:
        """The file's bytes, after checking that the two copies agree where both exist."""
        path = self.directory / key
        local = path.read_bytes() if path.is_file() else None
        if self.stored is None or key not in self.stored or (local is None and not self.fill):
            return local
        kept = self.stored.read(key)
        if local is not None and kept is not None and _inflate(local) != _inflate(kept):
            self.report.add(MODIFIED, key, "differs from the copy the database keeps")
        return local if local is not None else kept

    def signature(self, key: str) -> str | None:
        path = self.directory / (key + SIGNATURE_SUFFIX)
        if path.is_file():
            return path.read_text().strip()
        return self.stored.signature(key) if self.stored is not None and self.fill else None


def verify_trail(
    directory: Path,
    keys: dict[str, rsa.RSAPublicKey],
    records: TrailRecords | None,
    *,
    start: float | None = None,
    end: float | None = None,
    stored: StoredFiles | None = None,
    directory_complete: bool = True,
    untrusted_keys: Mapping[str, str] | None = None,
    expect: Expectations | None = None,
    events: EventRows | None = None,
) -> Report:
    """Check the trail under ``directory`` (and the database's copy, ``stored``) with the trusted
    ``keys``; ``untrusted_keys``: trail key rows the root key does not vouch for (fingerprint: why),
    each reported; ``expect``: pinned digests and the digest period; ``events``: compare the
    database's event rows with the log files."""
    report = Report(first_time=start, last_time=end)
    expect = expect if expect is not None else Expectations()
    for key_id, reason in sorted((untrusted_keys or {}).items()):
        report.add(
            UNTRUSTED_KEY, f"trail key {key_id}", f"is listed by the database but not trusted: {reason}"
        )
    local_digests, local_logs, others = _classify(directory)
    copies = _Copies(directory, stored, report, fill=not directory_complete)
    digest_keys = copies.keys(local_digests, stored.digest_keys if stored is not None else frozenset())
    log_keys = copies.keys(local_logs, stored.log_keys if stored is not None else frozenset())
    for key in others:
        if STAGING_DIR not in key:
            report.add(INSERTED, key, "unexpected file in the trail")

    digests: dict[str, _Digest] = {}
    for key in digest_keys:
        parts = key.split("/")
        digest = _Digest(key=key, chain=(parts[1], parts[3]))
        digests[key] = digest
        raw = copies.read(key)
        digest.content = _inflate(raw) if raw is not None else None
        digest.signature = copies.signature(key)
        if digest.content is None:
            digest.error = "is not a gzip file (modified)"
            continue
        try:
            data = json.loads(digest.content)
            if not isinstance(data, dict):
                raise ValueError("not an object")
            digest.data = data
        except ValueError:
            digest.error = "is not a JSON digest (modified)"
            continue
        digest.valid = _check_digest(digest, keys)
        if (
            not digest.valid
            and untrusted_keys
            and str(data.get("digestPublicKeyFingerprint")) in untrusted_keys
        ):
            digest.error = (
                f"is signed by trail key {data.get('digestPublicKeyFingerprint')}, which the root key does "
                "not vouch for"
            )

    in_range = {key: d for key, d in digests.items() if not d.data or _in_range(d.start, d.end, start, end)}
    db_digests = {row.s3_object: row for row in records.digests} if records else {}
    db_in_range = {
        key: row for key, row in db_digests.items() if _in_range(row.start_time, row.end_time, start, end)
    }

    # Digests: signature, location, and the link to the previous digest.
    for key, digest in sorted(in_range.items()):
        report.digests_checked += 1
        if not digest.valid:
            kind = REORDERED if digest.error.startswith("was moved") else INVALID_DIGEST
            report.add(kind, key, f"digest {digest.error}")
            continue
        previous_ok = _check_link(digest, digests, db_digests, report)
        if previous_ok:
            report.digests_valid += 1
    _check_chain_shape(in_range, digests, report)
    _check_pinned(expect.pinned, digests, report)
    report.heads = _heads(in_range)
    if end is None:
        _check_overdue(expect, digests, records, report)

    # The database remembers every digest it wrote: none may be missing, none may be unknown.
    if records is not None:
        heads: dict[tuple[str, str], int] = {}
        for row in records.digests:
            heads[(row.account_id, row.region)] = max(
                heads.get((row.account_id, row.region), 0), row.position
            )
        for key, row in sorted(db_in_range.items()):
            if key not in digests:
                if row.position == heads[(row.account_id, row.region)]:
                    detail = (
                        f"the newest digest of chain {row.account_id}/{row.region} (#{row.position}) is "
                        "missing: the chain was truncated"
                    )
                    report.add(BROKEN_CHAIN, key, detail)
                else:
                    report.add(DELETED, key, f"digest #{row.position} of chain {row.account_id}/{row.region}")
            elif (
                digests[key].content is not None and sha256_hex(digests[key].content or b"") != row.hash_value
            ):
                report.add(MODIFIED, key, "digest content differs from the digest that was written")
        for key in sorted(in_range):
            if key not in db_digests:
                report.add(INSERTED, key, "digest file that Khoa never wrote")

    # Log files: what each must hash to, from valid digests first, then the database.
    expected: dict[str, _Expected] = {}
    listed_by: dict[str, list[str]] = {}
    for key, digest in sorted(digests.items()):
        if not digest.valid:
            continue
        for entry in digest.data.get("logFiles") or []:
            if not isinstance(entry, dict):
                continue
            log_key = str(entry.get("s3Object", ""))
            listed_by.setdefault(log_key, []).append(key)
            if key in in_range and log_key not in expected:
                expected[log_key] = _Expected(log_key, str(entry.get("hashValue", "")), key)
    for log_key, owners in sorted(listed_by.items()):
        if len(owners) > 1:
            report.add(REORDERED, log_key, f"listed by more than one digest: {', '.join(owners)}")
    if records is not None:
        for row in records.log_files:
            if row.s3_object in expected or row.s3_object in listed_by:
                continue
            owner = records.digest_keys.get(row.digest_id) if row.digest_id is not None else None
            if owner is not None and owner in db_digests and owner not in db_in_range:
                continue
            if owner is None and not _in_range(row.delivered_at, row.delivered_at, start, end):
                continue
            source = f"database (its digest {owner} is not valid)" if owner else "database"
            expected[row.s3_object] = _Expected(row.s3_object, row.hash_value, source, pending=owner is None)

    on_disk = set(log_keys)  # in the directory or the database
    actual: dict[str, str | None] = {}
    rows = _RowCheck(events, report, _retention_horizon(events, expect, digests), records) if events else None
    for key in sorted(on_disk | set(expected)):
        if key in on_disk:
            raw = copies.read(key)
            content = _inflate(raw) if raw is not None else None
            actual[key] = sha256_hex(content) if content is not None else None
            entry = expected.get(key)
            if (
                rows is not None
                and content is not None
                and entry is not None
                and actual[key] == entry.hash_value
            ):
                rows.check_file(key, content)  # the log file is what a digest (or delivery) vouches for
    hash_owner = {e.hash_value: e.key for e in expected.values()}

    for key, entry in sorted(expected.items()):
        report.log_files_checked += 1
        if key not in on_disk:
            report.add(DELETED, key, f"log file listed by {entry.source} is missing")
            continue
        got = actual.get(key)
        if got is None:
            report.add(MODIFIED, key, "log file is not a valid gzip file")
        elif got == entry.hash_value:
            report.log_files_valid += 1
            if entry.pending:
                report.pending_log_files += 1
        elif got in hash_owner and hash_owner[got] != key:
            report.add(REORDERED, key, f"holds the content of {hash_owner[got]} (files swapped or moved)")
        else:
            report.add(
                MODIFIED, key, f"SHA-256 of the content is {got}, {entry.source} lists {entry.hash_value}"
            )

    for key in sorted(on_disk - set(expected) - set(listed_by)):
        when = _name_time(key)
        if when is not None and not _in_range(when, when, start, end):
            continue
        report.add(INSERTED, key, "log file that no digest lists and Khoa never delivered")
    if rows is not None:
        # Rows counted as delivered must each be in a log file: only when every file was checked and
        # found intact (otherwise each event of a damaged file would be reported once more).
        damaged = any(actual.get(key) != entry.hash_value for key, entry in expected.items())
        if start is None and end is None and not damaged:
            rows.check_delivered()
        rows.finish()
    return report


def _check_digest(digest: _Digest, keys: dict[str, rsa.RSAPublicKey]) -> bool:
    data = digest.data
    if data.get("digestS3Bucket") != BUCKET or data.get("digestS3Object") != digest.key:
        digest.error = f"was moved: it belongs at {data.get('digestS3Bucket')}/{data.get('digestS3Object')}"
        return False
    if digest.signature is None:
        digest.error = f"has no signature file ({digest.key}{SIGNATURE_SUFFIX} is missing)"
        return False
    key = keys.get(str(data.get("digestPublicKeyFingerprint")))
    if key is None:
        digest.error = f"is signed by an unknown key {data.get('digestPublicKeyFingerprint')}"
        return False
    if data.get("digestSignatureAlgorithm") != "SHA256withRSA":
        digest.error = f"uses an unknown signature algorithm {data.get('digestSignatureAlgorithm')}"
        return False
    previous = data.get("previousDigestSignature")
    to_sign = string_to_sign(
        str(data.get("digestEndTime")),
        BUCKET,
        digest.key,
        sha256_hex(digest.content or b""),
        previous if isinstance(previous, str) else None,
    )
    try:
        key.verify(bytes.fromhex(digest.signature), to_sign, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        digest.error = "signature does not match: the digest or its signature was modified or forged"
        return False
    return True


def _check_link(
    digest: _Digest, digests: dict[str, _Digest], db_digests: dict[str, Any], report: Report
) -> bool:
    data = digest.data
    previous_key = data.get("previousDigestS3Object")
    if previous_key is None:
        row = db_digests.get(digest.key)
        if row is not None and row.position != 1:
            report.add(BROKEN_CHAIN, digest.key, "names no previous digest but is not the first of its chain")
            return False
        end = digest.end
        older = [
            d.key
            for d in digests.values()
            if d.valid and d.chain == digest.chain and d.end is not None and end is not None and d.end < end
        ]
        if older:
            report.add(BROKEN_CHAIN, digest.key, f"names no previous digest, yet {older[0]} is older")
            return False
        return True
    previous = digests.get(str(previous_key))
    if data.get("previousDigestS3Bucket") != BUCKET or previous is None:
        report.add(
            BROKEN_CHAIN,
            digest.key,
            f"previous digest {data.get('previousDigestS3Bucket')}/{previous_key} is missing (chain cut)",
        )
        return False
    if previous.content is None or sha256_hex(previous.content) != data.get("previousDigestHashValue"):
        report.add(
            BROKEN_CHAIN, digest.key, f"previous digest {previous_key} does not have the recorded hash"
        )
        return False
    if previous.signature != data.get("previousDigestSignature"):
        report.add(
            BROKEN_CHAIN, digest.key, f"previous digest {previous_key} does not have the recorded signature"
        )
        return False
    return True


def _check_chain_shape(in_range: dict[str, _Digest], digests: dict[str, _Digest], report: Report) -> None:
    """Two digests naming the same previous one fork the chain; a digest older than another must
    come before it."""
    named: dict[str, list[str]] = {}
    for digest in digests.values():
        if digest.valid and isinstance(digest.data.get("previousDigestS3Object"), str):
            named.setdefault(digest.data["previousDigestS3Object"], []).append(digest.key)
    for previous_key, successors in sorted(named.items()):
        if len(successors) > 1 and any(s in in_range for s in successors):
            report.add(BROKEN_CHAIN, previous_key, f"is named as previous by {', '.join(sorted(successors))}")
        for successor in successors:
            before, after = digests.get(previous_key), digests[successor]
            if before and before.end is not None and after.end is not None and before.end >= after.end:
                report.add(REORDERED, successor, f"ends before its previous digest {previous_key}")


def _heads(in_range: dict[str, _Digest]) -> list[Head]:
    """The newest valid digest of each chain among those checked."""
    newest: dict[tuple[str, str], _Digest] = {}
    for digest in in_range.values():
        if not digest.valid or digest.content is None:
            continue
        current = newest.get(digest.chain)
        if current is None or (digest.end or 0.0, digest.key) > (current.end or 0.0, current.key):
            newest[digest.chain] = digest
    return [
        Head(account, region, d.key, sha256_hex(d.content or b""), d.end)
        for (account, region), d in sorted(newest.items())
    ]


def _check_pinned(pinned: Collection[str], digests: dict[str, _Digest], report: Report) -> None:
    """Every pinned digest (by the SHA-256 of its content) must be a valid digest of the trail. The
    links of the digests after it are checked like every other, so the chain from it to the newest
    digest is whole; a pinned digest that is gone means the chain was cut (or rewritten) after it."""
    if not pinned:
        return
    by_hash = {sha256_hex(d.content): d for d in digests.values() if d.content is not None}
    for value in sorted(pinned):
        digest = by_hash.get(value)
        if digest is None:
            report.add(
                BROKEN_CHAIN,
                f"pinned digest sha256 {value}",
                "is not in the trail: the chain was truncated or rewritten after it (whoever can write "
                "the database and the audit directory removed it and what followed)",
            )
        elif not digest.valid:
            report.add(
                BROKEN_CHAIN, digest.key, f"is the pinned digest sha256 {value}, and it does not verify"
            )
        else:
            report.pinned_found += 1


def _check_overdue(
    expect: Expectations, digests: dict[str, _Digest], records: TrailRecords | None, report: Report
) -> None:
    """While the trail is delivered, the leader writes each chain's digest once a period is over
    (in the pass that delivers, and ``khoa audit digest`` writes every chain's): so no chain's newest
    digest ends more than a period (plus the grace) before the latest delivery or digest of any chain.
    A stopped server delivers nothing and writes nothing, so it is never held against the trail; the
    evidence is what the trail itself shows (someone who removes every trace of the later deliveries
    too is caught only by a pinned digest)."""
    period = expect.digest_seconds
    if period is None or period <= 0:
        return
    limit = period + expect.grace_seconds
    latest: tuple[float, str] | None = None
    evidence: list[tuple[float, str]] = [
        (d.end, f"digest {d.key} ends at {iso(d.end)}")
        for d in digests.values()
        if d.valid and d.end is not None
    ]
    if records is not None:
        evidence += [
            (float(row.delivered_at), f"log file {row.s3_object} was delivered at {iso(row.delivered_at)}")
            for row in records.log_files
            if row.delivered_at is not None
        ]
        evidence += [
            (float(row.end_time), f"digest {row.s3_object} ends at {iso(row.end_time)}")
            for row in records.digests
            if row.end_time is not None
        ]
    if not evidence:
        return
    latest = max(evidence)
    heads: dict[tuple[str, str], _Digest] = {}
    for digest in digests.values():
        if digest.valid and digest.end is not None:
            head = heads.get(digest.chain)
            if head is None or (digest.end, digest.key) > (head.end or 0.0, head.key):
                heads[digest.chain] = digest
    why = (
        f"more than one digest period ({period:g} s, KHOA_AUDIT_DIGEST_SECONDS as this command reads it) "
        f"and {expect.grace_seconds:g} s later. While the trail is delivered every chain gets a digest each "
        "period: its newer digests were removed (the chain was truncated), or the server failed to write them"
    )
    for (account, region), head in sorted(heads.items()):
        if head.end is not None and latest[0] > head.end + limit:
            report.add(
                BROKEN_CHAIN,
                head.key,
                f"is the newest digest of chain {account}/{region} and ends at {iso(head.end)}, "
                f"yet {latest[1]}: {why}",
            )
    if records is None:
        return
    first_pending: dict[tuple[str, str], Any] = {}
    for row in records.log_files:
        chain = (row.account_id, row.region)
        if row.digest_id is None and chain not in heads and row.delivered_at is not None:
            known = first_pending.get(chain)
            if known is None or row.delivered_at < known.delivered_at:
                first_pending[chain] = row
    for (account, region), row in sorted(first_pending.items()):
        if latest[0] > float(row.delivered_at) + limit:
            report.add(
                BROKEN_CHAIN,
                row.s3_object,
                f"was delivered at {iso(row.delivered_at)} and chain {account}/{region} has no digest, yet "
                f"{latest[1]}: " + why,
            )


def _retention_horizon(events: EventRows | None, expect: Expectations, digests: dict[str, _Digest]) -> float:
    """Events older than this may have left the database by retention (-inf: none may have). The
    server's clock may be ahead of the verifier's: it is at least at the newest signed digest's end,
    and one period and the grace are added to both."""
    if events is None or events.retention_days <= 0:
        return -math.inf
    newest = max((d.end for d in digests.values() if d.valid and d.end is not None), default=0.0)
    margin = (expect.digest_seconds or 0.0) + expect.grace_seconds
    return max(events.now, newest) + margin - events.retention_days * 86400.0


_EVENTS = schema.audit_events
_ROW_COLUMNS = (
    _EVENTS.c.seq,
    _EVENTS.c.event_id,
    _EVENTS.c.account_id,
    _EVENTS.c.region,
    _EVENTS.c.event_time,
    _EVENTS.c.event_source,
    _EVENTS.c.event_name,
    _EVENTS.c.username,
    _EVENTS.c.access_key_id,
    _EVENTS.c.resource_names,
    _EVENTS.c.resource_types,
    _EVENTS.c.read_only,
    _EVENTS.c.error_code,
    _EVENTS.c.record,
    _EVENTS.c.event_type,
    _EVENTS.c.principal_arn,
    _EVENTS.c.source_ip,
    _EVENTS.c.log_file,
)
_ROW_BATCH = 500
# Event IDs of the log files kept to name a delivered row no file holds (beyond, they are counted).
_SEEN_LIMIT = 1_000_000
# What completing a write's first record (made before it ran) may change: the record's outcome.
_OUTCOME_FIELDS = frozenset(
    {
        "eventTime",
        "responseElements",
        "errorCode",
        "errorMessage",
        "additionalEventData",
        "resources",
        "sharedEventID",
    }
)


def _outcome_open(record: dict[str, Any]) -> bool:
    """A write's first record (its outcome to follow), or one whose outcome was lost: its row may
    since hold the completed record, under the same event ID."""
    data = record.get("additionalEventData")
    return (isinstance(data, dict) and PENDING_KEY in data) or record.get("errorCode") == UNKNOWN_CODE


def _identity_columns(identity: Any) -> dict[str, Any]:
    """The username and principal_arn columns the recorder derives from who acted, where the record's
    userIdentity tells them (events.username_of and events.acting_principal)."""
    if not isinstance(identity, dict):
        return {}
    kind = identity.get("type")
    arn = identity.get("arn") if isinstance(identity.get("arn"), str) else None
    if kind in ("Unknown", "AWSService"):
        return {"username": None, "principal_arn": None}
    if kind == "Root":
        return {"username": "root", "principal_arn": arn or None}
    if kind == "IAMUser":
        return {"username": identity.get("userName"), "principal_arn": arn or None}
    if kind == "AssumedRole":
        context = identity.get("sessionContext")
        issuer = context.get("sessionIssuer") if isinstance(context, dict) else None
        role = issuer.get("arn") if isinstance(issuer, dict) else None
        return {"username": arn.rsplit("/", 1)[-1] if arn else None, "principal_arn": role}
    return {}


def _resource_columns(resources: Any) -> tuple[str | None, str | None]:
    """The resource_names and resource_types columns of a record's resources (as the recorder sets them)."""
    if not isinstance(resources, list):
        return None, None
    entries = [r for r in resources if isinstance(r, dict)]
    names = "\n".join(str(r.get("ARN", "")) for r in entries) or None
    types = "\n".join(sorted({str(r.get("type", "")) for r in entries})) or None
    return names, types


def _row_differences(row: Any, signed: dict[str, Any], longest_write_seconds: float) -> list[str]:
    """What of an event's row differs from its record in a signed log file (empty: nothing)."""
    try:
        stored = json.loads(row.record)
    except ValueError:
        stored = None
    if not isinstance(stored, dict):
        return ["record (not a JSON object)"]
    differences: list[str] = []
    outcome_open = _outcome_open(signed) or _outcome_open(stored)
    if outcome_open:
        fields = sorted((set(signed) | set(stored)) - _OUTCOME_FIELDS)
    else:
        fields = sorted(set(signed) | set(stored))
    differences += [f"record.{name}" for name in fields if signed.get(name) != stored.get(name)]
    identity = signed.get("userIdentity")
    columns: list[tuple[str, Any, Any]] = [
        ("account_id", row.account_id, signed.get("recipientAccountId")),
        ("region", row.region, signed.get("awsRegion")),
        ("event_source", row.event_source, signed.get("eventSource")),
        ("event_name", row.event_name, signed.get("eventName")),
        ("read_only", bool(row.read_only), signed.get("readOnly")),
        (
            "access_key_id",
            row.access_key_id or None,
            (identity.get("accessKeyId") if isinstance(identity, dict) else None) or None,
        ),
        # the row's own record (checked above) and the columns copied from it agree
        ("error_code", row.error_code or None, stored.get("errorCode") or None),
    ]
    if not outcome_open:  # (a completed outcome brings its resources, with the record and columns)
        names, types = _resource_columns(signed.get("resources"))
        columns += [
            ("resource_names", row.resource_names, names),
            ("resource_types", row.resource_types, types),
        ]
    derived = _identity_columns(identity)
    if "username" in derived:
        columns.append(("username", row.username, derived["username"]))
    if row.event_type is not None or row.principal_arn is not None or row.source_ip is not None:
        # (rows recorded before revision 0011 have none of these three)
        columns += [
            ("event_type", row.event_type, signed.get("eventType")),
            ("source_ip", row.source_ip, signed.get("sourceIPAddress")),
        ]
        if "principal_arn" in derived:
            columns.append(("principal_arn", row.principal_arn, derived["principal_arn"]))
    differences += [name for name, value, expected in columns if value != expected]
    # The column keeps the time of the call's first record; a write's record, completed with its
    # outcome, carries the time the call ended (the column never comes after it).
    when = _time_of(signed.get("eventTime"))
    earliest = 1.0 if signed.get("readOnly") is True else longest_write_seconds
    if when is None or not when - earliest <= float(row.event_time) < when + 2.0:
        differences.append("event_time")
    return differences


class _RowCheck:
    """Compares the events' database rows with the signed log files they were delivered to.

    Rows counted as delivered (the delivery cursor read with ``records``) that no log file holds are
    found by counting: the delivered rows the files matched against all delivered rows, so memory
    does not grow with the trail; they are named when the files' event IDs (up to
    :data:`_SEEN_LIMIT`) were kept."""

    def __init__(
        self, events: EventRows, report: Report, horizon: float, records: TrailRecords | None
    ) -> None:
        self.engine = events.engine
        self.longest_write_seconds = events.longest_write_seconds
        self.report = report
        self.horizon = horizon
        self.records = records
        self.seen: set[str] = set()
        self.overflow = False
        self.matched = 0  # delivered rows a verified log file holds
        self.counts: dict[str, int] = {}
        report.rows_checked = 0
        self.delivered = records.delivered_seq if records is not None else 0
        with self.engine.connect() as conn:
            newest = conn.execute(select(func.max(_EVENTS.c.seq))).scalar()
        if newest is not None and self.delivered > int(newest):
            self.delivered = 0  # the trail was emptied and numbering started again: delivery starts over too

    def _is_delivered(self, row: Any) -> bool:
        if row.log_file is not None:
            return True
        held = self.records.held if self.records is not None else frozenset()
        return int(row.seq) <= self.delivered and int(row.seq) not in held

    def _add(self, kind: str, path: str, detail: str) -> None:
        count = self.counts.get(kind, 0) + 1
        self.counts[kind] = count
        if count <= _ROW_FINDINGS_SHOWN:
            self.report.add(kind, path, detail)

    def finish(self) -> None:
        for kind, count in sorted(self.counts.items()):
            if count > _ROW_FINDINGS_SHOWN:
                self.report.add(
                    kind, "(more rows)", f"{count - _ROW_FINDINGS_SHOWN} more event row(s) like the above"
                )

    def check_file(self, key: str, content: bytes) -> None:
        """Each record of a verified log file against its row (by event ID)."""
        try:
            listed = json.loads(content).get("Records")
        except (ValueError, AttributeError):
            return
        if not isinstance(listed, list):
            return
        records = {
            r["eventID"]: r for r in listed if isinstance(r, dict) and isinstance(r.get("eventID"), str)
        }
        ids = list(records)
        for first in range(0, len(ids), _ROW_BATCH):
            chunk = ids[first : first + _ROW_BATCH]
            with self.engine.connect() as conn:
                found = {
                    row.event_id: row
                    for row in conn.execute(select(*_ROW_COLUMNS).where(_EVENTS.c.event_id.in_(chunk)))
                }
            for event_id in chunk:
                if not self.overflow:
                    if event_id in self.seen:
                        continue  # (in two log files: a signed file holds what it holds; counted once)
                    self.seen.add(event_id)
                    self.overflow = len(self.seen) >= _SEEN_LIMIT
                row = found.get(event_id)
                if row is not None and self._is_delivered(row):
                    self.matched += 1
                self._compare(key, records[event_id], row)

    def _compare(self, key: str, signed: dict[str, Any], row: Any) -> None:
        what = f"event {signed['eventID']} ({signed.get('eventName')} at {signed.get('eventTime')})"
        if row is None:
            when = _time_of(signed.get("eventTime"))
            if when is not None and when + 1.0 < self.horizon:
                return  # older than the retention: its row may have gone
            self.report.rows_checked = (self.report.rows_checked or 0) + 1
            self._add(
                ROW_DELETED,
                key,
                f"{what} is in this signed log file, but its database row is gone: LookupEvents and "
                "khoa audit tail no longer show it",
            )
            return
        self.report.rows_checked = (self.report.rows_checked or 0) + 1
        differences = _row_differences(row, signed, self.longest_write_seconds)
        if differences:
            self._add(
                ROW_MODIFIED,
                key,
                f"{what}: its database row differs from this signed log file in {', '.join(differences)}: "
                "LookupEvents and khoa audit tail show the altered row",
            )
        else:
            self.report.rows_valid += 1

    def check_delivered(self) -> None:
        """Every row the delivery cursor counts as delivered must be in a log file."""
        if self.records is None:
            return
        c = _EVENTS.c
        delivered = or_(c.seq <= self.delivered, c.log_file.is_not(None))
        held = sorted(self.records.held)
        with self.engine.connect() as conn:
            total = int(conn.execute(select(func.count()).where(delivered)).scalar() or 0)
            for first in range(0, len(held), _ROW_BATCH):
                chunk = held[first : first + _ROW_BATCH]
                total -= int(
                    conn.execute(
                        select(func.count()).where(
                            c.seq.in_(chunk), c.seq <= self.delivered, c.log_file.is_(None)
                        )
                    ).scalar()
                    or 0
                )
        if total <= self.matched:
            return
        if self.overflow:
            self._add(
                ROW_INSERTED,
                "audit_events",
                f"{total - self.matched} event row(s) count as delivered, yet no log file of the trail holds "
                f"them (the trail holds more than {_SEEN_LIMIT} events: verify counts them but does not "
                "name them): LookupEvents and khoa audit tail show events the signed trail does not have",
            )
            return
        after: int | None = None  # (from the very first row: a number below 1 is no less delivered)
        while True:
            query = select(c.seq, c.event_id, c.event_name, c.event_time, c.log_file).where(delivered)
            if after is not None:
                query = query.where(c.seq > after)
            with self.engine.connect() as conn:
                rows = conn.execute(query.order_by(c.seq).limit(5000)).all()
            if not rows:
                return
            after = int(rows[-1].seq)
            for row in rows:
                if row.event_id in self.seen or not self._is_delivered(row):
                    continue
                self._add(
                    ROW_INSERTED,
                    f"audit_events seq {row.seq}",
                    f"event {row.event_id} ({row.event_name} at {iso(row.event_time)}) counts as "
                    "delivered, yet no log file of the trail holds it: LookupEvents and khoa audit tail "
                    "show an event the signed trail does not have",
                )


def summary_lines(report: Report) -> Iterable[str]:
    lo = iso(report.first_time) if report.first_time is not None else "the first digest"
    hi = iso(report.last_time) if report.last_time is not None else "now"
    yield f"Results requested for {lo} to {hi}"
    yield f"{report.digests_valid}/{report.digests_checked} digest files valid"
    yield f"{report.log_files_valid}/{report.log_files_checked} log files valid"
    if report.pending_log_files:
        yield f"{report.pending_log_files} log file(s) delivered and intact, not yet in a digest"
    if report.rows_checked is not None:
        yield f"{report.rows_valid}/{report.rows_checked} delivered event rows match the signed log files"
    if report.pinned_found:
        yield f"{report.pinned_found} pinned digest(s) found in the chain"
