"""The AWS request pipeline: decode → authenticate → validate → authorise → handler → encode, with
each call recorded in the trail (``recording``) and counted in the metrics."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from typing import Any, TypeVar

from khoa.audit.events import is_read_only
from khoa.audit.recorder import AuditUnavailable, unavailable_error
from khoa.blocking import StatementClock, WouldBlock, on_the_loop, run_unless_stuck
from khoa.clock import Clock
from khoa.ids import IdSource
from khoa.logs import LogLimiter
from khoa.network import NetworkMap
from khoa.observe.metrics import Metrics
from khoa.protocol import awsjson, awsquery, restjson
from khoa.protocol.context import RequestContext
from khoa.protocol.errors import AWSError
from khoa.server.asgi import Response, Scope, header_map
from khoa.server.authentication import Authenticator, scope_service
from khoa.server.encoding import error_response, success_response
from khoa.server.recording import Call, CallRecorder, access_key_of
from khoa.services.base import Handler, Service

log = logging.getLogger("khoa")
_T = TypeVar("_T")

# Calls that may take access away, beyond every IAM write: after one ran, every process of this node
# drops its cached credentials, policies and metadata (khoa.auth.revocation), so the very next request
# sees the change whichever worker takes it.
_REVOKING: dict[str, frozenset[str]] = {
    # a resource's tags (aws:ResourceTag) and a key's aliases (kms:ResourceAliases) are policy facts:
    # changing them may take access away
    "kms": frozenset(
        {
            "CreateAlias",
            "UpdateAlias",
            "PutKeyPolicy",
            "RevokeGrant",
            "RetireGrant",
            "DisableKey",
            "ScheduleKeyDeletion",
            "DeleteImportedKeyMaterial",
            "DeleteAlias",
            "TagResource",
            "UntagResource",
        }
    ),
    "secretsmanager": frozenset(
        {"PutResourcePolicy", "DeleteResourcePolicy", "DeleteSecret", "TagResource", "UntagResource"}
    ),
    "ssm": frozenset({"DeleteParameter", "DeleteParameters", "AddTagsToResource", "RemoveTagsFromResource"}),
    # a response to a leak deactivates and quarantines access keys
    "khoa-leaks": frozenset({"ReportLeakedValues", "EmergencyRotateSecret"}),
    # service control policies govern every principal of a member account
    "organizations": frozenset(
        {"EnablePolicyType", "UpdatePolicy", "AttachPolicy", "DetachPolicy", "CreateOrganization"}
    ),
}


# Calls whose work is CPU-heavy (RSA and EC key generation, RSA private-key operations, the policy
# simulator's evaluations) run on a request thread even on SQLite: OpenSSL releases the GIL while it
# works, so the event loop keeps serving other requests meanwhile (three RSA-4096 CreateKey calls on
# the loop stalled everything else for up to a second).
_CPU_HEAVY: dict[str, frozenset[str]] = {
    "kms": frozenset(
        {
            "CreateKey",
            "GenerateDataKeyPair",
            "GenerateDataKeyPairWithoutPlaintext",
            "GetParametersForImport",
            "ImportKeyMaterial",
            "Sign",
            "DeriveSharedSecret",
        }
    ),
    "iam": frozenset({"SimulatePrincipalPolicy", "SimulateCustomPolicy"}),
    # a response may run a rotation function, which calls this server back: never on the event loop
    "khoa-leaks": frozenset({"ReportLeakedValues", "EmergencyRotateSecret"}),
    # the review reads whole tables (and may verify the trail): never on the event loop
    "khoa-ops": frozenset({"GetReviewFindings"}),
}

# Calls that are heavy only with an RSA key, told by the algorithm the request must then name (an
# RSA-4096 private-key operation takes ~5 ms; symmetric Decrypt, the hot path, stays on the loop).
_RSA_PRIVATE = frozenset({"Decrypt", "ReEncrypt"})
_RSA_ALGORITHM = b'"RSAES_'

# A body this large is decoded and validated on a heavy thread, whatever the call: a 1 MiB body of
# 100,000 list members took 0.1-0.4 s of validation, on the event loop, between every other request
# of the worker. Ordinary calls are a few KiB; a 64 KiB secret value still fits under this.
LARGE_BODY_BYTES = 96 * 1024

# Reads that may read many rows of the trail (a page of up to 10,000 events; the events the
# last-use tables have not counted yet): on a request thread even on SQLite, which releases the GIL
# while it reads, so the event loop keeps serving meanwhile.
_SCANS: dict[str, frozenset[str]] = {
    "cloudtrail": frozenset({"LookupEvents"}),
    "kms": frozenset({"GetKeyLastUsage"}),
    "iam": frozenset({"GetAccessKeyLastUsed"}),
}


# Writes that call a peer over the network (an external key store's proxy), or that may read many rows
# (CreateGrant allowed by grants reads every CreateGrant grant its caller holds on the key, up to the
# 50,000-grant quota): never on the event loop, whatever the database (a read that does is moved off
# the loop when it comes to it: khoa.blocking).
_CALLS_OUT: dict[str, frozenset[str]] = {
    "kms": frozenset(
        {"CreateCustomKeyStore", "ConnectCustomKeyStore", "UpdateCustomKeyStore", "CreateGrant"}
    ),
}


def _raw_path(scope: Scope) -> str:
    """The request's path as sent (still percent-encoded, so an encoded ``/`` stays inside its label)."""
    raw = scope.get("raw_path")
    return raw.decode("latin-1").split("?", 1)[0] if raw else str(scope.get("path", "/"))


def request_origin(
    network: NetworkMap, scope: Scope, headers: dict[str, list[str]]
) -> tuple[str, dict[str, Any]]:
    """Where a request comes from, as every authorisation must see it: the client's address (through
    trusted proxies: X-Forwarded-For), and the request context's network facts (HTTPS; the private
    network the address is in, for aws:SourceVpc and aws:VpcSourceIp)."""
    client = scope.get("client")
    peer = client[0] if client else ""
    forwarded = headers.get("x-forwarded-for")
    address = network.client_address(peer, ",".join(forwarded) if forwarded else None)
    extras: dict[str, Any] = {"secure_transport": scope.get("scheme") == "https"}
    described = network.describe(address)
    if described:
        extras["network"] = described
    return address, extras


def may_revoke(service: str, operation: str) -> bool:
    """Whether a call to ``service.operation`` may revoke credentials or permissions."""
    if service == "iam":
        return not is_read_only(operation)
    return operation in _REVOKING.get(service, frozenset())


class Pipeline:
    def __init__(
        self,
        *,
        services: Mapping[str, Service],
        query_services: Mapping[str, Service],
        authenticator: Authenticator,
        recorder: CallRecorder,
        metrics: Metrics,
        ids: IdSource,
        network: NetworkMap,
        clock: Clock,
        revoked: Callable[[], None],
        request_threads: Executor,
        write_threads: Executor,
        heavy_threads: Executor,
        statements: StatementClock,
        stuck_after_seconds: float,
    ) -> None:
        """``services`` by X-Amz-Target prefix (awsJson), ``query_services`` by signing name (awsQuery);
        ``revoked`` tells every process of the node that access may have been taken away.

        A write's checks (authentication, validation, authorisation) run on the event loop until they
        would wait on the database or a peer, and its handler, which writes, on ``write_threads``
        (one, on SQLite, which writes one transaction at a time; the request threads otherwise):
        the database, SQLite's file included, is never waited on by the loop, where a silent server
        or a frozen file system would hold every other request and the probes with it. CPU-heavy
        calls run on ``heavy_threads``, which may use every CPU of the process even when the worker
        keeps to one, and writes that call out (an external key store) on request threads from the
        start. A read runs on the loop until it would wait on a peer, and then on a request thread
        (``handle``). A call whose thread has spent ``stuck_after_seconds`` in one
        database statement (``statements`` times them) is answered 503 without waiting further.
        """
        self.services = services
        # rest-json services (Access Analyzer) are addressed by method and path (see _rest_service)
        self.rest_services = {s.signing_name: s for s in services.values() if s.protocol == "rest-json"}
        self.query_services = query_services
        self.authenticator = authenticator
        self.recorder = recorder
        self.metrics = metrics
        self.ids = ids
        self.network = network
        self.clock = clock
        self.revoked = revoked
        self.request_threads = request_threads
        self.write_threads = write_threads
        self.heavy_threads = heavy_threads
        self.statements = statements
        self.stuck_after_seconds = stuck_after_seconds
        # During an outage every request fails the same way: one line (and traceback) per interval.
        self._logs = LogLimiter(log)

    async def handle(self, scope: Scope, body: bytes) -> Response:
        started = time.perf_counter()
        call = Call(request_id=self.ids.request_id())
        headers = header_map(scope)
        call.headers = headers
        call.query_string = scope.get("query_string", b"")
        target = (headers.get("x-amz-target") or [""])[0]
        large = len(body) > LARGE_BODY_BYTES
        form: dict[str, str] | None = None
        if target:
            prefix, _, call.operation = target.rpartition(".")
            call.service = self.services.get(prefix)
            if call.service is not None and call.service.protocol == "rest-json":
                call.service = None  # addressed by method and path only
        elif (rest := self._rest_service(scope, headers)) is not None:
            call.service = rest
            call.operation = self._rest_operation(rest, scope)
        else:
            query = scope.get("query_string", b"").decode("latin-1")
            if large:  # ~0.1 s per MiB: off the loop, as its decoding would be
                form = await self._run(self.heavy_threads, awsquery.parse_form, body, query)
            else:
                form = awsquery.parse_form(body, query)
            call.operation = form.get("Action", "")
            call.service = self._query_service(headers, query)
        service = call.service
        service_name = service.name if service else "unknown"
        try:
            if service is None:
                raise AWSError("UnknownOperationException", "")
            heavy = (
                large
                or call.operation in _CPU_HEAVY.get(service.name, ())
                or (call.operation in _RSA_PRIVATE and service.name == "kms" and _RSA_ALGORITHM in body)
            )
            threads = self.heavy_threads if heavy else self.request_threads
            if is_read_only(call.operation):
                # Nothing to record before a read runs: the whole call at once, on the loop until it
                # would wait on a peer (a refusal, from the checks or the handler, is recorded by
                # ``refuse`` below).
                request = (scope, headers, body, form, service, call)
                if heavy:
                    result = await self._run(self.heavy_threads, self._read, request)
                elif call.operation in _SCANS.get(service.name, ()):
                    result = await self._run(self.request_threads, self._read, request)
                else:
                    # On the event loop unless it comes to wait on a peer (the network database,
                    # an external key store's proxy): then again, from the start, on a request
                    # thread (khoa.blocking). Reads served from the caches, nearly all of them,
                    # never pay for the hand-off (inline: this is every read's path).
                    try:
                        with on_the_loop():
                            result = self._read(request)
                    except WouldBlock:
                        result = await self._run(self.request_threads, self._read, request)
            else:
                prepared = (scope, headers, body, form, service, call)
                if heavy or call.operation in _CALLS_OUT.get(service.name, ()):
                    ctx, params, handler = await self._run(threads, self._prepare, *prepared)
                else:
                    ctx, params, handler = await self._prepare_on_the_loop_first(prepared)
                    threads = self.write_threads
                await self.recorder.record_before(call)
                try:
                    result = await self._run(threads, handler, ctx, params)
                except AWSError as error:
                    await self.recorder.record_outcome(call, None, error)
                    raise
                finally:
                    if may_revoke(service.name, call.operation):
                        self.revoked()  # committed (or partly): every process of this node sees it
            await self.recorder.record_outcome(call, result, None)
            response = success_response(service, call.operation, result, call.request_id)
        except AuditUnavailable:
            response = error_response(service, unavailable_error(), call.request_id)
        except AWSError as error:
            response = await self.recorder.refuse(call, error)
        except Exception as exc:  # noqa: BLE001 - logged (rate-limited) and answered 500 or 503
            response = await self.recorder.refuse_failure(
                call, exc, self._logs, f"{service_name}.{call.operation}"
            )
        response.headers.append((b"x-amzn-requestid", call.request_id.encode()))
        known_operation = service is not None and call.operation in service.handlers
        label = call.operation if known_operation else "unknown"
        self.metrics.count_request(service_name, label, response.outcome)
        self.metrics.latency.labels(service_name, label).observe(time.perf_counter() - started)
        return response

    async def _prepare_on_the_loop_first(
        self, prepared: tuple[Any, ...]
    ) -> tuple[RequestContext, dict[str, Any], Handler]:
        """A write's checks (authentication, validation, authorisation), on the event loop unless they
        come to wait on a peer or to spend long on policy conditions (khoa.blocking): then again, from
        the start, on a request thread. They write nothing, so running them again changes nothing."""
        try:
            with on_the_loop():
                return self._prepare(*prepared)
        except WouldBlock:
            return await self._run(self.request_threads, self._prepare, *prepared)

    async def _run(self, threads: Executor, work: Callable[..., _T], *args: Any) -> _T:
        return await run_unless_stuck(threads, self.statements, self.stuck_after_seconds, work, *args)

    def addressed(self, scope: Scope) -> Service | None:
        """The service a request is for, judged from its headers alone (as ``handle`` dispatches)."""
        headers = header_map(scope)
        target = (headers.get("x-amz-target") or [""])[0]
        if target:
            return self.services.get(target.rpartition(".")[0])
        return self._rest_service(scope, headers) or self._query_service(
            headers, scope.get("query_string", b"").decode("latin-1")
        )

    def _rest_service(self, scope: Scope, headers: dict[str, list[str]]) -> Service | None:
        """The rest-json service a request is for: by its signing name, or (unsigned, or signed for
        another service) by its path, which no awsQuery request (``/``) shares, so that even a refusal
        of its authentication answers in the protocol its client expects."""
        named = self.rest_services.get(scope_service(headers) or "")
        if named is not None:
            return named
        path = _raw_path(scope)
        if path in ("", "/"):
            return None
        for service in self.rest_services.values():
            if restjson.router(service.model).addresses(path):
                return service
        return None

    @staticmethod
    def _rest_operation(service: Service, scope: Scope) -> str:
        """The operation a rest-json request's method and path address ("" for none: refused later)."""
        try:
            operation, _ = restjson.router(service.model).match(
                scope["method"], _raw_path(scope), scope.get("query_string", b"").decode("latin-1")
            )
        except AWSError:
            return ""
        return operation

    def _query_service(self, headers: dict[str, list[str]], query_string: str) -> Service | None:
        # A form request scoped to a service Khoa does not serve as query goes to the default
        # endpoint (STS), whose signature check refuses the scope, in XML as a query client expects.
        named = scope_service(headers, query_string) or "sts"
        return self.query_services.get(named) or self.query_services.get("sts")

    def _read(self, request: tuple[Any, ...]) -> dict[str, Any]:
        """A read-only call from its checks to its result (``request``: ``_prepare``'s arguments)."""
        ctx, params, handler = self._prepare(*request)
        return handler(ctx, params)

    def _prepare(
        self,
        scope: Scope,
        headers: dict[str, list[str]],
        body: bytes,
        form: dict[str, str] | None,
        service: Service,
        call: Call,
    ) -> tuple[RequestContext, dict[str, Any], Handler]:
        """Authenticate, validate and authorise; what remains is running the handler."""
        operation = call.operation
        call.source_ip, extras = request_origin(self.network, scope, headers)
        call.extras = extras  # the request context's: what authorisation notes in it, the record reads
        try:
            call.principal, call.region = self.authenticator.authenticate(scope, headers, body, service)
        except AWSError:
            call.key_owner = self.authenticator.owner_of(access_key_of(headers, call.query_string))
            raise
        handler = service.handlers.get(operation)
        if handler is None:
            if service.protocol == "query":
                raise AWSError(
                    "InvalidAction",
                    f"Could not find operation {operation} for version "
                    f"{service.model.metadata.get('apiVersion')}",
                )
            if service.protocol == "rest-json":
                raise restjson.unknown_route()
            raise AWSError("UnknownOperationException", "")
        if service.protocol == "rest-json":
            router = restjson.router(service.model)
            query_string = scope.get("query_string", b"").decode("latin-1")
            _, labels = router.match(scope["method"], _raw_path(scope), query_string)
            raw = router.decode(operation, labels, query_string, headers, body)
        elif form is not None:
            raw = service.query_decoder.decode(operation, form)
        else:
            raw = awsjson.decode_body(body)
        params = service.model.validate(operation, raw)
        call.params = params
        ctx = RequestContext(
            principal=call.principal,
            region=call.region,
            request_id=call.request_id,
            service=service.name,
            operation=operation,
            now=self.clock.now(),
            source_ip=call.source_ip,
            user_agent=(headers.get("user-agent") or [""])[0],
            extras=extras,
        )
        service.authorizer(ctx, params)  # every operation has a rule (Service checks its table covers all)
        return ctx, params, handler
