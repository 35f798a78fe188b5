"""The shamir seal's front door: a process that starts sealed and serves only this until unsealed.

While sealed, no root key is in memory, so nothing sealed under it (credentials, key material, secret
values, the trail's signing keys) can be read: ``/_khoa/health`` answers (``"sealed": true``),
``/_khoa/ready`` is 503 with reason ``sealed``, ``/metrics`` shows ``khoa_sealed 1``, and every API
call is refused ``503 ServiceUnavailableException`` ("the server is sealed"). Those refusals cannot be
written to the trail yet (the audit recorder belongs to the runtime, which is built only once the root
key is back; a record is a plain database row until delivery puts it in a log file that a digest,
signed with the trail key sealed under the root key, covers), so they are kept in a bounded
in-memory list and recorded, with their original time, as soon as the process is unsealed; beyond
:data:`PENDING_LIMIT` the oldest are dropped and counted in the log, so a flood while sealed cannot
exhaust memory. (A process that stops while sealed loses that list: it
never answered those calls with anything but the refusal.)

``POST /_khoa/unseal`` takes one share (``{"key": "<base64>"}``; ``{"reset": true}`` discards the
shares given so far). As in Vault the shares are the authority: no credential is needed, and a
wrong quorum is simply refused and forgotten. Attempts are rate limited (:data:`UNSEAL_ATTEMPTS` per
minute) and shares are never logged nor kept once the threshold is reached. ``GET /_khoa/seal-status``
says how far an unseal has come. ``POST /_khoa/seal`` needs a SigV4 signature (service ``khoa``) by an
account's root credentials, verified like any API call: it drops the root key and stops serving.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Engine

from khoa.bootstrap import check_root_key, provided_root_key, shamir_config
from khoa.crypto import shamir
from khoa.crypto.seal import SealError
from khoa.ids import IdSource
from khoa.protocol.errors import AWSError
from khoa.runtime import Runtime
from khoa.server.admin import ADMIN_BODY_LIMIT, is_admin
from khoa.server.asgi import (
    BodyDeadlines,
    BodyRefused,
    ClientGone,
    Receive,
    Response,
    Scope,
    Send,
    header_map,
    json_response,
    send_response,
)
from khoa.server.encoding import error_response
from khoa.server.recording import Call
from khoa.services.base import Service
from khoa.settings import Settings
from khoa.storage.database import DatabaseBounds, create_database_engine

log = logging.getLogger("khoa")

UNSEAL = "/_khoa/unseal"
SEAL = "/_khoa/seal"
SEAL_STATUS = "/_khoa/seal-status"
PENDING_LIMIT = 1000
UNSEAL_ATTEMPTS = 30  # per minute and process


def sealed_error() -> AWSError:
    return AWSError(
        "ServiceUnavailableException",
        "The server is sealed: an operator must unseal it (khoa operator unseal) before it serves requests.",
        503,
    )


@dataclass
class _Refused:
    request_id: str
    headers: dict[str, list[str]]
    source_ip: str
    when: datetime
    query: bytes
    body_action: str


@dataclass
class _Signing:
    """What the authenticator reads of a service: the SigV4 scope's service name and its skew."""

    signing_name: str = "khoa"
    skew: timedelta = timedelta(minutes=5)


# What a browser at the web console sees while the server is sealed (the console needs the root key).
_SEALED_PAGE = (
    b"<!doctype html><html lang=en><head><meta charset=utf-8><title>Khoa is sealed</title></head>"
    b"<body><h1>Khoa is sealed</h1><p>The web console is available once the server is unsealed "
    b"(<code>khoa operator unseal</code>).</p></body></html>"
)
_SEALED_PAGE_HEADERS = (
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"cache-control", b"no-store"),
    (b"retry-after", b"30"),
)


class SealGate:
    """The ASGI app of a shamir-sealed process: answers alone while sealed, then hands every request
    to the app built once the root key is back (``build``)."""

    def __init__(self, settings: Settings, build: Callable[[Runtime], Any]) -> None:
        self.settings = settings
        self._build = build
        self.inner: Any = None
        self.engine: Engine = create_database_engine(
            settings.effective_database_url,
            DatabaseBounds(settings.database_timeout_seconds, settings.database_connect_timeout_seconds),
        )
        self.ids = IdSource()
        self.body_deadlines = BodyDeadlines(settings.body_timeout_seconds)
        self._shares: dict[int, bytes] = {}  # by x coordinate; emptied when the threshold is reached
        self._lock = asyncio.Lock()
        self._attempts: deque[float] = deque()
        self._pending: deque[_Refused] = deque(maxlen=PENDING_LIMIT)
        self._dropped = 0
        self._started = False

    @property
    def runtime(self) -> Runtime | None:
        return self.inner.runtime if self.inner is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if path in (UNSEAL, SEAL, SEAL_STATUS):
            try:
                body = await self.body_deadlines.read(receive, ADMIN_BODY_LIMIT)
            except ClientGone:
                return
            except BodyRefused as refused:
                await send_response(send, json_response(refused.error.status, {"error": refused.error.code}))
                return
            await send_response(send, await self._seal_route(scope, path, body))
            return
        inner = self.inner
        if inner is not None:
            await inner(scope, receive, send)
            return
        await send_response(send, await self._sealed_answer(scope, receive, path))

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._started = True
                log.warning("sealed (shamir seal backend): unseal with `khoa operator unseal`")
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._drop_inner()
                self.engine.dispose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _sealed_answer(self, scope: Scope, receive: Receive, path: str) -> Response:
        method = scope["method"]
        if path == "/_khoa/health" and method in ("GET", "HEAD"):
            return json_response(200, {"status": "ok", "sealed": True, "dev": self.settings.dev})
        if path == "/_khoa/ready" and method in ("GET", "HEAD"):
            return json_response(503, {"status": "unavailable", "reason": "sealed", "sealed": True})
        if path == "/metrics" and method == "GET":
            text = (
                "# HELP khoa_sealed 1 while the server is sealed\n# TYPE khoa_sealed gauge\nkhoa_sealed 1.0\n"
            )
            return Response(200, text.encode(), b"text/plain; version=0.0.4; charset=utf-8")
        if is_admin(path) or path == "/_khoa/events":
            return json_response(503, {"error": "sealed", "sealed": True})
        if path == "/console" or path.startswith("/console/"):
            return Response(503, _SEALED_PAGE, b"text/html; charset=utf-8", list(_SEALED_PAGE_HEADERS))
        request_id = self.ids.request_id()
        headers = header_map(scope)
        action = ""
        try:
            body = await self.body_deadlines.read(receive, self.settings.max_body_bytes)
            if not headers.get("x-amz-target"):
                action = _form_action(body)
        except (ClientGone, BodyRefused):
            pass
        if len(self._pending) == PENDING_LIMIT:
            self._dropped += 1
        client = scope.get("client")
        self._pending.append(
            _Refused(
                request_id=request_id,
                headers=headers,
                source_ip=client[0] if client else "",
                when=datetime.now(UTC),
                query=scope.get("query_string", b""),
                body_action=action,
            )
        )
        response = error_response(None, sealed_error(), request_id)
        if action:
            # a query-protocol client (IAM, STS: a form with an Action) reads XML
            message = sealed_error().message
            xml = (
                '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Receiver</Type>'
                f"<Code>ServiceUnavailable</Code><Message>{message}</Message></Error>"
                f"<RequestId>{request_id}</RequestId></ErrorResponse>"
            )
            response = Response(503, xml.encode(), b"text/xml")
        response.headers.append((b"x-amzn-requestid", request_id.encode()))
        return response

    async def _seal_route(self, scope: Scope, path: str, body: bytes) -> Response:
        method = scope["method"]
        if path == SEAL_STATUS and method == "GET":
            return json_response(200, await self._status())
        if path == UNSEAL and method == "POST":
            return await self._unseal(body)
        if path == SEAL and method == "POST":
            return await self._seal(scope, body)
        return json_response(405, {"error": "method not allowed"})

    async def _status(self) -> dict[str, Any]:
        try:
            config = await asyncio.to_thread(shamir_config, self.engine)
        except SealError as exc:
            return {"sealed": self.inner is None, "type": "shamir", "error": str(exc)}
        return {
            "sealed": self.inner is None,
            "type": "shamir",
            "n": config.shares,
            "t": config.threshold,
            "progress": len(self._shares),
        }

    def _rate_limited(self) -> bool:
        now = time.monotonic()
        while self._attempts and self._attempts[0] < now - 60:
            self._attempts.popleft()
        if len(self._attempts) >= UNSEAL_ATTEMPTS:
            return True
        self._attempts.append(now)
        return False

    async def _unseal(self, body: bytes) -> Response:
        if self._rate_limited():
            return json_response(429, {"error": "too many unseal attempts: wait a minute"})
        try:
            request = json.loads(body or b"{}")
            if not isinstance(request, dict):
                raise ValueError
        except ValueError:
            return json_response(400, {"error": 'expected {"key": "<base64 share>"} or {"reset": true}'})
        async with self._lock:
            if request.get("reset"):
                self._shares.clear()
                return json_response(200, await self._status())
            if self.inner is not None:
                return json_response(200, await self._status())
            try:
                share = base64.b64decode(str(request.get("key", "")), validate=True)
            except (binascii.Error, ValueError):
                share = b""
            if len(share) < 2 or share[-1] == 0:
                return json_response(
                    400, {"error": "not a share: give one line that khoa operator init printed"}
                )
            try:
                config = await asyncio.to_thread(shamir_config, self.engine)
            except SealError as exc:
                return json_response(409, {"error": str(exc)})
            if self._shares and len(next(iter(self._shares.values()))) != len(share):
                return json_response(400, {"error": "this share is not from the same split as the others"})
            self._shares[share[-1]] = share
            if len(self._shares) < config.threshold:
                return json_response(200, await self._status())
            shares, self._shares = list(self._shares.values()), {}
            try:
                key = shamir.combine(shares)
                await asyncio.to_thread(check_root_key, self.engine, key)
            except (SealError, shamir.ShamirError):
                log.warning("unseal failed: the shares given do not reconstruct the root key")
                status = await self._status()
                status["error"] = "the shares do not reconstruct this database's root key: start again"
                return json_response(400, status)
            await self._open(key)
            return json_response(200, await self._status())

    async def _open(self, key: bytes) -> None:
        def build() -> Runtime:
            with provided_root_key(key):
                return Runtime.build(self.settings)

        runtime = await asyncio.to_thread(build)
        inner = self._build(runtime)
        if self._started:
            runtime.jobs.start()
        self.inner = inner
        log.warning("unsealed")
        await self._record_pending(inner)

    async def _record_pending(self, inner: Any) -> None:
        """Record, now that the trail is writable, the calls refused while sealed (original times)."""
        pending, self._pending = list(self._pending), deque(maxlen=PENDING_LIMIT)
        if self._dropped:
            log.warning(
                "%d calls refused while sealed were not kept for the trail (over %d)",
                self._dropped,
                PENDING_LIMIT,
            )
            self._dropped = 0
        pipeline = inner.pipeline
        recorder = pipeline.recorder
        error = sealed_error()
        for refused in pending:
            scope = {
                "headers": [
                    (k.encode(), v.encode("latin-1")) for k, vs in refused.headers.items() for v in vs
                ]
            }
            service = pipeline.addressed(scope)
            target = (refused.headers.get("x-amz-target") or [""])[0]
            call = Call(
                request_id=refused.request_id,
                service=service,
                operation=target.rpartition(".")[2] if target else refused.body_action,
                headers=refused.headers,
                source_ip=refused.source_ip,
            )
            event = recorder.event(call, None, error)
            event.record["eventTime"] = refused.when.strftime("%Y-%m-%dT%H:%M:%SZ")
            event.event_time = refused.when.timestamp()
            try:
                await recorder.audit.record(event)
            except Exception:
                log.exception("could not record a call refused while sealed (request %s)", refused.request_id)

    async def _seal(self, scope: Scope, body: bytes) -> Response:
        inner = self.inner
        if inner is None:
            return json_response(200, {"sealed": True})
        headers = header_map(scope)
        try:
            principal, _ = await asyncio.to_thread(
                inner.pipeline.authenticator.authenticate, scope, headers, body, cast(Service, _Signing())
            )
        except AWSError as error:
            return json_response(403, {"error": error.code, "message": error.message})
        if not (principal.is_root and principal.account_id == inner.runtime.dev_account_id):
            # Sealing stops every account's service: only the installation's own (first) account root
            # may, never a tenant account's (whatever its SCPs, which bind only API calls).
            return json_response(
                403, {"error": "AccessDenied", "message": "sealing needs the installation account's root"}
            )
        log.warning("sealed by %s", principal.arn)
        await self._drop_inner()
        return json_response(200, {"sealed": True})

    async def _drop_inner(self) -> None:
        inner, self.inner = self.inner, None
        if inner is None:
            return
        runtime: Runtime = inner.runtime
        await runtime.jobs.stop()
        inner.close()
        runtime.close()


def _form_action(body: bytes) -> str:
    from urllib.parse import parse_qs

    try:
        return parse_qs(body.decode("latin-1")).get("Action", [""])[0][:64]
    except ValueError:
        return ""
