"""Custom key stores: external key stores (XKS) only.

CreateCustomKeyStore, DescribeCustomKeyStores, UpdateCustomKeyStore, ConnectCustomKeyStore,
DisconnectCustomKeyStore and DeleteCustomKeyStore, as AWS KMS answers them for stores of type
``EXTERNAL_KEY_STORE`` with public-endpoint connectivity. The proxy is checked with the XKS
GetHealthStatus call when a store is created, updated while connected, and connected; a failed
connection leaves the store ``FAILED`` with AWS's ``ConnectionErrorCode``. AWS CloudHSM key stores
and VPC endpoint service connectivity are refused with UnsupportedOperationException.

The proxy endpoint must be ``https://host[:port]``; ``http://`` is accepted only for a loopback host
(a sidecar proxy, tests). The model's pattern (``https://`` without a port) is relaxed accordingly in
:func:`relax_model`, and the rule is enforced here.
"""

from __future__ import annotations

import secrets
import urllib.parse
from typing import Any

from khoa.clock import from_epoch
from khoa.protocol.context import RequestContext
from khoa.protocol.errors import AWSError
from khoa.protocol.model import ServiceModel
from khoa.services.kms import errors, external
from khoa.services.kms.backend import KmsBackend
from khoa.services.kms.resolve import decode_marker, encode_marker
from khoa.services.kms.store.custom_key_stores import CustomKeyStoreRecord, NameInUse, StoreQuotaExceeded
from khoa.services.kms.xks import Proxy, ProxyFailure, request_metadata

CONNECTED = "CONNECTED"
DISCONNECTED = "DISCONNECTED"
FAILED = "FAILED"
_ENDPOINT_PATTERN = r"^https?://[a-zA-Z0-9.\-\[\]:]+$"
# AWS KMS resource quota "Custom key store resource quota" (developer guide, Resource quotas): custom
# key stores per account and Region; CreateCustomKeyStore beyond it is refused with
# LimitExceededException.
MAX_CUSTOM_KEY_STORES = 10
SUPPORTED = (
    "Khoa supports custom key stores of type EXTERNAL_KEY_STORE only (an XKS proxy, CustomKeyStoreType="
    "EXTERNAL_KEY_STORE); AWS CloudHSM key stores are not supported."
)


def relax_model(model: ServiceModel) -> None:
    """Let the endpoint carry a port and ``http://`` reach the handler, which checks it (loopback)."""
    shape = dict(model.shapes["XksProxyUriEndpointType"])
    shape["pattern"] = _ENDPOINT_PATTERN
    model.shapes = {**model.shapes, "XksProxyUriEndpointType": shape}


def store_not_found(store_id: str) -> AWSError:
    return AWSError(
        "CustomKeyStoreNotFoundException",
        f"Custom key store {store_id} does not exist in this account and Region.",
    )


def name_in_use(name: str | None) -> AWSError:
    return AWSError(
        "CustomKeyStoreNameInUseException",
        f"Custom key store name {name} is already in use in this account and Region.",
    )


def invalid_store_state(message: str) -> AWSError:
    return AWSError("CustomKeyStoreInvalidStateException", message)


def _check_endpoint(kms: KmsBackend, endpoint: str) -> str:
    """A well-formed endpoint at an address XKS proxies may be at (khoa.services.kms.xks_endpoints)."""
    try:
        parts = urllib.parse.urlsplit(endpoint)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        raise errors.validation(f"XksProxyUriEndpoint {endpoint} is not a valid URI.") from None
    if not host or parts.path or parts.query or parts.fragment or "@" in parts.netloc:
        raise errors.validation(
            f"XksProxyUriEndpoint {endpoint} must be https://<host>[:<port>], with no path or query."
        )
    if port == 0:
        raise errors.validation(f"XksProxyUriEndpoint {endpoint} has an invalid port.")
    refusal = kms.xks.endpoints.refusal(endpoint)
    if refusal is not None:
        raise errors.validation(f"XksProxyUriEndpoint {endpoint} is not accepted: {refusal}.")
    return endpoint.rstrip("/")


def _check_connectivity(value: str | None) -> str:
    if value is None:
        raise errors.validation("XksProxyConnectivity is required for an external key store.")
    if value != "PUBLIC_ENDPOINT":
        raise errors.unsupported(
            "Khoa supports XksProxyConnectivity PUBLIC_ENDPOINT only (VPC endpoint services are an AWS "
            "network feature)."
        )
    return value


def _refuse_cloudhsm_parameters(params: dict[str, Any]) -> None:
    for name in ("CloudHsmClusterId", "TrustAnchorCertificate", "KeyStorePassword"):
        if params.get(name) is not None:
            raise errors.unsupported(f"{name} applies to AWS CloudHSM key stores. {SUPPORTED}")
    for name in ("XksProxyVpcEndpointServiceName", "XksProxyVpcEndpointServiceOwner"):
        if params.get(name) is not None:
            raise errors.unsupported(
                f"{name} requires VPC_ENDPOINT_SERVICE connectivity, which Khoa does not support."
            )


def _store_quota() -> AWSError:
    return errors.limit_exceeded(
        f"This account has reached the limit of {MAX_CUSTOM_KEY_STORES} custom key stores in this Region."
    )


def _health(kms: KmsBackend, ctx: RequestContext, proxy: Proxy) -> None:
    """GetHealthStatus as the caller's operation; raises the proxy's failure."""
    kms.xks.health(proxy, {"kmsRequestId": ctx.request_id, "kmsOperation": ctx.operation})


def _entry(store: CustomKeyStoreRecord) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "CustomKeyStoreId": store.store_id,
        "CustomKeyStoreName": store.name,
        "ConnectionState": store.connection_state,
        "CreationDate": from_epoch(store.created_at),
        "CustomKeyStoreType": store.store_type,
        "XksProxyConfiguration": {
            "Connectivity": store.connectivity,
            "AccessKeyId": store.access_key_id,
            "UriEndpoint": store.endpoint,
            "UriPath": store.uri_path,
        },
    }
    if store.connection_state == FAILED and store.connection_error_code:
        entry["ConnectionErrorCode"] = store.connection_error_code
    return entry


def _store(kms: KmsBackend, ctx: RequestContext, store_id: str) -> CustomKeyStoreRecord:
    store = kms.store.custom_key_stores.get(ctx.account_id, ctx.region, store_id)
    if store is None:
        raise store_not_found(store_id)
    return store


def create_custom_key_store(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    store_type = params.get("CustomKeyStoreType", "AWS_CLOUDHSM")  # AWS's default
    if store_type != external.STORE_TYPE:
        raise errors.unsupported(f"CustomKeyStoreType {store_type} is not supported. {SUPPORTED}")
    _refuse_cloudhsm_parameters(params)
    connectivity = _check_connectivity(params.get("XksProxyConnectivity"))
    for name in ("XksProxyUriEndpoint", "XksProxyUriPath", "XksProxyAuthenticationCredential"):
        if params.get(name) is None:
            raise errors.validation(f"{name} is required for an external key store.")
    endpoint = _check_endpoint(kms, params["XksProxyUriEndpoint"])
    path = params["XksProxyUriPath"]
    credential = params["XksProxyAuthenticationCredential"]
    stores = kms.store.custom_key_stores
    if stores.by_name(ctx.account_id, ctx.region, params["CustomKeyStoreName"]) is not None:
        raise name_in_use(params["CustomKeyStoreName"])
    # Before the proxy is called; checked again as the store is inserted (concurrent creations).
    if stores.count(ctx.account_id, ctx.region) >= MAX_CUSTOM_KEY_STORES:
        raise _store_quota()
    if stores.endpoint_in_use(ctx.account_id, ctx.region, endpoint, path):
        raise AWSError(
            "XksProxyUriInUseException",
            "Another external key store in this account and Region uses this XKS proxy endpoint and path.",
        )
    proxy = Proxy(endpoint, path, credential["AccessKeyId"], credential["RawSecretAccessKey"], ctx.region)
    try:
        _health(kms, ctx, proxy)
    except ProxyFailure as failure:
        raise external.admin_error(failure) from None
    store_id = "cks-" + secrets.token_hex(9)[:17]
    record = CustomKeyStoreRecord(
        store_id=store_id,
        account_id=ctx.account_id,
        region=ctx.region,
        name=params["CustomKeyStoreName"],
        store_type=store_type,
        connection_state=DISCONNECTED,
        connection_error_code=None,
        endpoint=endpoint,
        uri_path=path,
        connectivity=connectivity,
        access_key_id=credential["AccessKeyId"],
        secret_sealed=stores.seal_secret(store_id, credential["RawSecretAccessKey"]),
        created_at=ctx.now.timestamp(),
    )
    try:
        stores.insert(record, limit=MAX_CUSTOM_KEY_STORES)
    except NameInUse:
        raise name_in_use(record.name) from None
    except StoreQuotaExceeded:
        raise _store_quota() from None
    return {"CustomKeyStoreId": store_id}


def describe_custom_key_stores(
    kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]
) -> dict[str, Any]:
    stores = kms.store.custom_key_stores
    store_id, name = params.get("CustomKeyStoreId"), params.get("CustomKeyStoreName")
    if store_id is not None and name is not None:
        raise errors.validation("Specify either CustomKeyStoreId or CustomKeyStoreName, not both.")
    if store_id is not None or name is not None:
        found = (
            stores.get(ctx.account_id, ctx.region, store_id)
            if store_id is not None
            else stores.by_name(ctx.account_id, ctx.region, name or "")
        )
        if found is None:
            raise store_not_found(store_id or name or "")
        if params.get("Marker"):
            raise errors.invalid_marker()
        return {"CustomKeyStores": [_entry(found)], "Truncated": False}
    limit = params.get("Limit", 100)
    offset = decode_marker(params.get("Marker"), ctx.operation)
    page = stores.page(ctx.account_id, ctx.region, limit + 1, offset)
    result: dict[str, Any] = {
        "CustomKeyStores": [_entry(s) for s in page[:limit]],
        "Truncated": len(page) > limit,
    }
    if len(page) > limit:
        result["NextMarker"] = encode_marker(offset + limit, ctx.operation)
    return result


def connect_custom_key_store(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    store = _store(kms, ctx, params["CustomKeyStoreId"])
    if store.connection_state == CONNECTED:
        return {}
    if store.connection_state != DISCONNECTED:
        raise invalid_store_state(
            f"Custom key store {store.store_id} is {store.connection_state}: disconnect it "
            "(DisconnectCustomKeyStore) before connecting it again."
        )
    stores = kms.store.custom_key_stores
    try:
        _health(kms, ctx, external.proxy_of(kms, store, ctx.region))
    except ProxyFailure as failure:
        # As AWS: the call succeeds and the store shows why it could not connect.
        stores.update(
            store.store_id,
            connection_state=FAILED,
            connection_error_code=external.connection_error_code(failure),
        )
        return {}
    stores.update(store.store_id, connection_state=CONNECTED, connection_error_code=None)
    return {}


def disconnect_custom_key_store(
    kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]
) -> dict[str, Any]:
    store = _store(kms, ctx, params["CustomKeyStoreId"])
    if store.connection_state == DISCONNECTED:
        raise invalid_store_state(f"Custom key store {store.store_id} is already disconnected.")
    kms.store.custom_key_stores.update(
        store.store_id, connection_state=DISCONNECTED, connection_error_code=None
    )
    return {}


def delete_custom_key_store(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    store = _store(kms, ctx, params["CustomKeyStoreId"])
    if store.connection_state != DISCONNECTED:
        raise invalid_store_state(
            f"Custom key store {store.store_id} is {store.connection_state}: "
            "disconnect it before deleting it."
        )
    if kms.store.custom_key_stores.key_count(store.store_id):
        raise AWSError(
            "CustomKeyStoreHasCMKsException",
            f"Custom key store {store.store_id} still has KMS keys: delete them first (ScheduleKeyDeletion).",
        )
    kms.store.custom_key_stores.delete(store.store_id)
    return {}


_PROXY_PROPERTIES = (
    "XksProxyUriEndpoint",
    "XksProxyUriPath",
    "XksProxyAuthenticationCredential",
    "XksProxyConnectivity",
)


def update_custom_key_store(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    """As AWS: a connected store can only be renamed; its proxy properties change while it is
    disconnected, and the new settings are checked with GetHealthStatus first."""
    store = _store(kms, ctx, params["CustomKeyStoreId"])
    _refuse_cloudhsm_parameters(params)
    stores = kms.store.custom_key_stores
    given = [name for name in _PROXY_PROPERTIES if params.get(name) is not None]
    if given and store.connection_state != DISCONNECTED:
        raise invalid_store_state(
            f"Custom key store {store.store_id} is {store.connection_state}: disconnect it to update "
            f"{', '.join(given)} (only NewCustomKeyStoreName can change while it is connected)."
        )
    changes: dict[str, Any] = {}
    endpoint, path = store.endpoint, store.uri_path
    access_key_id, secret = store.access_key_id, None
    if params.get("XksProxyConnectivity") is not None:
        _check_connectivity(params["XksProxyConnectivity"])
    if params.get("XksProxyUriEndpoint") is not None:
        endpoint = _check_endpoint(kms, params["XksProxyUriEndpoint"])
        changes["endpoint"] = endpoint
    if params.get("XksProxyUriPath") is not None:
        path = params["XksProxyUriPath"]
        changes["uri_path"] = path
    if params.get("XksProxyAuthenticationCredential") is not None:
        credential = params["XksProxyAuthenticationCredential"]
        access_key_id, secret = credential["AccessKeyId"], credential["RawSecretAccessKey"]
        changes["access_key_id"] = access_key_id
        changes["secret_sealed"] = stores.seal_secret(store.store_id, secret)
    if ("endpoint" in changes or "uri_path" in changes) and stores.endpoint_in_use(
        ctx.account_id, ctx.region, endpoint, path, but=store.store_id
    ):
        raise AWSError(
            "XksProxyUriInUseException",
            "Another external key store in this account and Region uses this XKS proxy endpoint and path.",
        )
    new_name = params.get("NewCustomKeyStoreName")
    if new_name is not None and new_name != store.name:
        if stores.by_name(ctx.account_id, ctx.region, new_name) is not None:
            raise name_in_use(new_name)
        changes["name"] = new_name
    if {"endpoint", "uri_path", "access_key_id"} & set(changes):
        secret = secret if secret is not None else stores.open_secret(store)
        try:
            _health(kms, ctx, Proxy(endpoint, path, access_key_id, secret, ctx.region))
        except ProxyFailure as failure:
            raise external.admin_error(failure) from None
    if changes:
        try:
            stores.update(store.store_id, **changes)
        except NameInUse:
            raise name_in_use(new_name) from None
    return {}


def check_external_key(
    kms: KmsBackend, ctx: RequestContext, store_id: str, xks_key_id: str, key_arn: str
) -> None:
    """CreateKey's checks of a key in an external key store: the store is connected and the external
    key is an enabled AES-256 key for encryption and decryption that no other KMS key uses."""
    store = _store(kms, ctx, store_id)
    if store.connection_state != CONNECTED:
        raise invalid_store_state(
            f"Custom key store {store_id} is not connected (ConnectionState {store.connection_state}). "
            "Connect it (ConnectCustomKeyStore) and try again."
        )
    if kms.store.custom_key_stores.external_key_in_use(store_id, xks_key_id):
        raise AWSError(
            "XksKeyAlreadyInUseException",
            f"External key {xks_key_id} is already associated with a KMS key in custom key store {store_id}.",
        )
    metadata = request_metadata(ctx.principal.arn, ctx.operation, ctx.request_id, key_arn)
    try:
        answer = kms.xks.key_metadata(external.proxy_of(kms, store, ctx.region), xks_key_id, metadata)
    except ProxyFailure as failure:
        raise external.create_key_error(failure) from None
    usage = answer.get("keyUsage") or []
    if answer.get("keySpec") != "AES_256" or "ENCRYPT" not in usage or "DECRYPT" not in usage:
        raise AWSError(
            "XksKeyInvalidConfigurationException",
            f"External key {xks_key_id} must be an AES_256 key that supports ENCRYPT and DECRYPT.",
        )
    if answer.get("keyStatus") != "ENABLED":
        raise AWSError(
            "XksKeyInvalidConfigurationException",
            f"External key {xks_key_id} is not enabled in the external key manager.",
        )


def store_state(kms: KmsBackend, account_id: str, region: str, store_id: str) -> str | None:
    store = kms.store.custom_key_stores.get(account_id, region, store_id)
    return store.connection_state if store is not None else None


OPERATIONS = {
    "CreateCustomKeyStore": create_custom_key_store,
    "DescribeCustomKeyStores": describe_custom_key_stores,
    "ConnectCustomKeyStore": connect_custom_key_store,
    "DisconnectCustomKeyStore": disconnect_custom_key_store,
    "DeleteCustomKeyStore": delete_custom_key_store,
    "UpdateCustomKeyStore": update_custom_key_store,
}
