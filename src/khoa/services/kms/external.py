"""Keys in external key stores: the second layer of their ciphertexts and AWS's errors for them.

Double encryption, so that neither side alone can decrypt: the plaintext is first sealed under the
key's Khoa material (a normal Khoa blob), that blob is encrypted by the external key in the XKS
proxy (AES-GCM with an AAD binding the KMS key id and the encryption context), and the proxy's
answer is carried inside an outer Khoa blob (which names the key and authenticates everything).
The proxy never sees a plaintext; the database never holds the external key.

Envelope (the outer blob's plaintext), version 1::

    1 byte 0x01 | 1 byte IV length | IV | 16-byte tag | 1 byte metadata length | metadata | ciphertext
"""

from __future__ import annotations

import hashlib
import uuid

from khoa.crypto import ciphertext
from khoa.protocol.context import RequestContext
from khoa.protocol.errors import AWSError
from khoa.services.kms import errors
from khoa.services.kms.backend import KmsBackend
from khoa.services.kms.store import KeyRecord
from khoa.services.kms.store.custom_key_stores import CustomKeyStoreRecord, XksKeyLink
from khoa.services.kms.xks import Proxy, ProxyFailure, Sealed, request_metadata

ORIGIN = "EXTERNAL_KEY_STORE"
STORE_TYPE = "EXTERNAL_KEY_STORE"
_ENVELOPE_V1 = 0x01

NOT_CONNECTED = (
    "This KMS key is in a custom key store that is not connected to its external key store proxy. "
    "Connect the external key store and try again."
)
_MESSAGES = {
    "ValidationException": "Khoa cannot interpret the response from the external key store proxy. If you "
    "see this error repeatedly, report it to your external key store proxy administrator.",
    "InvalidResponse": "Khoa cannot interpret the response from the external key store proxy. If you see "
    "this error repeatedly, report it to your external key store proxy administrator.",
    "InvalidStateException": "The external key associated with this KMS key in an external key store is "
    "not enabled in the external key manager. Enable the external key and try the request again.",
    "InvalidCiphertextException": "The external key store proxy rejected the request because the "
    "specified ciphertext or encryption context is corrupted, missing, or otherwise invalid.",
    "InvalidKeyUsageException": "The external key associated with this KMS key in an external key store "
    "does not support the requested operation. Enable the operation on the external key.",
    "AuthenticationFailedException": "The external key store proxy rejected the request because it "
    "could not authenticate Khoa. Verify the XKS proxy authentication credential of the external key "
    "store.",
    "AccessDeniedException": "The external key store proxy denied access to the operation. Verify that "
    "the user and the external key are both authorized for this operation.",
    "KeyNotFoundException": "The external key associated with this KMS key in an external key store was "
    "not found in its external key manager.",
    "InvalidUriPathException": "The external key store proxy rejected the request because of an invalid "
    "URI path. Verify the URI path of your external key store.",
    "UnsupportedOperationException": "The external key store proxy rejected the request because it does "
    "not support the requested operation.",
    "DependencyTimeoutException": "The external key store proxy did not respond to the request in the "
    "time allotted. Retry the request.",
    "ThrottlingException": "The external key store proxy rejected the request due to a very high "
    "request rate. Reduce the frequency of your calls using KMS keys in this external key store.",
    "InternalException": "The external key store proxy rejected the request because it cannot "
    "communicate with the external key manager. Verify that the external key manager is available.",
    "Unreachable": "Khoa cannot communicate with the external key store proxy. This might be a "
    "transient network issue. If you see this error repeatedly, verify that your external key store "
    "proxy is active and is connected to the network, and that its endpoint URI is correct.",
    "TlsFailure": "Khoa cannot establish a TLS connection to the external key store proxy. Verify the "
    "TLS configuration, including its certificate.",
    "Timeout": "Khoa rejected the request because the external key store proxy did not respond in time. "
    "Retry the request. If you see this error repeatedly, report it to your external key store proxy "
    "administrator.",
}

CONNECTION_ERROR_CODES = {
    "Unreachable": "XKS_PROXY_NOT_REACHABLE",
    "Timeout": "XKS_PROXY_TIMED_OUT",
    "DependencyTimeoutException": "XKS_PROXY_TIMED_OUT",
    "TlsFailure": "XKS_PROXY_INVALID_TLS_CONFIGURATION",
    "AuthenticationFailedException": "INVALID_CREDENTIALS",
    "AccessDeniedException": "XKS_PROXY_ACCESS_DENIED",
    "InvalidUriPathException": "XKS_PROXY_INVALID_CONFIGURATION",
    "InvalidResponse": "XKS_PROXY_INVALID_RESPONSE",
    "ValidationException": "XKS_PROXY_INVALID_RESPONSE",
}

_ADMIN_ERRORS = {
    "Unreachable": "XksProxyUriUnreachableException",
    "Timeout": "XksProxyUriUnreachableException",
    "TlsFailure": "XksProxyUriUnreachableException",
    "DependencyTimeoutException": "XksProxyUriUnreachableException",
    "ThrottlingException": "XksProxyUriUnreachableException",
    "AuthenticationFailedException": "XksProxyIncorrectAuthenticationCredentialException",
    "InvalidUriPathException": "XksProxyInvalidConfigurationException",
}


def message(failure: ProxyFailure) -> str:
    return _MESSAGES.get(failure.name, _MESSAGES["InvalidResponse"])


def admin_error(failure: ProxyFailure) -> AWSError:
    """Create/UpdateCustomKeyStore's error for a failed health check."""
    return AWSError(_ADMIN_ERRORS.get(failure.name, "XksProxyInvalidResponseException"), message(failure))


def create_key_error(failure: ProxyFailure) -> AWSError:
    """CreateKey's error for a failed GetKeyMetadata."""
    if failure.name == "KeyNotFoundException":
        return AWSError("XksKeyNotFoundException", message(failure))
    if failure.name in ("InvalidStateException", "InvalidKeyUsageException", "UnsupportedOperationException"):
        return AWSError("XksKeyInvalidConfigurationException", message(failure))
    if failure.name == "AccessDeniedException":
        return errors.invalid_state(message(failure))
    return AWSError("CustomKeyStoreInvalidStateException", message(failure))


def crypto_error(failure: ProxyFailure) -> AWSError:
    """A cryptographic operation's error: KMSInvalidStateException, whatever went wrong."""
    return errors.invalid_state(message(failure))


def connection_error_code(failure: ProxyFailure) -> str:
    return CONNECTION_ERROR_CODES.get(failure.name, "INTERNAL_ERROR")


def proxy_of(kms: KmsBackend, store: CustomKeyStoreRecord, region: str) -> Proxy:
    return Proxy(
        endpoint=store.endpoint,
        uri_path=store.uri_path,
        access_key_id=store.access_key_id,
        secret_access_key=kms.store.custom_key_stores.open_secret(store),
        region=region,
    )


def _connected_store(kms: KmsBackend, ctx: RequestContext, key: KeyRecord) -> tuple[XksKeyLink, Proxy]:
    link = kms.store.custom_key_stores.link_of(key.key_id)
    store = (
        kms.store.custom_key_stores.get(key.account_id, key.region, link.store_id)
        if link is not None
        else None
    )
    if link is None or store is None or store.connection_state != "CONNECTED":
        raise errors.invalid_state(NOT_CONNECTED)
    return link, proxy_of(kms, store, key.region)


def _aad(key: KeyRecord, context: dict[str, str] | None) -> bytes:
    return (
        b"khoa-xks-v1"
        + uuid.UUID(key.key_id).bytes
        + hashlib.sha256(ciphertext.canonical_context(context)).digest()
    )


def encrypt(
    kms: KmsBackend,
    ctx: RequestContext,
    key: KeyRecord,
    material: bytes,
    version_id: str,
    plaintext: bytes,
    context: dict[str, str] | None,
) -> bytes:
    """The blob of ``plaintext`` under ``key``'s material and its external key."""
    link, proxy = _connected_store(kms, ctx, key)
    inner = ciphertext.encrypt(material, key.key_id, version_id, plaintext, context)
    metadata = request_metadata(ctx.principal.arn, ctx.operation, ctx.request_id, key.arn)
    try:
        sealed = kms.xks.encrypt(proxy, link.xks_key_id, metadata, inner, _aad(key, context))
    except ProxyFailure as failure:
        raise crypto_error(failure) from None
    envelope = (
        bytes([_ENVELOPE_V1, len(sealed.iv)])
        + sealed.iv
        + sealed.tag
        + bytes([len(sealed.metadata)])
        + sealed.metadata
        + sealed.ciphertext
    )
    return ciphertext.encrypt(material, key.key_id, version_id, envelope, context)


def _parse_envelope(envelope: bytes) -> Sealed:
    try:
        if envelope[0] != _ENVELOPE_V1:
            raise errors.invalid_ciphertext()
        iv_length = envelope[1]
        at = 2 + iv_length
        iv, tag = envelope[2:at], envelope[at : at + 16]
        at += 16
        meta_length = envelope[at]
        metadata = envelope[at + 1 : at + 1 + meta_length]
        body = envelope[at + 1 + meta_length :]
    except IndexError:
        raise errors.invalid_ciphertext() from None
    if len(iv) != iv_length or len(tag) != 16 or len(metadata) != meta_length or not body:
        raise errors.invalid_ciphertext()
    return Sealed(ciphertext=body, iv=iv, tag=tag, metadata=metadata)


def decrypt(
    kms: KmsBackend,
    ctx: RequestContext,
    key: KeyRecord,
    material: bytes,
    material_id: str,
    envelope: bytes,
    context: dict[str, str] | None,
) -> bytes:
    """The plaintext of an external key store key's blob whose outer layer ``material`` opened."""
    sealed = _parse_envelope(envelope)
    link, proxy = _connected_store(kms, ctx, key)
    metadata = request_metadata(ctx.principal.arn, ctx.operation, ctx.request_id, key.arn)
    try:
        inner = kms.xks.decrypt(proxy, link.xks_key_id, metadata, sealed, _aad(key, context))
    except ProxyFailure as failure:
        raise crypto_error(failure) from None
    try:
        parsed = ciphertext.parse(inner)
        if parsed.key_id != key.key_id or parsed.material_id != material_id:
            raise errors.invalid_ciphertext()
        return ciphertext.decrypt(material, parsed, context)
    except ciphertext.InvalidCiphertext:
        raise errors.invalid_ciphertext() from None
