"""GetKeyLastUsage, answered from the audit trail: the newest successful cryptographic call naming the
key. Tracking starts when the key is created (Khoa records every call from its first)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from khoa.clock import from_epoch
from khoa.protocol.context import RequestContext
from khoa.services.kms.backend import KmsBackend
from khoa.services.kms.resolve import resolve_key
from khoa.storage import schema

TRACKED_OPERATIONS = (
    "Decrypt",
    "DeriveSharedSecret",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "GenerateDataKeyWithoutPlaintext",
    "GenerateMac",
    "ReEncrypt",
    "Sign",
    "Verify",
    "VerifyMac",
)
_EVENTS = schema.audit_events


def get_key_last_usage(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    key = resolve_key(kms, ctx, params["KeyId"])
    with kms.engine.connect() as conn:
        row = conn.execute(
            select(_EVENTS.c.event_name, _EVENTS.c.event_time, _EVENTS.c.event_id, _EVENTS.c.record)
            .where(_EVENTS.c.event_source == "kms.amazonaws.com")
            .where(_EVENTS.c.event_name.in_(TRACKED_OPERATIONS))
            .where(_EVENTS.c.error_code.is_(None))
            .where(_EVENTS.c.event_time >= key.created_at)
            .where(_EVENTS.c.resource_names.contains(key.arn))
            .order_by(_EVENTS.c.seq.desc())
            .limit(1)
        ).first()
    result: dict[str, Any] = {
        "KeyId": key.arn,
        "TrackingStartDate": key.created,
        "KeyCreationDate": key.created,
    }
    if row is not None:
        import json

        request_id = json.loads(row.record).get("requestID")
        usage: dict[str, Any] = {
            "Operation": row.event_name,
            "Timestamp": from_epoch(row.event_time),
            "CloudTrailEventId": row.event_id,
        }
        if request_id:
            usage["KmsRequestId"] = request_id
        result["KeyLastUsage"] = usage
    return result


OPERATIONS = {"GetKeyLastUsage": get_key_last_usage}
