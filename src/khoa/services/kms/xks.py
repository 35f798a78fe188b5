"""The XKS client: KMS's side of AWS's External Key Store (XKS) Proxy API, v1.

Four calls (GetHealthStatus, GetKeyMetadata, Encrypt, Decrypt), each a SigV4-signed JSON POST
(service ``kms-xks-proxy``, the KMS request's region) to ``<endpoint><path>/health`` or
``<endpoint><path>/keys/<XksKeyId>/<metadata|encrypt|decrypt>``, with a hard deadline per call
(:func:`khoa.outbound.exchange`). Every call is timed and its outcome reported to the listeners
(the process's metrics). Failures are raised as :class:`ProxyFailure`, naming the spec's error
(``errorName``) or the transport problem; what the KMS caller sees is decided by the caller of this
module (:mod:`khoa.services.kms.external`), as AWS's errors differ per KMS operation.

Nothing secret is logged or put in an exception: not the URL's path, not the credential, not a
plaintext, not the proxy's ``errorMessage``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from khoa import outbound
from khoa.auth.sigv4 import SignedRequest, canonical_request, signing_key, string_to_sign
from khoa.blocking import refuse_on_the_loop
from khoa.services.kms.xks_endpoints import EndpointPolicy, Refused

SERVICE = "kms-xks-proxy"
DEFAULT_TIMEOUT_SECONDS = 2.0
"""AWS KMS waits 250 ms; Khoa's proxies may sit on busy machines, so the bound is looser."""
SPEC_ERRORS = frozenset(
    {
        "ValidationException",
        "InvalidStateException",
        "InvalidCiphertextException",
        "InvalidKeyUsageException",
        "AuthenticationFailedException",
        "AccessDeniedException",
        "KeyNotFoundException",
        "InvalidUriPathException",
        "ThrottlingException",
        "UnsupportedOperationException",
        "DependencyTimeoutException",
        "InternalException",
    }
)
MAX_CIPHERTEXT_METADATA = 20

Listener = Callable[[str, str, float], None]
"""Told of every proxy call: (XKS operation, outcome "ok" or the failure's name, seconds)."""


class ProxyFailure(Exception):
    """A proxy call that did not succeed. ``name`` is the spec's errorName when the proxy sent one,
    else ``Unreachable``, ``Timeout``, ``TlsFailure`` or ``InvalidResponse``."""

    def __init__(self, name: str, detail: str = "") -> None:
        super().__init__(f"{name}{': ' + detail if detail else ''}")
        self.name = name
        self.detail = detail


@dataclass(frozen=True)
class Proxy:
    """Where a store's proxy is and how to sign for it."""

    endpoint: str
    uri_path: str
    access_key_id: str
    secret_access_key: str = field(repr=False)
    region: str


@dataclass(frozen=True)
class Sealed:
    """What the proxy's Encrypt returned."""

    ciphertext: bytes
    iv: bytes
    tag: bytes
    metadata: bytes


def request_metadata(
    principal_arn: str, operation: str, request_id: str, key_arn: str | None = None
) -> dict[str, str]:
    metadata = {"awsPrincipalArn": principal_arn, "kmsOperation": operation, "kmsRequestId": request_id}
    if key_arn is not None:
        metadata["kmsKeyArn"] = key_arn
    return metadata


def cdiv(aad: bytes, metadata: bytes, iv: bytes, ciphertext: bytes, tag: bytes) -> bytes:
    """The spec's ciphertext data integrity value (SHA_256 over the decoded fields, in order)."""
    return hashlib.sha256(aad + metadata + iv + ciphertext + tag).digest()


def sign(proxy: Proxy, url: str, body: bytes, now: datetime) -> dict[str, str]:
    """The headers of a SigV4-signed POST of ``body`` to ``url`` (host and x-amz-date signed)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    amz_date = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    headers = {"content-type": ["application/json"], "host": [host], "x-amz-date": [amz_date]}
    signed = ["content-type", "host", "x-amz-date"]
    canonical = canonical_request(SignedRequest("POST", parts.path, "", headers, body), signed)
    scope = f"{amz_date[:8]}/{proxy.region}/{SERVICE}/aws4_request"
    key = signing_key(proxy.secret_access_key, amz_date[:8], proxy.region, SERVICE)
    signature = hmac.new(key, string_to_sign(amz_date, scope, canonical).encode(), hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "Host": host,
        "X-Amz-Date": amz_date,
        "Authorization": (
            f"AWS4-HMAC-SHA256 Credential={proxy.access_key_id}/{scope}, "
            f"SignedHeaders={';'.join(signed)}, Signature={signature}"
        ),
    }


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(value: Any, name: str) -> bytes:
    if not isinstance(value, str):
        raise ProxyFailure("InvalidResponse", f"{name} missing")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ProxyFailure("InvalidResponse", f"{name} is not base64") from None


class XksClient:
    """One per process (held by the KMS backend); stateless apart from its listeners."""

    def __init__(
        self, timeout: float = DEFAULT_TIMEOUT_SECONDS, endpoints: EndpointPolicy | None = None
    ) -> None:
        """``endpoints``: where a proxy may be (checked again before every call: a name's addresses
        may have changed since the endpoint was accepted)."""
        self.timeout = timeout
        self.endpoints = endpoints if endpoints is not None else EndpointPolicy()
        self.listeners: list[Listener] = []

    # -- the four operations -----------------------------------------------------------------------
    def health(self, proxy: Proxy, metadata: dict[str, str]) -> dict[str, Any]:
        answer = self._call(proxy, "GetHealthStatus", "/health", {"requestMetadata": metadata})
        fleet = answer.get("ekmFleetDetails")
        if not isinstance(fleet, list) or not fleet or not isinstance(answer.get("xksProxyFleetSize"), int):
            raise ProxyFailure("InvalidResponse", "health status incomplete")
        states = {entry.get("healthStatus") for entry in fleet if isinstance(entry, dict)}
        if not states & {"ACTIVE", "DEGRADED"}:
            raise ProxyFailure("InternalException", "no external key manager available")
        return answer

    def key_metadata(self, proxy: Proxy, xks_key_id: str, metadata: dict[str, str]) -> dict[str, Any]:
        answer = self._call(
            proxy, "GetKeyMetadata", f"/keys/{_key_path(xks_key_id)}/metadata", {"requestMetadata": metadata}
        )
        if not isinstance(answer.get("keySpec"), str) or not isinstance(answer.get("keyUsage"), list):
            raise ProxyFailure("InvalidResponse", "key metadata incomplete")
        return answer

    def encrypt(
        self, proxy: Proxy, xks_key_id: str, metadata: dict[str, str], plaintext: bytes, aad: bytes
    ) -> Sealed:
        body = {
            "requestMetadata": metadata,
            "plaintext": _b64(plaintext),
            "encryptionAlgorithm": "AES_GCM",
            "additionalAuthenticatedData": _b64(aad),
            "ciphertextDataIntegrityValueAlgorithm": "SHA_256",
        }
        answer = self._call(proxy, "Encrypt", f"/keys/{_key_path(xks_key_id)}/encrypt", body)
        sealed = Sealed(
            ciphertext=_unb64(answer.get("ciphertext"), "ciphertext"),
            iv=_unb64(answer.get("initializationVector"), "initializationVector"),
            tag=_unb64(answer.get("authenticationTag"), "authenticationTag"),
            metadata=_unb64(answer["ciphertextMetadata"], "ciphertextMetadata")
            if answer.get("ciphertextMetadata") is not None
            else b"",
        )
        if (
            len(sealed.iv) not in (12, 16)
            or len(sealed.tag) != 16
            or len(sealed.ciphertext) != len(plaintext)
            or len(sealed.metadata) > MAX_CIPHERTEXT_METADATA
        ):
            raise ProxyFailure("InvalidResponse", "encrypt answer has invalid field sizes")
        expected = cdiv(aad, sealed.metadata, sealed.iv, sealed.ciphertext, sealed.tag)
        given = _unb64(answer.get("ciphertextDataIntegrityValue"), "ciphertextDataIntegrityValue")
        if not hmac.compare_digest(expected, given):
            raise ProxyFailure("InvalidResponse", "ciphertext data integrity value does not match")
        return sealed

    def decrypt(
        self, proxy: Proxy, xks_key_id: str, metadata: dict[str, str], sealed: Sealed, aad: bytes
    ) -> bytes:
        body: dict[str, Any] = {
            "requestMetadata": metadata,
            "ciphertext": _b64(sealed.ciphertext),
            "encryptionAlgorithm": "AES_GCM",
            "additionalAuthenticatedData": _b64(aad),
            "initializationVector": _b64(sealed.iv),
            "authenticationTag": _b64(sealed.tag),
        }
        if sealed.metadata:
            body["ciphertextMetadata"] = _b64(sealed.metadata)
        answer = self._call(proxy, "Decrypt", f"/keys/{_key_path(xks_key_id)}/decrypt", body)
        plaintext = _unb64(answer.get("plaintext"), "plaintext")
        if len(plaintext) != len(sealed.ciphertext):
            raise ProxyFailure("InvalidResponse", "decrypt answer has the wrong size")
        return plaintext

    # -- transport ---------------------------------------------------------------------------------
    def _call(self, proxy: Proxy, operation: str, suffix: str, body: dict[str, Any]) -> dict[str, Any]:
        # Even the name lookup waits on a peer (the tenant's name server): never on the event loop.
        refuse_on_the_loop("XKS proxy")
        url = proxy.endpoint.rstrip("/") + proxy.uri_path + suffix
        data = json.dumps(body).encode()
        started = time.monotonic()
        outcome = "ok"
        try:
            return self._exchange(proxy, url, data)
        except ProxyFailure as failure:
            outcome = failure.name
            raise
        finally:
            elapsed = time.monotonic() - started
            for listener in list(self.listeners):
                listener(operation, outcome, elapsed)

    def _exchange(self, proxy: Proxy, url: str, data: bytes) -> dict[str, Any]:
        started = time.monotonic()
        try:
            address = self.endpoints.admit(proxy.endpoint, self.timeout)
        except Refused as refused:
            if refused.timed_out:
                raise ProxyFailure("Timeout", refused.reason) from None
            # Answered as an unreachable proxy, whatever is there: nothing of the node's network is told.
            raise ProxyFailure(
                "Unreachable", "the endpoint is not at an address XKS proxies may be at"
            ) from None
        headers = sign(proxy, url, data, datetime.now(UTC))
        left = max(self.timeout - (time.monotonic() - started), 0.001)
        try:
            reply = outbound.exchange(
                url, data, headers=headers, timeout=left, max_body=64 * 1024, address=str(address)
            )
        except outbound.Unreachable as problem:
            if problem.timed_out:
                raise ProxyFailure("Timeout", problem.reason) from None
            raise ProxyFailure("TlsFailure" if problem.tls else "Unreachable", problem.reason) from None
        try:
            answer = json.loads(reply.body) if reply.body else None
        except ValueError:
            answer = None
        if 200 <= reply.status < 300:
            if not isinstance(answer, dict):
                raise ProxyFailure("InvalidResponse", f"HTTP {reply.status} without a JSON object")
            return answer
        name = answer.get("errorName") if isinstance(answer, dict) else None
        if isinstance(name, str) and name in SPEC_ERRORS:
            raise ProxyFailure(name, f"HTTP {reply.status}")
        raise ProxyFailure("InvalidResponse", f"HTTP {reply.status}")


def _key_path(xks_key_id: str) -> str:
    return urllib.parse.quote(xks_key_id, safe="")
