"""``khoa audit verify``: CloudTrail's log file integrity validation over the trail's files.

For every digest file: it must sit where it says it belongs, be signed (SHA256withRSA over CloudTrail's
string to sign) by a known trail key, and name a previous digest that exists with the hash and
signature it records. For every log file a digest lists: it must exist and its uncompressed content
must hash to the listed SHA-256. Files that no digest lists are inserted, unless the database knows
them as delivered and not yet digested (and their hash matches). The database's own list of digests
anchors the newest end of each chain, so deleting the latest digest (truncating the chain) is found
too.

The database keeps a copy of every file (:mod:`khoa.audit.stored`). On a single node
(``directory_complete``) the directory is the trail checked, as its only writer put every file there,
and each file must also agree with the database's copy. A node of a cluster holds only the files it
delivered itself, so there the database's copy stands in for every file the directory lacks: the
whole trail verifies from any node.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from sqlalchemy import Engine, select

from khoa.audit.files import SIGNATURE_SUFFIX, STAGING_DIR
from khoa.audit.formats import BUCKET, iso, parse_iso, sha256_hex, string_to_sign
from khoa.audit.signing import fingerprint, public_key_der
from khoa.audit.stored import StoredFiles
from khoa.storage import schema

# Finding kinds, worst first in the report.
BROKEN_CHAIN = "BROKEN CHAIN"
INVALID_DIGEST = "INVALID DIGEST"
DELETED = "DELETED"
MODIFIED = "MODIFIED"
REORDERED = "REORDERED"
INSERTED = "INSERTED"
_ORDER = [BROKEN_CHAIN, INVALID_DIGEST, DELETED, MODIFIED, REORDERED, INSERTED]


@dataclass(frozen=True)
class Finding:
    kind: str
    path: str
    detail: str


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
    """What the database remembers of the trail (the anchor for the newest end of each chain)."""

    digests: list[Any] = field(default_factory=list)
    log_files: list[Any] = field(default_factory=list)
    digest_keys: dict[int, str] = field(default_factory=dict)


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
    with engine.connect() as conn:
        digests = list(conn.execute(select(schema.audit_digests).order_by(schema.audit_digests.c.digest_id)))
        files = list(conn.execute(select(schema.audit_log_files).order_by(schema.audit_log_files.c.file_id)))
    return TrailRecords(digests, files, {d.digest_id: d.s3_object for d in digests})


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
) -> Report:
    report = Report(first_time=start, last_time=end)
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
    for key in sorted(on_disk | set(expected)):
        if key in on_disk:
            raw = copies.read(key)
            content = _inflate(raw) if raw is not None else None
            actual[key] = sha256_hex(content) if content is not None else None
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


def summary_lines(report: Report) -> Iterable[str]:
    lo = iso(report.first_time) if report.first_time is not None else "the first digest"
    hi = iso(report.last_time) if report.last_time is not None else "now"
    yield f"Results requested for {lo} to {hi}"
    yield f"{report.digests_valid}/{report.digests_checked} digest files valid"
    yield f"{report.log_files_valid}/{report.log_files_checked} log files valid"
    if report.pending_log_files:
        yield f"{report.pending_log_files} log file(s) delivered and intact, not yet in a digest"
