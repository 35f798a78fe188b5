"""Log file delivery and signed digest files, exactly as CloudTrail's log file integrity validation.

Events recorded in ``audit_events`` are delivered, in sequence order, to gzipped log files
(``{"Records": [...]}``) laid out as CloudTrail lays them out in S3, under the audit directory that
stands in for the bucket (pseudo-bucket name :data:`BUCKET`)::

    AWSLogs/<account>/CloudTrail/<region>/YYYY/MM/DD/<account>_CloudTrail_<region>_<YYYYMMDDTHHmmZ>_<unique>.json.gz

Every period (hourly, and on demand) a digest file per (account, Region) lists each log file delivered
since the previous digest with the SHA-256 of its *uncompressed* content, and names the previous
digest's location, hash and signature, so the chain cannot be cut or edited unnoticed::

    AWSLogs/<account>/CloudTrail-Digest/<region>/YYYY/MM/DD/<account>_CloudTrail-Digest_<region>_khoa_<region>_<YYYYMMDDTHHMMSSZ>.json.gz

The digest is signed SHA256withRSA (PKCS#1 v1.5) with the trail's RSA-2048 key over CloudTrail's
string to sign (``digestEndTime``, ``bucket/object`` of the digest, hex SHA-256 of the uncompressed
digest, previous digest's hex signature or ``null``, one per line). CloudTrail keeps that signature in
the object's ``x-amz-meta-signature`` metadata; with no S3 it is stored, hex-encoded, in a sidecar file
``<digest>.json.gz.sig``.

Delivery keeps a cursor (``audit_delivery``): every event up to its sequence number is in a log
file, except numbers it passed before their transactions committed (PostgreSQL hands out sequence
numbers in one order and commits in another), which it holds and delivers when they appear (a
:class:`khoa.sequence.SequenceCursor`, persisted as the row's ``delivered_seq`` and ``held``). A cursor
costs one row per pass where marking each delivered event cost an UPDATE per event.

Crash safety: a file is first written to ``.staging/`` and fsynced; then, in one transaction, its row
is recorded and the delivery cursor moved (or the log files a digest holds are marked); only then is
it moved into place. A restart finishes the move of any staged file the database knows about and
drops the others.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import logging
import math
import os
import re
import secrets
import string
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from sqlalchemy import Connection, Engine, Row, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from khoa.clock import wall_clock
from khoa.crypto.barrier import Barrier
from khoa.sequence import GapPolicy, SequenceCursor
from khoa.settings import Settings
from khoa.storage import schema

log = logging.getLogger("khoa.audit")

BUCKET = "khoa-audit"
TRAIL_NAME = "khoa"
HASH_ALGORITHM = "SHA-256"
SIGNATURE_ALGORITHM = "SHA256withRSA"
STAGING_DIR = ".staging"
SIGNATURE_SUFFIX = ".sig"
KEY_BITS = 2048
MAX_RECORDS_PER_FILE = 5000
# A mutating call's event is recorded before the call runs and completed right after. Delivery only
# takes events that were already there a while ago, so it does not freeze one that is about to change:
# the leader's job takes what it saw at least JOB_SETTLE_SECONDS earlier (from an earlier pass, so it
# never waits); ``khoa audit digest`` takes everything, after waiting SETTLE_SECONDS.
SETTLE_SECONDS = 1.0
JOB_SETTLE_SECONDS = 10.0
_LOCK_NAME = "audit-trail"
_LOCK_SECONDS = 300.0
_STALE_STAGING_SECONDS = 600.0
_RETENTION_INTERVAL_SECONDS = 3600.0
_UNIQUE_ALPHABET = string.ascii_letters + string.digits
_SAFE_REGION = re.compile(r"^[a-z0-9-]{1,32}$")
_SAFE_ACCOUNT = re.compile(r"^[0-9]{12}$")

# Delivery waits this long for a sequence number it passed to appear (a transaction that had taken
# it but not committed): see khoa.sequence.
_GAP_SECONDS = 60.0
_GAPS = GapPolicy("audit trail", _GAP_SECONDS)
_DELIVERY_NAME = "trail"

_EVENTS = schema.audit_events
_DELIVERY = schema.audit_delivery
_FILES = schema.audit_log_files
_DIGESTS = schema.audit_digests
_KEYS = schema.audit_trail_keys


class TrailBusy(Exception):
    """Another process is delivering or writing digests right now."""


class TrailConflict(Exception):
    """Another writer delivered the same events or extended the same chain first; nothing was kept."""


# -- formats --------------------------------------------------------------------------------------


def iso(epoch: float) -> str:
    """CloudTrail's UTC extended format, to the second (``2015-08-17T14:01:31Z``)."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def safe_account(account_id: str) -> str:
    return account_id if _SAFE_ACCOUNT.match(account_id or "") else "unknown"


def safe_region(region: str) -> str:
    """Regions come from signed credential scopes, so they are caller-chosen: never let one make a path."""
    return region if _SAFE_REGION.match(region or "") else "unknown"


def log_file_key(account_id: str, region: str, delivered_at: float, unique: str) -> str:
    moment = datetime.fromtimestamp(delivered_at, UTC)
    return (
        f"AWSLogs/{account_id}/CloudTrail/{region}/{moment:%Y/%m/%d}/"
        f"{account_id}_CloudTrail_{region}_{moment:%Y%m%dT%H%MZ}_{unique}.json.gz"
    )


def digest_key(account_id: str, region: str, end_time: float) -> str:
    moment = datetime.fromtimestamp(end_time, UTC)
    return (
        f"AWSLogs/{account_id}/CloudTrail-Digest/{region}/{moment:%Y/%m/%d}/"
        f"{account_id}_CloudTrail-Digest_{region}_{TRAIL_NAME}_{region}_{moment:%Y%m%dT%H%M%SZ}.json.gz"
    )


def log_file_content(records: Sequence[str]) -> bytes:
    """The uncompressed log file: the stored JSON records, verbatim, in ``{"Records": [...]}``."""
    return b'{"Records":[' + b",".join(r.encode() for r in records) + b"]}"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def string_to_sign(
    digest_end_time: str, bucket: str, s3_object: str, digest_hash: str, previous_signature: str | None
) -> bytes:
    """CloudTrail's data signing string (a missing previous signature is the text ``null``)."""
    return f"{digest_end_time}\n{bucket}/{s3_object}\n{digest_hash}\n{previous_signature or 'null'}".encode()


def public_key_der(key: rsa.RSAPublicKey) -> bytes:
    """The public key as CloudTrail's ListPublicKeys returns it: DER-encoded PKCS#1 RSAPublicKey."""
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)


def fingerprint(public_der: bytes) -> str:
    """Hex MD5 of the PKCS#1 DER public key: 32 hex digits, the shape of CloudTrail's fingerprints.
    It names a key; trust comes from the full public key the verifier pinned, not from this hash."""
    return hashlib.md5(public_der, usedforsecurity=False).hexdigest()


def key_binding(key_fingerprint: str) -> str:
    return f"audit_trail_keys:{key_fingerprint}"


def sign(private_key: rsa.RSAPrivateKey, data: bytes) -> str:
    return private_key.sign(data, padding.PKCS1v15(), hashes.SHA256()).hex()


# -- files ----------------------------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dirs(path: Path) -> None:
    """mkdir -p, syncing each parent that gained an entry so the new directories survive a crash."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=0o750)
        _fsync_dir(directory.parent)


def _write_synced(path: Path, data: bytes) -> None:
    _make_dirs(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    _fsync_dir(path.parent)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


@dataclass(frozen=True)
class SigningKey:
    fingerprint: str
    private_key: rsa.RSAPrivateKey


@dataclass(frozen=True)
class DeliveryState:
    """The delivery cursor as read (``stored``: the row's values, for the guarded update; None
    before the first delivery)."""

    cursor: SequenceCursor
    stored: tuple[int, str] | None

    @property
    def delivered_seq(self) -> int:
        return self.cursor.position

    @property
    def held(self) -> Mapping[int, float]:
        return self.cursor.held


@dataclass(frozen=True)
class ClosedPeriod:
    log_files: list[str]
    digests: list[str]


class AuditTrail:
    """Delivers events to log files and writes signed digests (leader job and ``khoa audit digest``)."""

    def __init__(self, engine: Engine, barrier: Barrier, settings: Settings) -> None:
        self.engine = engine
        self.barrier = barrier
        self.directory = settings.effective_audit_dir
        self.delivery_seconds = settings.audit_delivery_seconds
        self.digest_seconds = settings.audit_digest_seconds
        self.retention_days = settings.audit_retention_days
        self.settle_seconds = SETTLE_SECONDS
        self.job_settle_seconds = JOB_SETTLE_SECONDS
        self._last_delivery = -math.inf
        self._last_retention = -math.inf
        self._holder = ""
        self._marks: list[tuple[float, int]] = []  # (monotonic time, newest undelivered seq) per pass

    # -- entry points ----------------------------------------------------------------------------
    def run_job(self, now: datetime) -> None:
        """The leader's pass: deliver every few minutes, write digests for periods that are over,
        then drop delivered events past the retention."""
        at = now.timestamp()
        with self._lock(wait=0) as held:
            if held:
                self._recover()
                due = self._due_chains(at)
                watermark = self._settled_watermark()
                wanted = due or at - self._last_delivery >= self.delivery_seconds or self._backlog()
                if wanted and watermark is not None:
                    delivered = self._deliver(at, watermark)
                    self._last_delivery = at
                    if delivered:
                        log.info("audit trail: delivered %d log file(s)", len(delivered))
                if due:
                    written = self._write_digests(at, due)
                    log.info("audit trail: wrote %d digest file(s)", len(written))
        if at - self._last_retention >= _RETENTION_INTERVAL_SECONDS:
            self.apply_retention(at)
            self._last_retention = at

    def close_period(self, now: float | None = None, wait: float = 60.0) -> ClosedPeriod:
        """Deliver pending events and write every chain's digest now (``khoa audit digest``)."""
        with self._lock(wait=wait) as held:
            if not held:
                raise TrailBusy("another process is writing the audit trail; try again")
            self._recover()
            at = wall_clock().timestamp() if now is None else now
            newest = self._newest_pending()
            files: list[str] = []
            if newest is not None:
                if self.settle_seconds > 0:
                    time.sleep(self.settle_seconds)
                files = self._deliver(at, newest)
            self._last_delivery = at
            digests = self._write_digests(at, None)
        return ClosedPeriod(files, digests)

    def apply_retention(self, now: float) -> int:
        """Remove delivered events older than the retention (their log files stay)."""
        if self.retention_days <= 0:
            return 0
        cutoff = now - self.retention_days * 86400.0
        delivered = self._delivery_state().delivered_seq
        with self.engine.begin() as conn:
            result = conn.execute(
                delete(_EVENTS)
                .where(or_(_EVENTS.c.seq <= delivered, _EVENTS.c.log_file.is_not(None)))
                .where(_EVENTS.c.event_time < cutoff)
            )
        if result.rowcount:
            log.info("audit retention removed %d delivered events", result.rowcount)
        return int(result.rowcount or 0)

    # -- keys ------------------------------------------------------------------------------------
    def signing_key(self, now: float) -> SigningKey:
        """The current trail key, created (and sealed, bound to its row) on first use."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(_KEYS)
                .where(_KEYS.c.valid_to.is_(None))
                .order_by(_KEYS.c.valid_from.desc(), _KEYS.c.fingerprint)
                .limit(1)
            ).first()
        if row is None:
            private_key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
            der = public_key_der(private_key.public_key())
            key_id = fingerprint(der)
            pkcs8 = private_key.private_bytes(
                serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            with self.engine.begin() as conn:
                conn.execute(
                    insert(_KEYS).values(
                        fingerprint=key_id,
                        public_key=der,
                        private_key_sealed=self.barrier.seal(pkcs8, key_binding(key_id)),
                        valid_from=now,
                        valid_to=None,
                    )
                )
            log.info("created audit trail signing key %s", key_id)
            return SigningKey(key_id, private_key)
        loaded = serialization.load_der_private_key(
            self.barrier.open(row.private_key_sealed, key_binding(row.fingerprint)), password=None
        )
        if not isinstance(loaded, rsa.RSAPrivateKey) or fingerprint(public_key_der(loaded.public_key())) != (
            row.fingerprint
        ):
            raise ValueError(f"audit trail key {row.fingerprint} does not match its fingerprint")
        return SigningKey(row.fingerprint, loaded)

    # -- delivery --------------------------------------------------------------------------------
    def _delivery_state(self) -> DeliveryState:
        with self.engine.connect() as conn:
            row = conn.execute(select(_DELIVERY).where(_DELIVERY.c.name == _DELIVERY_NAME)).first()
        if row is None:
            return DeliveryState(SequenceCursor(), None)
        cursor = SequenceCursor.from_pairs(row.delivered_seq, json.loads(row.held))
        return DeliveryState(cursor, (int(row.delivered_seq), row.held))

    def _newest_event(self) -> int | None:
        with self.engine.connect() as conn:
            newest = conn.execute(select(func.max(_EVENTS.c.seq))).scalar()
        return int(newest) if newest is not None else None

    def _backlog(self) -> bool:
        newest = self._newest_event()
        return newest is not None and newest - self._delivery_state().delivered_seq >= MAX_RECORDS_PER_FILE

    def _newest_pending(self) -> int | None:
        """The newest event not delivered yet (None when there is none)."""
        newest = self._newest_event()
        if newest is None or newest <= self._delivery_state().delivered_seq:
            return None
        return newest

    def _settled_watermark(self) -> int | None:
        """Note the newest undelivered event now; return the newest noted at least the job's settle
        time ago (None when no earlier pass saw undelivered events long enough ago)."""
        moment = time.monotonic()
        settled = [seq for at, seq in self._marks if moment - at >= self.job_settle_seconds]
        newest = self._newest_pending()
        keep = [(at, seq) for at, seq in self._marks if moment - at < self.job_settle_seconds]
        if settled:
            keep.insert(0, (moment - self.job_settle_seconds, max(settled)))
        if newest is not None:
            keep.append((moment, newest))
        self._marks = keep[-64:]
        return max(settled) if settled else None

    def _deliver(self, now: float, watermark: int) -> list[str]:
        """Deliver undelivered events up to sequence number ``watermark``, in order."""
        delivered: list[str] = []
        conflicts = 0
        while True:
            state = self._delivery_state()
            if state.delivered_seq > (self._newest_event() or 0):
                # The trail was emptied and numbering started again (SQLite reuses rowids).
                log.warning(
                    "audit trail: sequence went back below %d; delivering from the start", state.delivered_seq
                )
                state = DeliveryState(SequenceCursor(), state.stored)
            if state.delivered_seq >= watermark and not state.held:
                break
            c = _EVENTS.c
            columns = (c.seq, c.account_id, c.region, c.event_time, c.record, c.log_file)
            with self.engine.connect() as conn:
                # Two queries, each walking the primary key in order (one with an OR sorted the
                # whole undelivered range on every pass).
                fresh = conn.execute(
                    select(*columns)
                    .where(c.seq > state.delivered_seq, c.seq <= watermark)
                    .order_by(c.seq)
                    .limit(MAX_RECORDS_PER_FILE)
                ).all()
                wanted = state.cursor.wanted()
                late = (
                    conn.execute(select(*columns).where(c.seq.in_(wanted)).order_by(c.seq)).all()
                    if wanted
                    else []
                )
            rows = [*late, *fresh]  # held numbers are all below the cursor: still in sequence order
            full = len(fresh) == MAX_RECORDS_PER_FILE
            upto = fresh[-1].seq if full else max(state.delivered_seq, watermark)
            cursor, ready = state.cursor.advance((row.seq for row in rows), now, _GAPS, upto=upto)
            # Rows with a log_file were delivered before revision 0011 (the old scheme marked rows).
            ready_now = set(ready)
            undelivered = [row for row in rows if row.log_file is None and row.seq in ready_now]
            try:
                delivered += self._deliver_files(undelivered, state, cursor, now)
            except TrailConflict:
                conflicts += 1
                if conflicts > 3:
                    raise
                log.warning("another process delivered some of these events first; looking again")
                continue
            self._renew_lock()
            if not full:
                break
        return delivered

    def _deliver_files(
        self, rows: list[Row[Any]], state: DeliveryState, cursor: SequenceCursor, now: float
    ) -> list[str]:
        """Write one log file per (account, Region) of ``rows`` and move the cursor, all or nothing:
        files are staged, their rows and the new cursor committed in one transaction (guarded by the
        cursor read before, so a second writer cannot deliver the same events), then published."""
        groups: dict[tuple[str, str], list[Row[Any]]] = {}
        for row in rows:
            groups.setdefault((safe_account(row.account_id), safe_region(row.region)), []).append(row)
        staged: list[tuple[Path, str]] = []
        values: list[dict[str, Any]] = []
        try:
            for (account_id, region), group in groups.items():
                unique = "".join(secrets.choice(_UNIQUE_ALPHABET) for _ in range(16))
                key = log_file_key(account_id, region, now, unique)
                content = log_file_content([row.record for row in group])
                staged.append((self._stage(key, gzip.compress(content, compresslevel=6, mtime=0)), key))
                values.append(
                    {
                        "s3_object": key,
                        "account_id": account_id,
                        "region": region,
                        "hash_value": sha256_hex(content),
                        "oldest_event_time": min(row.event_time for row in group),
                        "newest_event_time": max(row.event_time for row in group),
                        "event_count": len(group),
                        "delivered_at": now,
                        "digest_id": None,
                    }
                )
            try:
                with self.engine.begin() as conn:
                    if values:
                        conn.execute(insert(_FILES), values)
                    self._advance(conn, state, cursor, now)
            except IntegrityError as exc:
                raise TrailConflict("another process started delivering first") from exc
        except BaseException:
            for path, key in staged:
                self._drop_unless_recorded(path, key, _FILES)
            raise
        for path, key in staged:
            self._publish(path, key)
        return [key for _, key in staged]

    @staticmethod
    def _advance(conn: Connection, state: DeliveryState, cursor: SequenceCursor, now: float) -> None:
        """Move the cursor, only if no other writer moved it since ``state`` was read."""
        new_held = json.dumps(cursor.held_pairs())
        if state.stored is None:  # the first delivery ever (a second first one fails on the key)
            conn.execute(
                insert(_DELIVERY).values(
                    name=_DELIVERY_NAME, delivered_seq=cursor.position, held=new_held, updated_at=now
                )
            )
            return
        stored_seq, stored_held = state.stored
        moved = conn.execute(
            update(_DELIVERY)
            .where(_DELIVERY.c.name == _DELIVERY_NAME)
            .where(_DELIVERY.c.delivered_seq == stored_seq)
            .where(_DELIVERY.c.held == stored_held)
            .values(delivered_seq=cursor.position, held=new_held, updated_at=now)
        ).rowcount
        if moved != 1:
            raise TrailConflict("another process delivered some of these events first")

    # -- digests ---------------------------------------------------------------------------------
    def _heads(self) -> dict[tuple[str, str], Row[Any]]:
        newest = (
            select(func.max(_DIGESTS.c.digest_id)).group_by(_DIGESTS.c.account_id, _DIGESTS.c.region)
        ).scalar_subquery()
        with self.engine.connect() as conn:
            rows = conn.execute(select(_DIGESTS).where(_DIGESTS.c.digest_id.in_(newest))).all()
        return {(row.account_id, row.region): row for row in rows}

    def _pending_files(self) -> dict[tuple[str, str], list[Row[Any]]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(_FILES).where(_FILES.c.digest_id.is_(None)).order_by(_FILES.c.file_id)
            ).all()
        pending: dict[tuple[str, str], list[Row[Any]]] = {}
        for row in rows:
            pending.setdefault((row.account_id, row.region), []).append(row)
        return pending

    def _due_chains(self, now: float) -> set[tuple[str, str]]:
        heads = self._heads()
        pending = self._pending_files()
        due = {chain for chain, head in heads.items() if now >= head.end_time + self.digest_seconds}
        for chain, files in pending.items():
            if chain not in heads and now >= min(f.delivered_at for f in files) + self.digest_seconds:
                due.add(chain)
        return due

    def _write_digests(self, now: float, chains: set[tuple[str, str]] | None) -> list[str]:
        heads = self._heads()
        pending = self._pending_files()
        wanted = sorted(set(heads) | set(pending)) if chains is None else sorted(chains)
        if not wanted:
            return []
        key = self.signing_key(now)
        written: list[str] = []
        for account_id, region in wanted:
            chain = (account_id, region)
            try:
                written.append(
                    self._write_digest(account_id, region, heads.get(chain), pending.get(chain, []), now, key)
                )
            except TrailConflict:
                # Another writer extended this chain (with these log files) a moment ago: its digest
                # closes the period as well.
                log.warning("another process wrote the digest of %s/%s first", account_id, region)
            self._renew_lock()
        return written

    def _write_digest(
        self,
        account_id: str,
        region: str,
        head: Row[Any] | None,
        files: list[Row[Any]],
        now: float,
        key: SigningKey,
    ) -> str:
        end = float(math.floor(now))
        if head is not None:
            end = max(end, head.end_time + 1.0)
        if files:
            end = max(end, float(math.ceil(max(f.delivered_at for f in files))))
        start = head.end_time if head is not None else min((f.delivered_at for f in files), default=end)
        start = min(start, end)
        s3_object = digest_key(account_id, region, end)
        body: dict[str, Any] = {
            "awsAccountId": account_id,
            "digestStartTime": iso(start),
            "digestEndTime": iso(end),
            "digestS3Bucket": BUCKET,
            "digestS3Object": s3_object,
            "digestPublicKeyFingerprint": key.fingerprint,
            "digestSignatureAlgorithm": SIGNATURE_ALGORITHM,
            "newestEventTime": iso(max(f.newest_event_time for f in files)) if files else None,
            "oldestEventTime": iso(min(f.oldest_event_time for f in files)) if files else None,
            "previousDigestS3Bucket": BUCKET if head is not None else None,
            "previousDigestS3Object": head.s3_object if head is not None else None,
            "previousDigestHashValue": head.hash_value if head is not None else None,
            "previousDigestHashAlgorithm": HASH_ALGORITHM if head is not None else None,
            "previousDigestSignature": head.signature if head is not None else None,
            "logFiles": [
                {
                    "s3Bucket": BUCKET,
                    "s3Object": f.s3_object,
                    "hashValue": f.hash_value,
                    "hashAlgorithm": HASH_ALGORITHM,
                    "newestEventTime": iso(f.newest_event_time),
                    "oldestEventTime": iso(f.oldest_event_time),
                }
                for f in files
            ],
        }
        content = json.dumps(body, separators=(",", ":")).encode()
        digest_hash = sha256_hex(content)
        signature = sign(
            key.private_key,
            string_to_sign(iso(end), BUCKET, s3_object, digest_hash, head.signature if head else None),
        )
        staged = self._stage(s3_object, gzip.compress(content, mtime=0))
        staged_signature = self._stage(s3_object + SIGNATURE_SUFFIX, signature.encode() + b"\n")
        file_ids = [f.file_id for f in files]
        try:
            with self.engine.begin() as conn:
                inserted = conn.execute(
                    insert(_DIGESTS).values(
                        account_id=account_id,
                        region=region,
                        position=(head.position + 1) if head is not None else 1,
                        s3_object=s3_object,
                        start_time=start,
                        end_time=end,
                        hash_value=digest_hash,
                        signature=signature,
                        fingerprint=key.fingerprint,
                        log_file_count=len(files),
                    )
                ).inserted_primary_key
                assert inserted is not None
                digest_id = inserted[0]
                for first in range(0, len(file_ids), 500):
                    chunk = file_ids[first : first + 500]
                    result = conn.execute(
                        update(_FILES)
                        .where(_FILES.c.file_id.in_(chunk))
                        .where(_FILES.c.digest_id.is_(None))
                        .values(digest_id=digest_id)
                    )
                    if result.rowcount != len(chunk):
                        raise TrailConflict("another process listed these log files in a digest first")
        except IntegrityError:
            self._drop_unless_recorded(staged, s3_object, _DIGESTS, staged_signature)
            raise TrailConflict("another process extended this digest chain first") from None
        except BaseException:
            self._drop_unless_recorded(staged, s3_object, _DIGESTS, staged_signature)
            raise
        self._publish(staged_signature, s3_object + SIGNATURE_SUFFIX)
        self._publish(staged, s3_object)
        return s3_object

    # -- staging ---------------------------------------------------------------------------------
    def _staging_path(self, key: str) -> Path:
        return self.directory / STAGING_DIR / key.replace("/", "!")

    def _stage(self, key: str, data: bytes) -> Path:
        path = self._staging_path(key)
        _write_synced(path, data)
        return path

    def _publish(self, staged: Path, key: str) -> None:
        """Move a staged file into place; never replaces a file already there. Tolerates a recovery
        pass (of a writer whose lock had expired) having published it first."""
        final = self.directory / key
        _make_dirs(final.parent)
        try:
            os.link(staged, final)
        except FileExistsError:
            if not _same_file(staged, final):
                log.warning("audit file %s already in place; keeping it", key)
        except FileNotFoundError:
            if not final.exists():
                raise
            return
        except OSError:  # a filesystem without hard links
            if final.exists():
                log.warning("audit file %s already in place; keeping it", key)
            else:
                os.rename(staged, final)
                _fsync_dir(final.parent)
                _fsync_dir(staged.parent)
                return
        _fsync_dir(final.parent)
        staged.unlink(missing_ok=True)
        _fsync_dir(staged.parent)

    def _recorded(self, key: str, table: Any) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(select(table.c.s3_object).where(table.c.s3_object == key)).first() is not None

    def _drop_unless_recorded(self, staged: Path, key: str, table: Any, *others: Path) -> None:
        try:
            recorded = self._recorded(key, table)
        except Exception:  # unknown: keep the staged files for recovery to decide
            log.exception("could not tell whether %s was recorded; recovery will decide", key)
            return
        if not recorded:
            for path in (staged, *others):
                path.unlink(missing_ok=True)

    def _recover(self) -> None:
        """Finish moving staged files whose rows were committed; drop abandoned ones."""
        staging = self.directory / STAGING_DIR
        if not staging.is_dir():
            return
        cutoff = time.time() - _STALE_STAGING_SECONDS
        for path in sorted(staging.iterdir(), key=lambda p: p.name.endswith(SIGNATURE_SUFFIX), reverse=True):
            key = path.name.replace("!", "/")
            base = key.removesuffix(SIGNATURE_SUFFIX)
            table = _DIGESTS if "/CloudTrail-Digest/" in base else _FILES
            try:
                if self._recorded(base, table):
                    log.warning("finishing delivery of %s after an interruption", key)
                    self._publish(path, key)
                elif path.stat().st_mtime < cutoff:
                    log.warning("dropping abandoned staged audit file %s", key)
                    path.unlink(missing_ok=True)
            except FileNotFoundError:
                continue  # its writer finished it meanwhile

    # -- the trail lock --------------------------------------------------------------------------
    @contextlib.contextmanager
    def _lock(self, wait: float) -> Iterator[bool]:
        """One writer at a time across processes (the ``leases`` row ``audit-trail``). Conditional
        updates guard correctness on their own; the lock keeps concurrent writers from wasting work."""
        holder = uuid.uuid4().hex
        deadline = time.monotonic() + wait
        while not self._acquire(holder):
            if time.monotonic() >= deadline:
                yield False
                return
            time.sleep(0.1)
        self._holder = holder
        try:
            yield True
        finally:
            self._holder = ""
            try:
                self._release(holder)
            except Exception:
                log.exception("could not release the audit trail lock")

    def _acquire(self, holder: str) -> bool:
        now = wall_clock().timestamp()
        table = schema.leases
        with self.engine.begin() as conn:
            taken = conn.execute(
                update(table)
                .where(table.c.name == _LOCK_NAME)
                .where(or_(table.c.holder == holder, table.c.expires_at < now))
                .values(holder=holder, expires_at=now + _LOCK_SECONDS)
            ).rowcount
            if taken:
                return True
            exists = conn.execute(select(table.c.name).where(table.c.name == _LOCK_NAME)).first()
        if exists:
            return False
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(table).values(name=_LOCK_NAME, holder=holder, expires_at=now + _LOCK_SECONDS)
                )
            return True
        except IntegrityError:
            return False

    def _renew_lock(self) -> None:
        if self._holder:
            self._acquire(self._holder)

    def _release(self, holder: str) -> None:
        table = schema.leases
        with self.engine.begin() as conn:
            conn.execute(
                update(table)
                .where(table.c.name == _LOCK_NAME)
                .where(table.c.holder == holder)
                .values(expires_at=0.0)
            )


def public_keys(engine: Engine) -> list[Row[Any]]:
    """Every trail key ever used (public halves only), oldest first."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(
                    _KEYS.c.fingerprint, _KEYS.c.public_key, _KEYS.c.valid_from, _KEYS.c.valid_to
                ).order_by(_KEYS.c.valid_from, _KEYS.c.fingerprint)
            ).all()
        )
