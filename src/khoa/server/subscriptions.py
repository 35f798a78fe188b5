"""``GET /_khoa/events``: authenticating, authorising and recording a change-stream subscription,
then handing it to :mod:`khoa.changes.stream`.

The subscription is authorised as Secrets Manager's DescribeSecret on the secret, by the function the
composition root passes in (``authorize``, Secrets Manager's own check), so this module knows nothing
of how secrets are stored or authorised.

A worker process keeps at most ``KHOA_STREAM_MAX_SUBSCRIPTIONS`` streams open, and at most
``KHOA_STREAM_MAX_SUBSCRIPTIONS_PER_PRINCIPAL`` for one principal (a user, an account's root, or a role
with all its sessions); one more is refused ``429 ThrottlingException`` (recorded like any refusal).
Every stream of the process is fed by one poller (:class:`khoa.changes.stream.ChangeHub`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from khoa.audit.recorder import AuditUnavailable, unavailable_error
from khoa.auth.principal import Principal
from khoa.blocking import StatementClock, run_unless_stuck
from khoa.changes import stream as change_stream
from khoa.ids import IdSource
from khoa.logs import LogLimiter
from khoa.network import NetworkMap
from khoa.protocol.context import RequestContext
from khoa.protocol.errors import AWSError, validation_error
from khoa.server.asgi import Receive, Response, Scope, Send, header_map
from khoa.server.authentication import Authenticator
from khoa.server.encoding import error_response
from khoa.server.pipeline import request_origin
from khoa.server.recording import Call, CallRecorder
from khoa.services.base import Service
from khoa.settings import Settings
from khoa.storage.database import DatabaseBounds

log = logging.getLogger("khoa")

SubscriptionCheck = Callable[[RequestContext, str], tuple[str, str]]
"""Resolves the subscribed secret and authorises DescribeSecret on it for ``ctx``'s principal;
returns (secret id, ARN) or raises the AWSError the API would."""


@dataclass(frozen=True)
class SubscriptionLimits:
    """How many change streams one worker process keeps open: in all, and for one principal."""

    per_worker: int
    per_principal: int

    @classmethod
    def from_settings(cls, settings: Settings) -> SubscriptionLimits:
        return cls(settings.stream_max_subscriptions, settings.stream_max_subscriptions_per_principal)


def _owner(principal: Principal) -> tuple[str, str]:
    """Whose streams count together: the IAM identity behind the caller (every session of a role is
    the role's, so minting sessions does not buy more streams)."""
    return principal.account_id, principal.principal_id or principal.arn


def _too_many(message: str) -> AWSError:
    return AWSError("ThrottlingException", message, 429)


_MAX_EVENT_ID = 2**63 - 1  # event ids are the database's 64-bit sequence numbers


def _event_id(value: str) -> int:
    """A ``Last-Event-ID``: the id of an event (``id:`` of an event sent), a decimal number of at most
    19 ASCII digits. Anything else is refused (``ValidationException``, 400) rather than read as
    something the client did not send: ``str.isdigit`` also takes "²" (which ``int`` refuses) and
    "٣" (which it reads as 3), and ``int`` takes "1_0" and " 1"."""
    if not (value.isascii() and value.isdigit() and len(value) <= 19 and int(value) <= _MAX_EVENT_ID):
        raise validation_error(
            "Last-Event-ID must be the id of an event this stream sent: a decimal number below 2^63."
        )
    return int(value)


class ChangeStreamEndpoint:
    def __init__(
        self,
        *,
        service: Service,
        authorize: SubscriptionCheck,
        authenticator: Authenticator,
        network: NetworkMap,
        recorder: CallRecorder,
        ids: IdSource,
        engine: Engine,
        now: Callable[[], datetime],
        recheck_seconds: float,
        revocation_epoch: Callable[[], int],
        limits: SubscriptionLimits | None = None,
        statements: StatementClock | None = None,
        stuck_after_seconds: float = DatabaseBounds().stuck_after_seconds,
    ) -> None:
        """``service`` is Secrets Manager's (its model and name shape the records and errors);
        ``network`` says where a request comes from, as for the API's calls; ``limits`` default to
        the settings' defaults. A subscription whose checks' thread has spent ``stuck_after_seconds``
        in one database statement (``statements`` times them) is answered 503 without waiting."""
        self.service = service
        self.network = network
        self.authorize = authorize
        self.authenticator = authenticator
        self.recorder = recorder
        self.ids = ids
        self.engine = engine
        self.now = now
        self.recheck_seconds = recheck_seconds
        self.revocation_epoch = revocation_epoch
        self.limits = limits or SubscriptionLimits.from_settings(Settings())
        self.statements = statements if statements is not None else StatementClock()
        self.stuck_after_seconds = stuck_after_seconds
        self.hub = change_stream.ChangeHub(engine, revocation_epoch=revocation_epoch)
        self._open = 0
        self._open_by_owner: dict[tuple[str, str], int] = {}
        # During an outage every subscription fails the same way: one line per interval.
        self._logs = LogLimiter(log)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        call = Call(request_id=self.ids.request_id(), operation="SubscribeToSecretChanges")
        headers = header_map(scope)
        call.headers = headers
        call.service = self.service
        secret_ref = change_stream.requested_secret(scope)
        call.params = {"SecretId": secret_ref}
        response: Response
        try:
            # Off the event loop: the credential, the secret and the stream's start may be read from
            # the database, and a silent one would hold every request of the worker meanwhile.
            secret_id, arn, start, extras = await run_unless_stuck(
                None,  # the loop's default executor
                self.statements,
                self.stuck_after_seconds,
                self._subscribe,
                scope,
                headers,
                call,
                secret_ref,
            )
            owner = self._take_slot(call)
            try:
                await self.recorder.record_outcome(call, {"ARN": arn}, None)
            except BaseException:
                self._release_slot(owner)
                raise
        except AuditUnavailable:
            response = error_response(self.service, unavailable_error(), call.request_id)
        except AWSError as error:
            response = await self.recorder.refuse(call, error)
        except Exception as exc:  # noqa: BLE001 - 503 (the database) or 500, as the pipeline answers
            response = await self.recorder.refuse_failure(call, exc, self._logs, "change stream")
        else:
            tokens = headers.get("x-amz-security-token")
            token = tokens[0] if tokens else None
            # Everything the re-check reads: streams alike in all of it share their re-checks.
            check_key: Hashable = (
                call.principal,
                token,
                secret_ref,
                call.region,
                call.source_ip,
                json.dumps(extras, sort_keys=True, default=str),
            )
            try:
                await self.hub.serve(
                    secret_id,
                    start,
                    receive,
                    send,
                    still_allowed=lambda: self._still_holds(call, secret_ref, token, extras),
                    recheck_seconds=self.recheck_seconds,
                    check_key=check_key,
                )
            finally:
                self._release_slot(owner)
            return
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [(b"content-type", response.content_type)],
            }
        )
        await send({"type": "http.response.body", "body": response.body})

    def _take_slot(self, call: Call) -> tuple[str, str]:
        """Count an authorised subscription against the caps (on the event loop: no other
        subscription is counted in between), or refuse it."""
        assert call.principal is not None  # authenticated
        owner = _owner(call.principal)
        if self._open >= self.limits.per_worker:
            self._logs.warning(
                "cap:worker",
                "change stream %s refused: %d streams open in this worker (KHOA_STREAM_MAX_SUBSCRIPTIONS)",
                call.request_id,
                self._open,
            )
            raise _too_many(
                f"This server process has {self.limits.per_worker} change streams open, as many as it "
                "keeps; try again later."
            )
        held = self._open_by_owner.get(owner, 0)
        if held >= self.limits.per_principal:
            self._logs.warning(
                f"cap:{owner}",
                "change stream %s refused: %s has %d streams open in this worker"
                " (KHOA_STREAM_MAX_SUBSCRIPTIONS_PER_PRINCIPAL)",
                call.request_id,
                call.principal.arn,
                held,
            )
            raise _too_many(
                f"Too many open change streams for this principal: at most {self.limits.per_principal} "
                "per server process; close one before opening another."
            )
        self._open += 1
        self._open_by_owner[owner] = held + 1
        return owner

    def _release_slot(self, owner: tuple[str, str]) -> None:
        self._open -= 1
        left = self._open_by_owner.get(owner, 0) - 1
        if left > 0:
            self._open_by_owner[owner] = left
        else:
            self._open_by_owner.pop(owner, None)

    def _subscribe(
        self, scope: Scope, headers: dict[str, list[str]], call: Call, secret_ref: str
    ) -> tuple[str, str, int, dict[str, Any]]:
        """Authenticate and authorise a subscription; (secret id, ARN, the sequence to start after:
        the client's Last-Event-ID, or the newest event, and the request's network facts, which its
        re-checks use again)."""
        call.source_ip, extras = request_origin(self.network, scope, headers)
        call.principal, call.region = self.authenticator.authenticate(scope, headers, b"", self.service)
        secret_id, arn = self._check(call, call.principal, secret_ref, extras)
        last = (headers.get("last-event-id") or [""])[0]
        start = _event_id(last) if last else change_stream.latest_seq(self.engine)
        return secret_id, arn, start, extras

    def _check(
        self, call: Call, principal: Principal, secret_ref: str, extras: dict[str, Any]
    ) -> tuple[str, str]:
        ctx = RequestContext(
            principal=principal,
            region=call.region,
            request_id=call.request_id,
            service=self.service.name,
            operation="DescribeSecret",
            now=self.now(),
            source_ip=call.source_ip,
            extras=dict(extras),  # a fresh copy: authorisers may note what they decided in it
        )
        return self.authorize(ctx, secret_ref)

    def _still_holds(self, call: Call, secret_ref: str, token: str | None, extras: dict[str, Any]) -> bool:
        """Whether an open subscription may go on: its credential still present, active and (for a
        session) unexpired, and DescribeSecret on the secret still allowed, judged as at subscription.
        Anything unexpected ends the stream (fail closed)."""
        self.authenticator.check_revocations()
        try:
            principal = call.principal and self.authenticator.still_valid(call.principal, token)
            if principal is None:
                return False
            self._check(call, principal, secret_ref, extras)
        except AWSError as error:
            log.info("change stream %s closed: %s", call.request_id, error.code)
            return False
        except Exception:
            log.exception("change stream %s closed: re-check failed", call.request_id)
            return False
        return True
