"""Operations outside Khoa's scope (custom key stores, multi-Region keys), answered as AWS does for keys
and stores that do not have those features, never with a fake success."""

from __future__ import annotations

from typing import Any

from khoa.protocol.context import RequestContext
from khoa.protocol.errors import AWSError
from khoa.services.kms import errors
from khoa.services.kms.backend import KmsBackend
from khoa.services.kms.resolve import resolve_key


def _store_not_found(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    raise AWSError(
        "CustomKeyStoreNotFoundException",
        f"Custom key store {params.get('CustomKeyStoreId', '')} does not exist: Khoa does not "
        "support custom key stores.",
    )


def create_custom_key_store(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    raise errors.unsupported("Custom key stores are not supported by Khoa.")


def describe_custom_key_stores(
    kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]
) -> dict[str, Any]:
    if params.get("CustomKeyStoreId") or params.get("CustomKeyStoreName"):
        return _store_not_found(kms, ctx, params)
    if params.get("Marker"):
        raise errors.invalid_marker()  # the empty page is never truncated: no marker was ever issued
    return {"CustomKeyStores": [], "Truncated": False}


def _not_multi_region(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    key = resolve_key(kms, ctx, params["KeyId"], allow_alias=False)
    raise errors.unsupported(f"{key.arn} is not a multi-Region key.")


def _no_kem(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    key = resolve_key(kms, ctx, params["KeyId"])
    raise errors.invalid_key_usage(
        f"{key.arn} is not an ML-KEM key: Khoa does not support key encapsulation yet."
    )


OPERATIONS = {
    "CreateCustomKeyStore": create_custom_key_store,
    "DescribeCustomKeyStores": describe_custom_key_stores,
    "ConnectCustomKeyStore": _store_not_found,
    "DisconnectCustomKeyStore": _store_not_found,
    "DeleteCustomKeyStore": _store_not_found,
    "UpdateCustomKeyStore": _store_not_found,
    "ReplicateKey": _not_multi_region,
    "UpdatePrimaryRegion": _not_multi_region,
    "Encapsulate": _no_kem,
    "Decapsulate": _no_kem,
}
