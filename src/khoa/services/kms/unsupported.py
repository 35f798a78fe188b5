"""Operations outside Khoa's scope (multi-Region keys, key encapsulation), answered as AWS does for keys
and stores that do not have those features, never with a fake success."""

from __future__ import annotations

from typing import Any

from khoa.protocol.context import RequestContext
from khoa.services.kms import errors
from khoa.services.kms.backend import KmsBackend
from khoa.services.kms.resolve import resolve_key


def _not_multi_region(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    key = resolve_key(kms, ctx, params["KeyId"], allow_alias=False)
    raise errors.unsupported(f"{key.arn} is not a multi-Region key.")


def _no_kem(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    key = resolve_key(kms, ctx, params["KeyId"])
    raise errors.invalid_key_usage(
        f"{key.arn} is not an ML-KEM key: Khoa does not support key encapsulation yet."
    )


OPERATIONS = {
    "ReplicateKey": _not_multi_region,
    "UpdatePrimaryRegion": _not_multi_region,
    "Encapsulate": _no_kem,
    "Decapsulate": _no_kem,
}
