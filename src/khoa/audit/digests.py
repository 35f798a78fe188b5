"""Signed digest files, one chain per (account, Region), as CloudTrail's log file integrity validation.

Every period (hourly, and on demand) a digest file per (account, Region) lists each log file delivered
since the previous digest with the SHA-256 of its *uncompressed* content, and names the previous
digest's location, hash and signature, so the chain cannot be cut or edited unnoticed. The digest's
row (with the file's bytes, as for log files) and the marking of the log files it lists commit in one
transaction; a chain extended by another
writer meanwhile fails on the row's key, and nothing of this writer's is kept.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, Row, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from khoa.audit.errors import TrailConflict
from khoa.audit.files import SIGNATURE_SUFFIX, AuditFiles
from khoa.audit.formats import (
    BUCKET,
    HASH_ALGORITHM,
    SIGNATURE_ALGORITHM,
    digest_key,
    iso,
    sha256_hex,
    string_to_sign,
)
from khoa.audit.signing import SigningKey, SigningKeys, sign
from khoa.storage import schema

log = logging.getLogger("khoa.audit")

_FILES = schema.audit_log_files
_DIGESTS = schema.audit_digests


class Digests:
    """Writes the digest chains. ``renew`` is called after each chain, to keep the writer's lease."""

    def __init__(
        self,
        engine: Engine,
        files: AuditFiles,
        keys: SigningKeys,
        digest_seconds: float,
        renew: Callable[[], object],
    ) -> None:
        self.engine = engine
        self.files = files
        self.keys = keys
        self.digest_seconds = digest_seconds
        self.renew = renew

    def heads(self) -> dict[tuple[str, str], Row[Any]]:
        newest = (
            select(func.max(_DIGESTS.c.digest_id)).group_by(_DIGESTS.c.account_id, _DIGESTS.c.region)
        ).scalar_subquery()
        with self.engine.connect() as conn:
            rows = conn.execute(select(_DIGESTS).where(_DIGESTS.c.digest_id.in_(newest))).all()
        return {(row.account_id, row.region): row for row in rows}

    def pending_files(self) -> dict[tuple[str, str], list[Row[Any]]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(_FILES).where(_FILES.c.digest_id.is_(None)).order_by(_FILES.c.file_id)
            ).all()
        pending: dict[tuple[str, str], list[Row[Any]]] = {}
        for row in rows:
            pending.setdefault((row.account_id, row.region), []).append(row)
        return pending

    def due_chains(self, now: float) -> set[tuple[str, str]]:
        heads = self.heads()
        pending = self.pending_files()
        due = {chain for chain, head in heads.items() if now >= head.end_time + self.digest_seconds}
        for chain, files in pending.items():
            if chain not in heads and now >= min(f.delivered_at for f in files) + self.digest_seconds:
                due.add(chain)
        return due

    def write_digests(self, now: float, chains: set[tuple[str, str]] | None) -> list[str]:
        heads = self.heads()
        pending = self.pending_files()
        wanted = sorted(set(heads) | set(pending)) if chains is None else sorted(chains)
        if not wanted:
            return []
        key = self.keys.signing_key(now)
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
            self.renew()
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
        packed = gzip.compress(content, mtime=0)
        staged = self.files.stage(s3_object, packed)
        staged_signature = self.files.stage(s3_object + SIGNATURE_SUFFIX, signature.encode() + b"\n")
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
                        content=packed,
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
            self.files.drop_unless_recorded(staged, s3_object, _DIGESTS, staged_signature)
            raise TrailConflict("another process extended this digest chain first") from None
        except BaseException:
            self.files.drop_unless_recorded(staged, s3_object, _DIGESTS, staged_signature)
            raise
        self.files.publish(staged_signature, s3_object + SIGNATURE_SUFFIX)
        self.files.publish(staged, s3_object)
        return s3_object
