"""The ASGI application: routes admin endpoints and runs the AWS request pipeline.

decode → authenticate → validate → handler → encode. Nothing below this module knows about HTTP.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from khoa import affinity
from khoa.audit.events import AuditEvent, is_read_only
from khoa.audit.events import build as build_event
from khoa.audit.recorder import AuditUnavailable, unavailable_error
from khoa.auth.credentials import Credential, check_session_token
from khoa.auth.principal import Principal
from khoa.auth.sigv4 import SignedRequest, invalid_region, parse_authorization
from khoa.clock import wall_clock
from khoa.events import stream as change_stream
from khoa.ids import IdSource
from khoa.network import NetworkMap
from khoa.observe.health import readiness
from khoa.observe.metrics import Metrics
from khoa.protocol import awsjson, awsquery
from khoa.protocol.context import RequestContext
from khoa.protocol.errors import AWSError, internal_failure
from khoa.runtime import Runtime
from khoa.services.base import Handler, Service
from khoa.services.secretsmanager import names as secret_names
from khoa.services.secretsmanager.authz import authorize_secret
from khoa.services.secretsmanager.store import SecretRecord
from khoa.settings import Settings

log = logging.getLogger("khoa")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_JSON = b"application/json"
# How long the event loop may keep the GIL while another thread waits for it (CPython's default is
# 5 ms). The audit writer thread needs the GIL back after each SQLite call it makes with the GIL
# released (insert, commit's fsync, the lock file): on a busy server each of those waits the full
# interval for the loop to let go, and every request of the batch waits with it. At 0.5 ms a
# group commit of ~64 events took ~2 ms instead of ~10 ms, and the trail's cost on GetSecretValue
# throughput fell by a third (bench/run.py). With no other thread waiting the setting does nothing.
GIL_SWITCH_INTERVAL_SECONDS = 0.0005


class Response:
    __slots__ = ("body", "content_type", "headers", "outcome", "status")

    def __init__(
        self,
        status: int,
        body: bytes,
        content_type: bytes = _JSON,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers or []
        self.outcome = "ok"


def _json_response(status: int, payload: dict[str, Any]) -> Response:
    return Response(status, json.dumps(payload).encode())


@dataclass
class _Call:
    """What is known about one API call as it moves through the pipeline (for its audit event)."""

    request_id: str
    service: Service | None = None
    operation: str = ""
    headers: dict[str, list[str]] = field(default_factory=dict)
    principal: Principal | None = None
    region: str = ""
    source_ip: str = ""
    params: dict[str, Any] | None = None
    pre_event: AuditEvent | None = None
    recorded: bool = False


# Calls that may take access away, beyond every IAM write: after one ran, every process of this node
# drops its cached credentials, policies and metadata (khoa.auth.revocation), so the very next request
# sees the change whichever worker takes it.
_REVOKING: dict[str, frozenset[str]] = {
    "kms": frozenset(
        {"PutKeyPolicy", "RevokeGrant", "RetireGrant", "DisableKey", "ScheduleKeyDeletion", "DeleteAlias"}
    ),
    "secretsmanager": frozenset({"PutResourcePolicy", "DeleteResourcePolicy", "DeleteSecret"}),
    "ssm": frozenset({"DeleteParameter", "DeleteParameters"}),
}


def may_revoke(service: str, operation: str) -> bool:
    """Whether a call to ``service.operation`` may revoke credentials or permissions."""
    if service == "iam":
        return not is_read_only(operation)
    return operation in _REVOKING.get(service, frozenset())


class _ClientGone(Exception):
    """The client disconnected before its request body was complete."""


class _BodyRefused(Exception):
    """The request body was not accepted (too large, or not received in time)."""

    def __init__(self, error: AWSError) -> None:
        super().__init__(error.code)
        self.error = error


def request_timeout() -> AWSError:
    """The answer to a request whose body did not arrive in time (S3's wording for the same fault)."""
    return AWSError(
        "RequestTimeout",
        "Your socket connection to the server was not read from or written to within the timeout "
        "period. Idle connections will be closed.",
        408,
    )


def _header_map(scope: Scope) -> dict[str, list[str]]:
    """The request's headers by lower-case name (a name may repeat)."""
    headers: dict[str, list[str]] = {}
    for raw_name, raw_value in scope["headers"]:
        headers.setdefault(raw_name.decode("latin-1").lower(), []).append(raw_value.decode("latin-1"))
    return headers


def _access_key_of(headers: dict[str, list[str]]) -> str:
    header = (headers.get("authorization") or [""])[0]
    credential = parse_authorization(header)[1].get("Credential", "") if header else ""
    return credential.split("/", 1)[0][:128]


class KhoaApp:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.metrics = Metrics(runtime)
        self.ids = IdSource()
        self._pinned: affinity.Pinned | None = None  # the CPU this worker keeps to (lifespan startup)
        settings = runtime.settings
        self.network = NetworkMap(settings.private_networks, settings.trusted_proxies)

    # -- ASGI ------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if path == "/_khoa/events" and scope["method"] == "GET":
            await self._change_stream(scope, receive, send)
            return
        admin = path.startswith("/_khoa/") or path.startswith("/moto-api/") or path == "/metrics"
        limit = 64 * 1024 if admin else self.runtime.settings.max_body_bytes
        try:
            body = await self._read_body(receive, limit, self.runtime.settings.body_timeout_seconds)
        except _ClientGone:
            return  # nobody to answer; a half-received request is never acted on
        except _BodyRefused as refused:
            request_id = self.ids.request_id()
            # In the protocol of the service addressed: XML for the query services (IAM, STS).
            response = self._error_response(self._addressed(scope), refused.error, request_id)
            response.headers.append((b"x-amzn-requestid", request_id.encode()))
            # The rest of the body was not read: this connection cannot carry another request.
            response.headers.append((b"connection", b"close"))
            self.metrics.count_request("unknown", "unknown", refused.error.code)
        else:
            if admin:
                response = self._admin(scope, path, body)
                if path == "/_khoa/jobs/run" and response.status == 200:
                    response = _json_response(200, {"ran": await self.runtime.jobs.run_due_async()})
            else:
                response = await self.handle_api(scope, body)
        headers = [
            (b"content-type", response.content_type),
            (b"content-length", str(len(response.body)).encode()),
            *response.headers,
        ]
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})

    async def _change_stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Authenticate and authorise a change-stream subscription, then stream (see events/stream.py)."""
        call = _Call(request_id=self.ids.request_id(), operation="SubscribeToSecretChanges")
        headers = _header_map(scope)
        call.headers = headers
        call.service = self.runtime.services["secretsmanager"]
        secret_ref = change_stream.requested_secret(scope)
        call.params = {"SecretId": secret_ref}
        try:
            client = scope.get("client")
            call.source_ip = client[0] if client else ""
            call.principal, call.region = self._authenticate(scope, headers, b"", call.service)
            record = self._subscription_record(call, call.principal, secret_ref)
            await self._record_outcome(call, {"ARN": record.arn}, None)
        except AuditUnavailable:
            response = self._error_response(call.service, unavailable_error(), call.request_id)
        except AWSError as error:
            response = await self._failure(call, error)
        else:
            last = (headers.get("last-event-id") or [""])[0]
            start = int(last) if last.isdigit() else change_stream.latest_seq(self.runtime.engine)
            tokens = headers.get("x-amz-security-token")
            token = tokens[0] if tokens else None
            await change_stream.stream(
                self.runtime.engine,
                record.secret_id,
                start,
                receive,
                send,
                still_allowed=lambda: self._subscription_holds(call, secret_ref, token),
                recheck_seconds=self.runtime.settings.stream_recheck_seconds,
                revocation_epoch=self.runtime.revocations.current,
            )
            return
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [(b"content-type", response.content_type)],
            }
        )
        await send({"type": "http.response.body", "body": response.body})

    def _subscription_record(self, call: _Call, principal: Principal, secret_ref: str) -> SecretRecord:
        """The subscribed secret, if ``principal`` may DescribeSecret it (raises AWSError if not)."""
        ctx = RequestContext(
            runtime=self.runtime,
            principal=principal,
            region=call.region,
            request_id=call.request_id,
            service="secretsmanager",
            operation="DescribeSecret",
            now=self.runtime.clock.now(),
            source_ip=call.source_ip,
        )
        record = secret_names.require(ctx, self.runtime.secrets.store, secret_ref, allow_deleted=True)
        authorize_secret(ctx, "secretsmanager:DescribeSecret", record, {})
        return record

    def _subscription_holds(self, call: _Call, secret_ref: str, token: str | None) -> bool:
        """Whether an open subscription may go on: its credential still present, active and (for a
        session) unexpired, and DescribeSecret on the secret still allowed, judged as at subscription.
        Anything unexpected ends the stream (fail closed)."""
        runtime = self.runtime
        runtime.check_revocations()
        principal = call.principal
        try:
            if principal is None:
                return False
            if not runtime.settings.dev:
                credential = runtime.credentials.lookup(principal.access_key_id)
                if credential is None:
                    return False
                check_session_token(credential, token, runtime.clock.now().timestamp())
                principal = credential.principal
            self._subscription_record(call, principal, secret_ref)
        except AWSError as error:
            log.info("change stream %s closed: %s", call.request_id, error.code)
            return False
        except Exception:
            log.exception("change stream %s closed: re-check failed", call.request_id)
            return False
        return True

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                sys.setswitchinterval(GIL_SWITCH_INTERVAL_SECONDS)
                if self.runtime.settings.cpu_affinity == "auto":
                    self._pinned = affinity.pin_process(self.runtime.settings.data_dir)
                self.runtime.jobs.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.runtime.jobs.stop()
                self.runtime.close()
                if self._pinned is not None:
                    self._pinned.release()
                await send({"type": "lifespan.shutdown.complete"})
                return

    @staticmethod
    async def _read_body(receive: Receive, limit: int, timeout: float) -> bytes:
        """The whole request body, within ``timeout`` seconds in all (KHOA_BODY_TIMEOUT_SECONDS).

        A client that announces a body and sends it slowly, or never, must not hold a connection (and
        the worker's memory) open indefinitely: past the deadline the request is answered 408 and the
        connection closed. The deadline covers the whole body, so trickling a byte at a time does not
        reset it. Raises _BodyRefused (413, 408) or _ClientGone.
        """
        chunks: list[bytes] = []
        size = 0
        more = True
        try:
            # One deadline for the whole body: a timer handle, not a task per message (wait_for would
            # wrap every receive in a task on the hot path).
            async with asyncio.timeout(timeout):
                while more:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise _ClientGone
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        raise _BodyRefused(
                            AWSError(
                                "RequestEntityTooLargeException",
                                "The request body exceeds the maximum allowed size.",
                                413,
                            )
                        )
                    chunks.append(chunk)
                    more = message.get("more_body", False)
        except TimeoutError:
            raise _BodyRefused(request_timeout()) from None
        return b"".join(chunks)

    # -- admin endpoints -------------------------------------------------------------------------
    def _admin(self, scope: Scope, path: str, body: bytes | None) -> Response:
        method = scope["method"]
        settings = self.runtime.settings
        if path == "/_khoa/health" and method in ("GET", "HEAD"):
            return _json_response(200, {"status": "ok", "sealed": False, "dev": settings.dev})
        if path == "/_khoa/ready" and method in ("GET", "HEAD"):
            return _json_response(*readiness(self.runtime))
        if path == "/metrics" and method == "GET":
            return Response(200, self.metrics.render(), b"text/plain; version=0.0.4; charset=utf-8")
        if path in ("/_khoa/reset", "/moto-api/reset") and method == "POST" and settings.dev:
            self.runtime.reset()
            return _json_response(200, {"status": "ok"})
        # Test hooks exist only in --dev (loopback only, no signature checks anyway). Outside it nothing
        # may move the domain clock or run background work on request: a clock advanced from outside
        # destroys keys pending deletion and ends sessions. Tests use their own harness
        # (tests/support/hooks), which the product does not know about.
        if settings.dev:
            if path == "/_khoa/clock/advance" and method == "POST":
                try:
                    seconds = float(json.loads(body or b"{}").get("seconds", 0))
                    self.runtime.clock.advance(timedelta(seconds=seconds))
                except (ValueError, TypeError, AttributeError):
                    return _json_response(400, {"error": 'expected {"seconds": N} with N >= 0'})
                return _json_response(200, {"now": self.runtime.clock.now().isoformat()})
            if path == "/_khoa/jobs/run" and method == "POST":
                return _json_response(200, {"ran": -1})  # answered asynchronously in __call__
        return _json_response(404, {"error": "not found"})

    # -- the AWS pipeline ------------------------------------------------------------------------
    async def handle_api(self, scope: Scope, body: bytes) -> Response:
        started = time.perf_counter()
        call = _Call(request_id=self.ids.request_id())
        headers = _header_map(scope)
        call.headers = headers
        target = (headers.get("x-amz-target") or [""])[0]
        form: dict[str, str] | None = None
        if target:
            prefix, _, call.operation = target.rpartition(".")
            call.service = self.runtime.services.get(prefix)
        else:
            form = awsquery.parse_form(body, scope.get("query_string", b"").decode("latin-1"))
            call.operation = form.get("Action", "")
            # A form request scoped to a service Khoa does not serve as query goes to the default
            # endpoint (STS), whose signature check refuses the scope, in XML as a query client expects.
            call.service = self.runtime.query_services.get(
                self._scope_service(headers) or "sts"
            ) or self.runtime.query_services.get("sts")
        service = call.service
        service_name = service.name if service else "unknown"
        try:
            if service is None:
                raise AWSError("UnknownOperationException", "")
            ctx, params, handler = self._prepare(scope, headers, body, form, service, call)
            if not is_read_only(call.operation):
                call.pre_event = self._event(call, None, None)
                await self._record(call.pre_event)
            try:
                result = handler(ctx, params)
            except AWSError as error:
                await self._record_outcome(call, None, error)
                raise
            finally:
                if may_revoke(service.name, call.operation):
                    self.runtime.revoked()  # committed (or partly): every process of this node sees it
            await self._record_outcome(call, result, None)
            if service.protocol == "query":
                encoded = service.query_encoder.encode(call.operation, result, call.request_id)
                response = Response(200, encoded, awsquery.CONTENT_TYPE)
            else:
                response = Response(200, awsjson.encode_body(result), awsjson.CONTENT_TYPE)
        except AuditUnavailable:
            response = self._error_response(service, unavailable_error(), call.request_id)
        except AWSError as error:
            response = await self._failure(call, error)
        except Exception:
            log.exception("request %s (%s.%s) failed", call.request_id, service_name, call.operation)
            response = await self._failure(call, internal_failure())
        response.headers.append((b"x-amzn-requestid", call.request_id.encode()))
        known_operation = service is not None and call.operation in service.handlers
        label = call.operation if known_operation else "unknown"
        self.metrics.count_request(service_name, label, response.outcome)
        self.metrics.latency.labels(service_name, label).observe(time.perf_counter() - started)
        return response

    async def _failure(self, call: _Call, error: AWSError) -> Response:
        """Answer a refused request, after recording it (unless its outcome is already recorded)."""
        if not call.recorded:
            try:
                await self._record_outcome(call, None, error)
            except AuditUnavailable:
                return self._error_response(call.service, unavailable_error(), call.request_id)
        return self._error_response(call.service, error, call.request_id)

    async def _record(self, event: AuditEvent) -> None:
        try:
            await self.runtime.audit.record(event)
        except AuditUnavailable:
            self.metrics.audit_failures.inc()
            raise

    async def _record_outcome(
        self, call: _Call, result: dict[str, Any] | None, error: AWSError | None
    ) -> None:
        event = self._event(call, result, error)
        call.recorded = True
        if call.pre_event is None:
            await self._record(event)
            return
        event.record["eventID"] = call.pre_event.event_id
        try:
            await self.runtime.audit.finalize(event)
        except AuditUnavailable:
            # The call already ran and its record (made before it ran) is durable: answer truthfully.
            self.metrics.audit_failures.inc()
            log.error("could not record the outcome of request %s", call.request_id)

    def _event(self, call: _Call, result: dict[str, Any] | None, error: AWSError | None) -> AuditEvent:
        principal = call.principal
        access_key_id = principal.access_key_id if principal else _access_key_of(call.headers)
        recipient = principal.account_id if principal else self.runtime.dev_account_id
        service = call.service
        return build_event(
            model=service.model if service else None,
            service=service.name if service else "unknown",
            operation=call.operation,
            region=call.region or self.runtime.settings.default_region,
            request_id=call.request_id,
            principal=principal,
            access_key_id=access_key_id,
            source_ip=call.source_ip,
            user_agent=(call.headers.get("user-agent") or [""])[0],
            params=call.params,
            result=result,
            error_code=error.code if error else None,
            error_message=error.message if error else None,
            now=self.runtime.clock.now(),
            recipient_account=recipient,
            event_id=self.ids.event_id(),
        )

    @staticmethod
    def _error_response(service: Service | None, error: AWSError, request_id: str) -> Response:
        if service is not None and service.protocol == "query":
            error = awsquery.query_auth_error(error)
            status = error.status if error.status != 400 else service.model.error_status(error.code)
            response = Response(
                status, service.query_encoder.encode_error(error, request_id), awsquery.CONTENT_TYPE
            )
        else:
            status = error.status
            if status == 400 and service is not None:
                status = service.model.error_status(error.code)
            response = Response(status, awsjson.encode_error(error), awsjson.CONTENT_TYPE)
        response.outcome = error.code
        return response

    def _prepare(
        self,
        scope: Scope,
        headers: dict[str, list[str]],
        body: bytes,
        form: dict[str, str] | None,
        service: Service,
        call: _Call,
    ) -> tuple[RequestContext, dict[str, Any], Handler]:
        """Authenticate, validate and authorise; what remains is running the handler."""
        operation = call.operation
        client = scope.get("client")
        peer = client[0] if client else ""
        forwarded = headers.get("x-forwarded-for")
        call.source_ip = self.network.client_address(peer, ",".join(forwarded) if forwarded else None)
        call.principal, call.region = self._authenticate(scope, headers, body, service)
        handler = service.handlers.get(operation)
        if handler is None:
            if service.protocol == "query":
                raise AWSError(
                    "InvalidAction",
                    f"Could not find operation {operation} for version "
                    f"{service.model.metadata.get('apiVersion')}",
                )
            raise AWSError("UnknownOperationException", "")
        raw = service.query_decoder.decode(operation, form) if form is not None else awsjson.decode_body(body)
        params = service.model.validate(operation, raw)
        call.params = params
        extras: dict[str, Any] = {"secure_transport": scope.get("scheme") == "https"}
        network = self.network.describe(call.source_ip)
        if network:
            extras["network"] = network
        ctx = RequestContext(
            runtime=self.runtime,
            principal=call.principal,
            region=call.region,
            request_id=call.request_id,
            service=service.name,
            operation=operation,
            now=self.runtime.clock.now(),
            source_ip=call.source_ip,
            user_agent=(headers.get("user-agent") or [""])[0],
            extras=extras,
        )
        service.authorizer(ctx, params)  # every operation has a rule (Service checks its table covers all)
        return ctx, params, handler

    def _authenticate(
        self, scope: Scope, headers: dict[str, list[str]], body: bytes, service: Service
    ) -> tuple[Principal, str]:
        runtime = self.runtime
        runtime.check_revocations()  # before any credential, policy or metadata is read from a cache
        if runtime.settings.dev:
            region = self._scope_region(headers)
            if region not in runtime.verifier.regions:  # --dev serves the same regions (KHOA_REGIONS)
                self.metrics.auth_failures.labels("InvalidSignatureException").inc()
                raise invalid_region(region)
            return Principal.account_root(runtime.dev_account_id), region
        request = SignedRequest(
            method=scope["method"],
            raw_path=scope.get("raw_path", b"/").decode("latin-1").split("?")[0] or scope["path"],
            query_string=scope.get("query_string", b"").decode("latin-1"),
            headers=headers,
            body=body,
        )
        credentials: dict[str, Any] = {}

        def lookup(access_key_id: str) -> str | None:
            credential = runtime.credentials.lookup(access_key_id)
            if credential is None:
                return None
            credentials["value"] = credential
            return credential.secret

        try:
            verified = runtime.verifier.verify(
                request,
                service=service.signing_name,
                now=wall_clock(),
                skew=service.skew,
                lookup_secret=lookup,
            )
        except AWSError as error:
            self.metrics.auth_failures.labels(error.code).inc()
            raise
        credential: Credential = credentials["value"]
        # Sessions expire by the clock that issued them (the domain clock). It is never behind the wall
        # clock (it only moves forward, and only in --dev or a test harness), so advancing it can end
        # sessions early, never extend them.
        expiry_now = runtime.clock.now()
        try:
            check_session_token(credential, verified.session_token, expiry_now.timestamp())
        except AWSError as error:
            self.metrics.auth_failures.labels(error.code).inc()
            raise
        return credential.principal, verified.region

    def _addressed(self, scope: Scope) -> Service | None:
        """The service a request is for, judged from its headers alone (as handle_api dispatches)."""
        headers = _header_map(scope)
        target = (headers.get("x-amz-target") or [""])[0]
        if target:
            return self.runtime.services.get(target.rpartition(".")[0])
        return self.runtime.query_services.get(
            self._scope_service(headers) or "sts"
        ) or self.runtime.query_services.get("sts")

    @staticmethod
    def _scope_service(headers: dict[str, list[str]]) -> str | None:
        header = (headers.get("authorization") or [""])[0]
        parts = parse_authorization(header)[1].get("Credential", "").split("/") if header else []
        return parts[3] if len(parts) == 5 else None

    def _scope_region(self, headers: dict[str, list[str]]) -> str:
        header = (headers.get("authorization") or [""])[0]
        if header:
            credential = parse_authorization(header)[1].get("Credential", "")
            parts = credential.split("/")
            if len(parts) == 5 and parts[2]:
                return parts[2]
        return self.runtime.settings.default_region


def create_app(settings: Settings | None = None) -> KhoaApp:
    """Build the app; with no settings, read them from the environment (how workers start)."""
    return KhoaApp(Runtime.build(settings or Settings.from_env()))
