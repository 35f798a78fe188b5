"""GetKeyLastUsage, answered from the audit trail: the newest successful cryptographic call naming the
key. Tracking starts when the key is created (Khoa records every call from its first)."""

from __future__ import annotations

import json
from typing import Any

from khoa.clock import from_epoch
from khoa.protocol.context import RequestContext
from khoa.services.kms.backend import KmsBackend
from khoa.services.kms.resolve import resolve_key

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


def get_key_last_usage(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    key = resolve_key(kms, ctx, params["KeyId"])
    last = kms.store.usage.last_use(key.arn, key.created_at, TRACKED_OPERATIONS)
    result: dict[str, Any] = {
        "KeyId": key.arn,
        "TrackingStartDate": key.created,
        "KeyCreationDate": key.created,
    }
    if last is not None:
        request_id = json.loads(last.record).get("requestID")
        usage: dict[str, Any] = {
            "Operation": last.operation,
            "Timestamp": from_epoch(last.event_time),
            "CloudTrailEventId": last.event_id,
        }
        if request_id:
            usage["KmsRequestId"] = request_id
        result["KeyLastUsage"] = usage
    return result


OPERATIONS = {"GetKeyLastUsage": get_key_last_usage}
