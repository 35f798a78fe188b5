"""GetKeyLastUsage, answered from the audit trail (:mod:`khoa.audit.usage`): the newest successful
cryptographic call naming the key. Tracking starts when the key is created (Khoa records every call
from its first)."""

from __future__ import annotations

from typing import Any

from khoa.clock import from_epoch
from khoa.protocol.context import RequestContext
from khoa.services.kms.backend import KmsBackend
from khoa.services.kms.resolve import resolve_key


def get_key_last_usage(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    key = resolve_key(kms, ctx, params["KeyId"])
    last = kms.store.usage.key_last_use(key.arn, key.created_at)
    result: dict[str, Any] = {
        "KeyId": key.arn,
        "TrackingStartDate": key.created,
        "KeyCreationDate": key.created,
    }
    if last is not None:
        usage: dict[str, Any] = {
            "Operation": last.operation,
            "Timestamp": from_epoch(last.event_time),
            "CloudTrailEventId": last.event_id,
        }
        if last.request_id:
            usage["KmsRequestId"] = last.request_id
        result["KeyLastUsage"] = usage
    return result


OPERATIONS = {"GetKeyLastUsage": get_key_last_usage}
