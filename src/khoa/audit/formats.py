"""CloudTrail's names and formats for log and digest files, shared by the writer and the verifier.

Log files are laid out as CloudTrail lays them out in S3, under the audit directory that stands in for
the bucket (pseudo-bucket name :data:`BUCKET`)::

    AWSLogs/<account>/CloudTrail/<region>/YYYY/MM/DD/<account>_CloudTrail_<region>_<YYYYMMDDTHHmmZ>_<unique>.json.gz

and digest files beside them::

    AWSLogs/<account>/CloudTrail-Digest/<region>/YYYY/MM/DD/<account>_CloudTrail-Digest_<region>_khoa_<region>_<YYYYMMDDTHHMMSSZ>.json.gz

A digest is signed over CloudTrail's string to sign (``digestEndTime``, ``bucket/object`` of the
digest, hex SHA-256 of the uncompressed digest, previous digest's hex signature or ``null``, one per
line). These functions hold no state and do no I/O, so the verifier reads exactly what the writer wrote.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from datetime import UTC, datetime

BUCKET = "khoa-audit"
TRAIL_NAME = "khoa"
HASH_ALGORITHM = "SHA-256"
SIGNATURE_ALGORITHM = "SHA256withRSA"
_SAFE_REGION = re.compile(r"^[a-z0-9-]{1,32}$")
_SAFE_ACCOUNT = re.compile(r"^[0-9]{12}$")


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
