"""Recording API calls in the audit trail, fail closed.

A write is recorded before its handler runs (so nothing changes unrecorded) and completed with its
outcome afterwards; a read or a refusal is recorded once, with its outcome. When the trail cannot take
a record the call is refused with AuditUnavailable's 503, except for the outcome of a write that
already ran: its first record is durable, so the caller gets the truthful answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from khoa.access.authorize import RESOURCE_OWNERS
from khoa.audit.events import AuditEvent
from khoa.audit.events import build as build_event
from khoa.audit.outcomes import UNCONFIRMED_MESSAGE, UNKNOWN_CODE
from khoa.audit.recorder import AuditRecorder, AuditUnavailable, unavailable_error
from khoa.auth.principal import Principal
from khoa.clock import Clock
from khoa.ids import IdSource
from khoa.logs import LogLimiter
from khoa.observe.metrics import Metrics
from khoa.protocol.errors import AWSError, internal_failure
from khoa.server.asgi import Response
from khoa.server.authentication import scope_parts
from khoa.server.encoding import error_response
from khoa.services.base import Service
from khoa.storage.database import is_unavailable
from khoa.storage.database import unavailable_error as database_unavailable

log = logging.getLogger("khoa")


@dataclass
class Call:
    """What is known about one API call as it moves through the pipeline (for its audit event)."""

    request_id: str
    service: Service | None = None
    operation: str = ""
    headers: dict[str, list[str]] = field(default_factory=dict)
    query_string: bytes = b""  # (a presigned URL carries its signature here)
    principal: Principal | None = None
    region: str = ""
    source_ip: str = ""
    params: dict[str, Any] | None = None
    pre_event: AuditEvent | None = None
    recorded: bool = False
    # The request context's extras (its authorisation notes there, under RESOURCE_OWNERS, the
    # accounts other than the caller's whose resources the call was authorised on).
    extras: dict[str, Any] = field(default_factory=dict)
    # The account whose access key a call refused before it was verified claims (None: no such key):
    # its trail records the refusal, never another tenant's.
    key_owner: str | None = None


def access_key_of(headers: dict[str, list[str]], query_string: bytes = b"") -> str:
    """The access key id a request claims, in its Authorization header or its presigned URL's query
    (for the record of a call refused before it was verified). Anyone can claim anything there, so
    only a value of AWS's access key id alphabet and length (16 to 128 word characters, as IAM's
    AccessKeyId) is kept: anything else (a control character, an escape sequence that would rewrite an
    operator's terminal in ``khoa audit tail``) is recorded as no key at all."""
    claimed = (scope_parts(headers, query_string.decode("latin-1")) or [""])[0]
    # IAM's AccessKeyId pattern, [\w]+ of 16 to 128 characters, in ASCII (A-Z, a-z, 0-9 and _)
    word = claimed.isascii() and claimed.replace("_", "a").isalnum()
    return claimed if word and 16 <= len(claimed) <= 128 else ""


class CallRecorder:
    """Turns calls into audit events and hands them to the node's :class:`AuditRecorder`."""

    def __init__(
        self,
        audit: AuditRecorder,
        ids: IdSource,
        clock: Clock,
        metrics: Metrics,
        *,
        default_account: str,
        default_region: str,
    ) -> None:
        self.audit = audit
        self.ids = ids
        self.clock = clock
        self.metrics = metrics
        self.default_account = default_account
        self.default_region = default_region
        self._background: set[asyncio.Task[None]] = set()  # refusals recorded without waiting

    async def record_before(self, call: Call) -> None:
        """Record a write before it runs (its outcome completes this record later)."""
        call.pre_event = self.event(call, None, None)
        self.audit.mark_pending(call.pre_event)  # told from a success if this process dies first
        await self._record(call.pre_event)

    async def record_outcome(self, call: Call, result: dict[str, Any] | None, error: AWSError | None) -> None:
        """Record the call with its outcome. A call on another account's resources (a key, a secret,
        a role) is recorded in each owner's trail too, as CloudTrail does, the records joined by one
        sharedEventID: an owner sees who used what it owns."""
        owners = call.extras.get(RESOURCE_OWNERS)  # (a set, on the rare call that has any)
        shared = self.ids.request_id() if owners else None
        copies = (
            [self.event(call, result, error, recipient=owner, shared=shared) for owner in sorted(owners)]
            if owners
            else ()
        )
        pre_event = call.pre_event
        if pre_event is None:
            event = self.event(call, result, error, shared=shared)
            call.recorded = True
            if copies:  # (gather costs a task per record: not on the common path)
                await asyncio.gather(*(self._record(e) for e in (event, *copies)))
                return
            try:  # (what _record does, without a coroutine of its own: every read comes here)
                await self.audit.record(event)
            except AuditUnavailable:
                self.metrics.audit_failures.inc()
                raise
            return
        # the outcome completes the record made before the call ran: under its event ID
        event = self.event(call, result, error, pre_event.event_id, shared=shared)
        call.recorded = True
        try:
            if copies:
                await asyncio.gather(self.audit.finalize(event), *(self._record(e) for e in copies))
            else:
                await self.audit.finalize(event)
        except AuditUnavailable:
            # The call already ran and its record (made before it ran) is durable: answer truthfully.
            self.metrics.audit_failures.inc()
            log.error("could not record the outcome of request %s", call.request_id)

    async def refuse(
        self, call: Call, error: AWSError, *, wait: bool = True, recorded_as: AWSError | None = None
    ) -> Response:
        """Answer a refused request, after recording it (unless its outcome is already recorded).

        ``wait=False`` (the database did not answer the call): answer at once and let the record
        commit when it can. Waiting would hold the caller for the database bound a second time, to
        record a refusal of a call that changed nothing; a write's record made before it ran is
        already durable either way. ``recorded_as``: the outcome the trail records, when it is not
        the answer (a write whose outcome the database never confirmed)."""
        recorded = recorded_as or error
        if not call.recorded:
            if not wait:
                task = asyncio.get_running_loop().create_task(self._record_refusal(call, recorded))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
                return error_response(call.service, error, call.request_id)
            try:
                await self.record_outcome(call, None, recorded)
            except AuditUnavailable:
                return error_response(call.service, unavailable_error(), call.request_id)
        return error_response(call.service, error, call.request_id)

    async def refuse_failure(self, call: Call, exc: Exception, logs: LogLimiter, what: str) -> Response:
        """Answer a call that failed unexpectedly (``what`` names it in the log): 503 when the
        database is down, silent or timed out (a bounded wait; SDKs retry it, and its record is not
        waited for), else 500 with the traceback logged. Either is logged once per interval, not
        once per request: during an outage every call fails the same way.

        A write that had started (its first record made) when the database stopped answering may have
        committed all the same (a COMMIT that arrived, whose reply was lost): its record says the
        outcome is unknown (``Khoa.OutcomeUnknown``, as for a call cut off by a crash), never that it
        failed. A read changed nothing either way."""
        if is_unavailable(exc):
            logs.warning(
                "database unavailable",
                "request %s (%s): database unavailable (%s)",
                call.request_id,
                what,
                type(exc).__name__,
            )
            unconfirmed = (
                AWSError(UNKNOWN_CODE, UNCONFIRMED_MESSAGE, 503) if call.pre_event is not None else None
            )
            return await self.refuse(call, database_unavailable(), wait=False, recorded_as=unconfirmed)
        logs.exception(f"{what}:{type(exc).__name__}", "request %s (%s) failed", call.request_id, what)
        return await self.refuse(call, internal_failure())

    async def _record_refusal(self, call: Call, error: AWSError) -> None:
        with contextlib.suppress(AuditUnavailable):  # counted in audit_failures by _record
            await self.record_outcome(call, None, error)

    async def _record(self, event: AuditEvent) -> None:
        try:
            await self.audit.record(event)
        except AuditUnavailable:
            self.metrics.audit_failures.inc()
            raise

    def event(
        self,
        call: Call,
        result: dict[str, Any] | None,
        error: AWSError | None,
        event_id: str | None = None,
        *,
        recipient: str | None = None,
        shared: str | None = None,
    ) -> AuditEvent:
        """The call's audit event (``event_id``: a new one when not given) for ``recipient``'s trail
        (the caller's account when not given), with CloudTrail's sharedEventID ``shared``."""
        principal = call.principal
        if principal is not None:
            access_key_id = principal.access_key_id
            recipient = recipient or principal.account_id
        else:
            access_key_id = access_key_of(call.headers, call.query_string)
            # An unknown key belongs to no tenant: the installation's own account keeps its refusal.
            recipient = recipient or call.key_owner or self.default_account
        service = call.service
        user_agent = call.headers.get("user-agent")
        return build_event(
            model=service.model if service is not None else None,
            service=service.name if service is not None else "unknown",
            operation=call.operation,
            region=call.region or self.default_region,
            request_id=call.request_id,
            principal=principal,
            access_key_id=access_key_id,
            source_ip=call.source_ip,
            user_agent=user_agent[0] if user_agent else "",
            params=call.params,
            result=result,
            error_code=error.code if error is not None else None,
            error_message=error.message if error is not None else None,
            now=self.clock.now(),
            recipient_account=recipient,
            event_id=self.ids.event_id() if event_id is None else event_id,
            shared_event_id=shared,
        )
