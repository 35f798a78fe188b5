"""The ASGI application: routing under ``[prefix]/kms/xks/v1``, SigV4, JSON in and out, one log line
per request (the request metadata, the outcome and the time taken; never plaintext or key material).

Order of checks: the path (404 ``InvalidUriPathException``), the method (405 for anything but POST on
an API path), the signature (401), then the body and the operation. ``GET /ping`` (outside the prefix,
unauthenticated) answers load balancers: 200 when the token is usable, 503 otherwise.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from khoa.auth.sigv4 import SignedRequest
from khoa.xks_proxy import operations
from khoa.xks_proxy.auth import RequestAuthenticator
from khoa.xks_proxy.errors import XksError, internal, validation
from khoa.xks_proxy.hsm import Token

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

API_ROOT = "/kms/xks/v1"
MAX_BODY = 256 * 1024
_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,128}", re.ASCII)
_PREFIX = re.compile(r"(/[A-Za-z0-9_-]+)*", re.ASCII)
_KEY_OPERATIONS = {"metadata": "GetKeyMetadata", "encrypt": "Encrypt", "decrypt": "Decrypt"}

log = logging.getLogger("khoa.xks_proxy")


def normalize_prefix(prefix: str) -> str:
    """``tenant-a`` or ``/tenant-a/`` → ``/tenant-a``; ``""`` or ``/`` → ``""``. Raises ValueError
    for characters the spec does not allow in ``XksProxyUriPath``."""
    cleaned = "/" + prefix.strip().strip("/") if prefix.strip().strip("/") else ""
    if not _PREFIX.fullmatch(cleaned) or len(cleaned + API_ROOT) > 128:
        raise ValueError(
            "the path prefix may hold only letters, digits, '/', '-' and '_', and with /kms/xks/v1 "
            "be at most 128 characters"
        )
    return cleaned


def valid_key_id(key_id: str) -> bool:
    """The spec's externalKeyId: 1 to 128 of letters, digits, '.', '-' and '_'."""
    return _KEY_ID.fullmatch(key_id) is not None


@dataclass(frozen=True)
class Route:
    operation: str  # GetHealthStatus | GetKeyMetadata | Encrypt | Decrypt
    key_id: str


def route(path: str, base: str) -> Route:
    if not path.startswith(base + "/"):
        raise XksError("InvalidUriPathException", "The URI path is not an XKS API path.")
    rest = path[len(base) + 1 :].split("/")
    if rest == ["health"]:
        return Route("GetHealthStatus", "")
    if len(rest) == 3 and rest[0] == "keys" and rest[2] in _KEY_OPERATIONS:
        if not valid_key_id(rest[1]):
            raise validation(
                "The external key id must be 1 to 128 characters: letters, digits, '.', '-' and '_'."
            )
        return Route(_KEY_OPERATIONS[rest[2]], rest[1])
    raise XksError("InvalidUriPathException", "The URI path is not an XKS API path.")


class XksProxyApp:
    """The proxy as an ASGI callable."""

    def __init__(self, token: Token, authenticator: RequestAuthenticator, path_prefix: str = "") -> None:
        self.token = token
        self.authenticator = authenticator
        self.base = normalize_prefix(path_prefix) + API_ROOT

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        path: str = scope["path"]
        method: str = scope["method"]
        if path == "/ping" and method in ("GET", "HEAD"):
            state = await asyncio.to_thread(self.token.health)
            ok = state.status != "UNAVAILABLE"
            await _respond(send, 200 if ok else 503, {"status": "ok" if ok else "unavailable"})
            return
        fields: dict[str, str] = {}
        operation = "-"
        try:
            target = route(path, self.base)
            operation = target.operation
            if method != "POST":
                raise XksError("MethodNotAllowedException", "XKS API requests are POST requests.")
            body = await _read_body(receive)
            request = SignedRequest(
                method=method,
                raw_path=_raw_path(scope),
                query_string=scope.get("query_string", b"").decode("latin-1"),
                headers=_headers(scope),
                body=body,
            )
            caller = self.authenticator.authenticate(request)
            fields["accessKeyId"] = caller.access_key_id
            fields["region"] = caller.region
            document = _json(body)
            result = await asyncio.to_thread(self._dispatch, target, document, fields)
            status, payload = 200, result
        except XksError as exc:
            status, payload = exc.status, exc.body()
            fields["errorName"] = exc.name
            fields["errorMessage"] = exc.message
        except Exception:
            log.exception("xks-proxy: unexpected failure in %s", operation)
            failure = internal("The proxy failed unexpectedly.")
            status, payload = failure.status, failure.body()
            fields["errorName"] = failure.name
        elapsed = (time.perf_counter() - started) * 1000
        log.info(
            "xks-proxy %s",
            json.dumps(
                {"operation": operation, "path": path, "status": status, "ms": round(elapsed, 2), **fields},
                sort_keys=True,
            ),
        )
        await _respond(send, status, payload, allow="POST" if status == 405 else None)

    def _dispatch(self, target: Route, body: dict[str, Any], fields: dict[str, str]) -> dict[str, Any]:
        if target.operation == "GetHealthStatus":
            meta = operations.request_metadata(body, ())
            fields.update({k: v for k, v in meta.log_fields().items() if v})
            return operations.health(self.token)
        if target.operation == "GetKeyMetadata":
            meta = operations.request_metadata(body, ("awsPrincipalArn",))
        else:
            meta = operations.request_metadata(body, ("awsPrincipalArn", "kmsKeyArn"))
        fields.update({k: v for k, v in meta.log_fields().items() if v})
        fields["externalKeyId"] = target.key_id
        if target.operation == "GetKeyMetadata":
            return operations.key_metadata(self.token, target.key_id)
        if target.operation == "Encrypt":
            return operations.encrypt(self.token, target.key_id, body)
        return operations.decrypt(self.token, target.key_id, body)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.to_thread(self.token.close)
                await send({"type": "lifespan.shutdown.complete"})
                return


def _raw_path(scope: Scope) -> str:
    raw = scope.get("raw_path")
    if isinstance(raw, bytes):
        return raw.decode("latin-1").partition("?")[0]
    return str(scope["path"])


def _headers(scope: Scope) -> dict[str, list[str]]:
    headers: dict[str, list[str]] = {}
    for name, value in scope.get("headers", []):
        headers.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
    return headers


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise validation("The client disconnected before sending the whole body.")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise XksError("UnsupportedOperationException", f"The request body exceeds {MAX_BODY} bytes.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _json(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise validation("The request body is not valid JSON.") from None
    if not isinstance(document, dict):
        raise validation("The request body must be a JSON object.")
    return document


async def _respond(send: Send, status: int, payload: dict[str, Any], allow: str | None = None) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if allow:
        headers.append((b"allow", allow.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
