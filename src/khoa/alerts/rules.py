"""The alert rules.

Each rule looks at the batch of new audit events a pass reads (:meth:`Rule.observe`), or at the
process's own health once per pass (:meth:`Rule.tick`), and raises :class:`~khoa.alerts.model.Alert`
objects into the pass. Alerts carry metadata only (ARNs, addresses, counts, codes, event ids): never
request parameters, response elements or error messages, which is how no secret value can reach one.
What rules look up beyond their batch (secrets, rotation roles, key use, error counts) is in
:mod:`khoa.alerts.lookups`; how the batch is read, in :mod:`khoa.alerts.reader`.

``new-secret-reader``
    A successful ``GetSecretValue`` / ``BatchGetSecretValue`` by a principal never seen reading that
    secret. Principals are IAM ARNs; an assumed-role session counts as its role. The creator of a
    secret (its ``CreateSecret`` caller) is known from the start, so the creator reading it is quiet;
    so is the role of the secret's registered rotation function. A replica shares its primary's
    readers. A secret that existed before the engine first read the trail, with nobody known for it,
    learns its first reader silently (there was nothing to compare against). The first read of every
    other (secret, principal) pair raises one alert; the pair is then remembered.
``rotation-failed``
    Every ``RotationFailed`` event; retries of the same rotation (same version token) within the
    cooldown are folded into the first alert.
``key-deletion-scheduled``
    Every successful ``ScheduleKeyDeletion``; severity ``high`` when the key was used (a successful
    cryptographic operation naming it) within the last N days, ``medium`` otherwise.
``access-denied-spike``
    Per account: AccessDenied/AccessDeniedException events in the last window (default 5 minutes)
    exceeding max(threshold, factor times the average per window over the trailing baseline hour).
``decryption-failure-burst``
    Per account: InvalidCiphertextException/DecryptionFailure events in the window exceeding the
    threshold.
``audit-sink-errors``
    The audit sink's failure count (its ``failures``) went up since the last pass.
``audit-delivery-failing``
    This process cannot deliver the trail's log files (its audit directory is full or unwritable,
    or the leader's delivery pass failed); again every cooldown while it lasts.
``storage-low``
    The file system of the audit directory or of the SQLite database has less free than a tenth of
    its size or 2 GiB, whichever is smaller (khoa.audit.health): calls still succeed, but once it is
    full every call whose record cannot commit is refused. Again every hour while it lasts.
``unexpected-network``
    An authenticated call whose ``sourceIPAddress`` is outside ``KHOA_ALERT_ALLOWED_NETWORKS``; once
    per (access key, address) per window.
``leak-check-burst``
    One principal made more than N leak checks (khoa-leaks CheckLeakedValues / ReportLeakedValues
    calls, allowed, denied or throttled alike) within the window: the check is an oracle, and a burst
    is someone testing guesses. Once per principal per window.
``secret-leaked``
    A value reported leaked (ReportLeakedValues) that still works: one alert per live resource,
    ``critical``, naming the resource, the version or key id, where it was found (the source URL
    without credentials or query) and the responses taken; again after the cooldown if reported
    again. Also every response recorded as a ``LeakResponse`` service event (a key quarantined, an
    emergency rotation, a secret that cannot be rotated), with the severity the response gave it.
"""

from __future__ import annotations

import ipaddress
import math
from collections import Counter, deque
from typing import Any
from urllib.parse import urlsplit

from khoa.access.conditions import ip_address
from khoa.alerts import config
from khoa.alerts.config import AlertSettings
from khoa.alerts.context import PassContext
from khoa.alerts.lookups import error_count, key_last_used, recent_errors, resolve_secret, rotation_role
from khoa.alerts.model import Alert, Event, iso
from khoa.audit.usage import UsageBehind

ACCESS_DENIED_CODES = ("AccessDenied", "AccessDeniedException")
DECRYPTION_FAILURE_CODES = ("InvalidCiphertextException", "DecryptionFailure")
SECRET_READS = ("GetSecretValue", "BatchGetSecretValue")
_ROTATION_STEPS = ("createSecret", "setSecret", "testSecret", "finishSecret")
_SECRET_TYPE = "AWS::SecretsManager::Secret"
_KEY_TYPE = "AWS::KMS::Key"


def _short(value: Any, limit: int = 256) -> str:
    return str(value)[:limit]


class Rule:
    name = ""

    def __init__(self, settings: AlertSettings) -> None:
        self.settings = settings

    def observe(self, ctx: PassContext, events: list[Event]) -> None:
        """Look at a batch of new audit events (in sequence order)."""

    def tick(self, ctx: PassContext) -> None:
        """Look at the process's own state, once per pass."""

    def raise_for(
        self,
        ctx: PassContext,
        e: Event,
        *,
        severity: str,
        summary: str,
        dedupe_key: str,
        suppress_seconds: float | None,
        details: dict[str, Any],
        resources: list[dict[str, str]] | None = None,
    ) -> None:
        """Raise this rule's alert about event ``e`` (in its account and Region, naming it), so that a
        rule judging events states only what its alert says."""
        ctx.raise_alert(
            Alert(
                rule=self.name,
                severity=severity,
                account_id=e.account_id,
                region=e.region,
                summary=summary,
                dedupe_key=dedupe_key,
                suppress_seconds=suppress_seconds,
                details=details,
                resources=resources or [],
                event_ids=[e.event_id],
            )
        )


def _is(e: Event, source: str, name: str, event_type: str) -> bool:
    """Whether ``e`` is ``source``'s ``name`` event of type ``event_type`` (a call, or the service's
    own event), tested in that order: the type may have to be parsed from the record."""
    return e.event_source == source and e.event_name == name and e.event_type == event_type


def _resource(resource_type: str, arn: str) -> dict[str, str]:
    return {"type": resource_type, "ARN": arn}


def _filled(details: dict[str, Any], blanks: tuple[Any, ...] = (None,)) -> dict[str, Any]:
    """``details`` without the entries that say nothing (an alert shows only what is known)."""
    return {k: v for k, v in details.items() if v not in blanks}


def _caller_details(e: Event) -> dict[str, Any]:
    details: dict[str, Any] = {
        "principal": e.principal,
        "callerArn": e.caller_arn,
        "accessKeyId": e.access_key_id or e.identity.get("accessKeyId"),
        "sourceIPAddress": _short(e.source_ip, 64),
        "eventName": e.event_name,
        "eventTime": e.time_iso,
        "eventId": e.event_id,
    }
    return {k: v for k, v in details.items() if v}


# -- new-secret-reader ----------------------------------------------------------------------------


def _secret_arns(e: Event) -> list[str]:
    return [arn for arn in e.resource_arns if arn.startswith("arn:") and ":secretsmanager:" in arn]


class NewSecretReader(Rule):
    name = config.NEW_SECRET_READER

    def observe(self, ctx: PassContext, events: list[Event]) -> None:
        # Reads already judged in this batch, by (account, Region, resources, principal): a busy
        # application reads the same secret thousands of times between two passes.
        judged: set[tuple[str, str, str, str | None]] = set()
        for e in events:
            if e.event_source != "secretsmanager.amazonaws.com" or e.error_code:
                continue
            if e.event_name == "DeleteSecret" and e.event_type == "AwsServiceEvent":
                for arn in _secret_arns(e):  # the secret is destroyed: forget its readers
                    ctx.forget(arn)
                judged.clear()
            elif e.event_name == "CreateSecret" and e.event_type == "AwsApiCall":
                self._created(ctx, e)
            elif e.event_name in SECRET_READS and e.event_type == "AwsApiCall":
                if e.resource_names and e.event_name == "GetSecretValue":
                    key = (e.account_id, e.region, e.resource_names, e.principal)
                    if key in judged:
                        continue
                    judged.add(key)
                self._read(ctx, e)

    def _created(self, ctx: PassContext, e: Event) -> None:
        who = e.principal
        if who is None:
            return
        for arn in _secret_arns(e)[:1]:
            info = resolve_secret(ctx, e.account_id, e.region, arn)
            ctx.learn(info.arn if info else arn, who, "creator")

    @staticmethod
    def _requested(e: Event) -> list[str]:
        if e.event_name == "GetSecretValue":
            found = _secret_arns(e)
            if found:
                return found[:1]
            secret_id = (e.record.get("requestParameters") or {}).get("secretId")
            return [secret_id] if isinstance(secret_id, str) else []
        ids = (e.record.get("requestParameters") or {}).get("secretIdList") or []
        return [i for i in ids if isinstance(i, str)][:20] or _secret_arns(e)

    def _read(self, ctx: PassContext, e: Event) -> None:
        who = e.principal
        if who is None:
            return
        for secret_id in self._requested(e):
            info = resolve_secret(ctx, e.account_id, e.region, secret_id)
            if info is None and not secret_id.startswith("arn:"):
                continue  # a name that no longer resolves: nothing to key the pair on
            arn = info.arn if info else secret_id
            if ctx.seen(arn, who):
                continue
            if info is not None and not ctx.known_secret(arn) and info.created_at < ctx.watch_started_at:
                ctx.learn(arn, who, "baseline")
                continue
            if info is not None and rotation_role(ctx, info.rotation_lambda_arn) == who:
                ctx.learn(arn, who, "rotation")
                continue
            ctx.learn(arn, who, "reader")
            self.raise_for(
                ctx,
                e,
                severity="high",
                summary=f"{who} read secret {arn} for the first time",
                dedupe_key=f"{arn}\n{who}",
                suppress_seconds=None,
                details={"secretArn": arn, **_caller_details(e)},
                resources=[_resource(_SECRET_TYPE, arn)],
            )


# -- rotation-failed ------------------------------------------------------------------------------


class RotationFailed(Rule):
    name = config.ROTATION_FAILED

    def observe(self, ctx: PassContext, events: list[Event]) -> None:
        for e in events:
            if not _is(e, "secretsmanager.amazonaws.com", "RotationFailed", "AwsServiceEvent"):
                continue
            data = e.record.get("additionalEventData") or {}
            arn = next(iter(_secret_arns(e)), "unknown secret")
            step = data.get("step") if data.get("step") in _ROTATION_STEPS else "unknown"
            version = _short(data.get("versionId") or "", 64)
            self.raise_for(
                ctx,
                e,
                severity="high",
                summary=f"Rotation of secret {arn} failed at step {step}",
                dedupe_key=f"{arn}\n{version}",
                suppress_seconds=self.settings.rotation_failure_cooldown_seconds,
                # the function's error text is left out: a function may put anything in it
                details={
                    "secretArn": arn,
                    "step": step,
                    "versionId": version,
                    "eventTime": e.time_iso,
                    "eventId": e.event_id,
                },
                resources=[_resource(_SECRET_TYPE, arn)],
            )


# -- key-deletion-scheduled -----------------------------------------------------------------------


class KeyDeletionScheduled(Rule):
    name = config.KEY_DELETION_SCHEDULED

    def observe(self, ctx: PassContext, events: list[Event]) -> None:
        for e in events:
            if not (
                _is(e, "kms.amazonaws.com", "ScheduleKeyDeletion", "AwsApiCall") and e.error_code is None
            ):
                continue
            response = e.record.get("responseElements") or {}
            key_arn = next((a for a in e.resource_arns if ":key/" in a), None) or _short(
                response.get("keyId") or "unknown key"
            )
            days = self.settings.key_recent_use_days
            try:
                last = key_last_used(ctx, key_arn)
                last_used = iso(last) if last is not None else None
                recently = last is not None and last >= e.event_time - days * 86400.0
            except UsageBehind:  # not counted yet: judged as used, the safer side
                last, last_used, recently = None, "unknown (still being counted)", True
            severity = "high" if recently else "medium"
            summary = f"KMS key {key_arn} scheduled for deletion"
            if recently and last is None:
                summary += "; whether it was used lately is not known yet"
            elif recently:
                summary += f"; it was last used {last_used}, within the last {days:g} days"
            details: dict[str, Any] = {
                "keyArn": key_arn,
                "deletionDate": _short(response.get("deletionDate") or "", 64) or None,
                "pendingWindowInDays": response.get("pendingWindowInDays"),
                "usedRecently": recently,
                "recentUseDays": days,
                "lastUsed": last_used,
                **_caller_details(e),
            }
            self.raise_for(
                ctx,
                e,
                severity=severity,
                summary=summary,
                dedupe_key=e.event_id,
                suppress_seconds=None,
                details=_filled(details),
                resources=[_resource(_KEY_TYPE, key_arn)],
            )


# -- windowed error rates -------------------------------------------------------------------------


def _principal_label(e: Event) -> str:
    who = e.caller_arn or e.principal
    if who:
        return who
    key = e.access_key_id or e.identity.get("accessKeyId")
    return f"unknown ({key})" if key else "unknown"


class ErrorBurst(Rule):
    """Counts events with some error codes in a trailing window, per account."""

    codes: tuple[str, ...] = ()
    severity = "high"
    what = ""

    def window(self) -> float:
        raise NotImplementedError

    def limit(self, ctx: PassContext, account_id: str, at: float) -> tuple[float, dict[str, Any]]:
        """The count above which the rule fires, and what it was computed from."""
        raise NotImplementedError

    def count(self, ctx: PassContext, account_id: str, start: float, end: float) -> int:
        return error_count(ctx, account_id, self.codes, start, end)

    def observe(self, ctx: PassContext, events: list[Event]) -> None:
        # Evaluated once per account and batch, at its newest matching event.
        newest: dict[str, Event] = {}
        for e in events:
            if e.error_code in self.codes:
                latest = newest.get(e.account_id)
                if latest is None or e.event_time >= latest.event_time:
                    newest[e.account_id] = e
        for account_id, e in newest.items():
            self.evaluate(ctx, account_id, e.region, e.event_time)

    def evaluate(self, ctx: PassContext, account_id: str, region: str, at: float) -> None:
        window = self.window()
        count = self.count(ctx, account_id, at - window, at)
        limit, basis = self.limit(ctx, account_id, at)
        if count <= limit:
            return
        principals, operations = self.breakdown(ctx, account_id, at - window, at)
        ctx.raise_alert(
            Alert(
                rule=self.name,
                severity=self.severity,
                account_id=account_id,
                region=region,
                summary=f"{count} {self.what} in account {account_id} in the last {window:g} seconds "
                f"(limit {limit:g})",
                dedupe_key=account_id,
                suppress_seconds=window,
                details={
                    "count": count,
                    "windowSeconds": window,
                    "limit": limit,
                    **basis,
                    "errorCodes": list(self.codes),
                    "topPrincipals": principals,
                    "topOperations": operations,
                },
            )
        )

    def breakdown(
        self, ctx: PassContext, account_id: str, start: float, end: float
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        events = recent_errors(ctx, account_id, self.codes, start, end)
        principals = Counter(_principal_label(e) for e in events)
        operations = Counter(f"{e.service}:{e.event_name}" for e in events)
        return (
            [{"principal": p, "count": n} for p, n in principals.most_common(5)],
            [{"operation": o, "count": n} for o, n in operations.most_common(5)],
        )


class AccessDeniedSpike(ErrorBurst):
    name = config.ACCESS_DENIED_SPIKE
    codes = ACCESS_DENIED_CODES
    what = "access denied errors"

    def window(self) -> float:
        return self.settings.access_denied_window_seconds

    def limit(self, ctx: PassContext, account_id: str, at: float) -> tuple[float, dict[str, Any]]:
        window = self.window()
        baseline_seconds = self.settings.access_denied_baseline_seconds
        baseline = self.count(ctx, account_id, at - window - baseline_seconds, at - window)
        average = baseline * window / baseline_seconds if baseline_seconds > 0 else 0.0
        limit = max(
            float(self.settings.access_denied_threshold), self.settings.access_denied_factor * average
        )
        return limit, {
            "threshold": self.settings.access_denied_threshold,
            "factor": self.settings.access_denied_factor,
            "baselineSeconds": baseline_seconds,
            "baselineAveragePerWindow": round(average, 3),
        }


class DecryptionFailureBurst(ErrorBurst):
    name = config.DECRYPTION_FAILURE_BURST
    codes = DECRYPTION_FAILURE_CODES
    what = "decryption failures"

    def window(self) -> float:
        return self.settings.decrypt_failure_window_seconds

    def limit(self, ctx: PassContext, account_id: str, at: float) -> tuple[float, dict[str, Any]]:
        return float(self.settings.decrypt_failure_threshold), {
            "threshold": self.settings.decrypt_failure_threshold
        }


# -- audit-sink-errors ----------------------------------------------------------------------------


class AuditSinkErrors(Rule):
    """Process-local: the failures this process's recorder counted since the previous pass."""

    name = config.AUDIT_SINK_ERRORS

    def __init__(self, settings: AlertSettings) -> None:
        super().__init__(settings)
        self.seen_failures = 0
        self.last_raised = -math.inf

    def tick(self, ctx: PassContext) -> None:
        failures = ctx.audit_failures
        new = failures - self.seen_failures
        self.seen_failures = failures
        if new <= 0:
            return
        if ctx.now - self.last_raised < self.settings.audit_sink_cooldown_seconds:
            return
        self.last_raised = ctx.now
        ctx.raise_alert(
            Alert(
                rule=self.name,
                severity="critical",
                account_id=ctx.default_account,
                region=ctx.default_region,
                summary=f"The audit sink failed to record events {new} time(s) since the last check; "
                "calls are being refused",
                dedupe_key="audit-sink",
                suppress_seconds=0.0,  # the rule's own cooldown applies (the database may be down)
                details={"newFailures": new, "totalFailures": failures},
            )
        )


# -- audit-delivery-failing, storage-low ----------------------------------------------------------


class StandingCondition(Rule):
    """Process-local, like audit-sink-errors: a condition this process sees (its reason, while it
    lasts), alerted at once and again every ``repeat_seconds`` while it lasts; once it ends, the next
    one alerts at once. The rule's own interval replaces the store's suppression (the disk may be
    what is failing, and the alert's store with it)."""

    severity = "critical"
    summary = ""
    dedupe_key = ""

    def __init__(self, settings: AlertSettings) -> None:
        super().__init__(settings)
        self.last_raised = -math.inf

    def reason(self, ctx: PassContext) -> str | None:
        raise NotImplementedError

    def repeat_seconds(self) -> float:
        raise NotImplementedError

    def tick(self, ctx: PassContext) -> None:
        reason = self.reason(ctx)
        if reason is None:
            self.last_raised = -math.inf
            return
        if ctx.now - self.last_raised < self.repeat_seconds():
            return
        self.last_raised = ctx.now
        ctx.raise_alert(
            Alert(
                rule=self.name,
                severity=self.severity,
                account_id=ctx.default_account,
                region=ctx.default_region,
                summary=f"{self.summary}: {_short(reason)}",
                dedupe_key=self.dedupe_key,
                suppress_seconds=0.0,
                details={"reason": _short(reason)},
            )
        )


class AuditDeliveryFailing(StandingCondition):
    """The trail's health as this process's delivery saw it. Events keep being recorded in the
    database meanwhile (no call is refused), but the log files - the trail that outlives the
    retention - are not written."""

    name = config.AUDIT_DELIVERY_FAILING
    summary = "Audit log files cannot be delivered"
    dedupe_key = "audit-delivery"

    def reason(self, ctx: PassContext) -> str | None:
        return ctx.audit_delivery_problem

    def repeat_seconds(self) -> float:
        return self.settings.audit_delivery_cooldown_seconds


STORAGE_LOW_REPEAT_SECONDS = 3600.0


class StorageLow(StandingCondition):
    """What this process's probe read of the disks: raised before a disk is full, while an operator
    can still act without refused calls."""

    name = config.STORAGE_LOW
    severity = "high"
    summary = "Disk space is running out"
    dedupe_key = "storage-low"

    def reason(self, ctx: PassContext) -> str | None:
        return ctx.storage_low

    def repeat_seconds(self) -> float:
        return STORAGE_LOW_REPEAT_SECONDS


# -- unexpected-network ---------------------------------------------------------------------------


class UnexpectedNetwork(Rule):
    name = config.UNEXPECTED_NETWORK

    def __init__(self, settings: AlertSettings) -> None:
        super().__init__(settings)
        self.networks = settings.networks()

    def allowed(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(address.version == n.version and address in n for n in self.networks)

    def observe(self, ctx: PassContext, events: list[Event]) -> None:
        for e in events:
            if not e.authenticated:
                continue  # failed authentication: the credentials were not used
            address = ip_address(e.source_ip)
            if address is None or self.allowed(address):
                continue
            key = e.access_key_id or e.identity.get("accessKeyId") or e.principal or "unknown"
            who = e.caller_arn or e.principal or "unknown principal"
            self.raise_for(
                ctx,
                e,
                severity="high",
                summary=f"Credentials {key} ({who}) used from {address}, outside the allowed networks",
                dedupe_key=f"{key}\n{address}",
                suppress_seconds=self.settings.network_window_seconds,
                details={
                    "accessKeyId": key,
                    "address": str(address),
                    "allowedNetworks": [str(n) for n in self.networks],
                    **_caller_details(e),
                },
            )


# -- leak detection -------------------------------------------------------------------------------

_LEAKS_SOURCE = "khoa-leaks.amazonaws.com"
LEAK_CHECKS = ("CheckLeakedValues", "ReportLeakedValues")
_LEAK_RESOURCE_TYPES = {
    "secret": _SECRET_TYPE,
    "parameter": "AWS::SSM::Parameter",
    "access-key": "AWS::IAM::AccessKey",
    "sts-credential": "AWS::IAM::Role",
}


def _leak_resource(kind: str, arn: str) -> dict[str, str]:
    """A leaked value's resource, typed by its fingerprint's resource type."""
    return _resource(_LEAK_RESOURCE_TYPES.get(kind, "AWS::Khoa::Resource"), arn)


class LeakCheckBurst(Rule):
    """Counts each principal's leak checks in a trailing window (kept by the rule between passes:
    the engine runs on the leader only; a new leader starts counting afresh)."""

    name = config.LEAK_CHECK_BURST

    def __init__(self, settings: AlertSettings) -> None:
        super().__init__(settings)
        self.recent: dict[tuple[str, str], deque[tuple[float, bool]]] = {}

    def observe(self, ctx: PassContext, events: list[Event]) -> None:
        window = self.settings.leak_check_window_seconds
        limit = self.settings.leak_check_threshold
        over: dict[tuple[str, str], Event] = {}
        for e in events:
            if e.event_source != _LEAKS_SOURCE or e.event_name not in LEAK_CHECKS:
                continue
            who = e.principal
            if e.event_type != "AwsApiCall" or who is None:
                continue  # failed authentication: nobody to attribute the check to
            times = self.recent.setdefault((e.account_id, who), deque())
            times.append((e.event_time, e.error_code == "ThrottlingException"))
            while times and times[0][0] <= e.event_time - window:
                times.popleft()
            if len(times) > limit:
                over[(e.account_id, who)] = e
        for (account_id, who), e in over.items():
            times = self.recent[(account_id, who)]
            throttled = sum(1 for _, refused in times if refused)
            self.raise_for(
                ctx,
                e,  # the event that went over the limit: in ``account_id``
                severity="high",
                summary=f"{who} made {len(times)} leak checks in {window:g} seconds (limit {limit})",
                dedupe_key=f"{account_id}\n{who}",
                suppress_seconds=window,
                details={
                    "count": len(times),
                    "throttled": throttled,
                    "windowSeconds": window,
                    "limit": limit,
                    **_caller_details(e),
                },
            )
        newest = max((e.event_time for e in events), default=None)
        if newest is not None:  # forget principals quiet for a whole window
            for key in [k for k, t in self.recent.items() if not t or t[-1][0] <= newest - window]:
                del self.recent[key]


def _source(url: Any) -> str:
    """Where a leak was found, without what a URL may carry of credentials (user info, query)."""
    if not isinstance(url, str):
        return ""
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return _short(f"{parts.scheme}://{host}{port}{parts.path}" if parts.scheme else parts.path, 512)


class SecretLeaked(Rule):
    name = config.SECRET_LEAKED

    def observe(self, ctx: PassContext, events: list[Event]) -> None:
        for e in events:
            if e.event_source != _LEAKS_SOURCE or e.error_code:
                continue
            if e.event_name == "ReportLeakedValues" and e.event_type == "AwsApiCall":
                self._reported(ctx, e)
            elif e.event_name == "LeakResponse" and e.event_type == "AwsServiceEvent":
                self._response(ctx, e)

    def _reported(self, ctx: PassContext, e: Event) -> None:
        response = e.record.get("responseElements") or {}
        source = _source((e.record.get("requestParameters") or {}).get("sourceUrl"))
        live: dict[str, dict[str, Any]] = {}
        for match in response.get("matches") or []:
            if isinstance(match, dict) and match.get("status") == "live" and match.get("resourceArn"):
                live.setdefault(str(match["resourceArn"]), match)
        for arn, match in live.items():
            kind = str(match.get("resourceType") or "")
            actions = [
                _short(r.get("action"), 64)
                for r in response.get("responses") or []
                if isinstance(r, dict) and r.get("resourceArn") == arn
            ]
            which = match.get("accessKeyId") or match.get("versionId") or ""
            details = {
                "resourceArn": arn,
                "resourceType": kind,
                "accessKeyId": match.get("accessKeyId"),
                "versionId": match.get("versionId"),
                "field": match.get("field"),
                "sourceUrl": source or None,
                "actions": actions,
                **_caller_details(e),
            }
            self.raise_for(
                ctx,
                e,
                severity="critical",
                summary=f"A live {kind} value of {arn} was reported leaked"
                + (f" at {source}" if source else ""),
                dedupe_key=f"{arn}\n{which}",
                suppress_seconds=self.settings.secret_leaked_cooldown_seconds,
                details=_filled(details, (None, "")),
                resources=[_leak_resource(kind, arn)],
            )

    def _response(self, ctx: PassContext, e: Event) -> None:
        data = e.record.get("additionalEventData") or {}
        arn = _short(data.get("resourceArn") or next(iter(e.resource_arns), "unknown resource"), 2048)
        action = _short(data.get("action") or "response", 64)
        severity = data.get("severity") if data.get("severity") in ("high", "critical") else "high"
        kind = str(data.get("resourceType") or "")
        details = {
            "resourceArn": arn,
            "resourceType": kind or None,
            "action": action,
            "detail": _short(data.get("detail") or "", 512) or None,
            "accessKeyId": data.get("accessKeyId"),
            "versionId": data.get("versionId"),
            "eventTime": e.time_iso,
            "eventId": e.event_id,
        }
        self.raise_for(
            ctx,
            e,
            severity=str(severity),
            summary=f"Leak response for {arn}: {action}",
            dedupe_key=e.event_id,
            suppress_seconds=None,
            details=_filled(details),
            resources=[_leak_resource(kind, arn)],
        )


# -- xks-proxy-unavailable ------------------------------------------------------------------------

XKS_PROXY_UNAVAILABLE = "xks-proxy-unavailable"
XKS_PROXY_ERROR_CODES = (
    "XksProxyUriUnreachableException",
    "XksProxyInvalidResponseException",
    "XksProxyIncorrectAuthenticationCredentialException",
    "XksProxyInvalidConfigurationException",
)
_XKS_STATE_CODES = ("KMSInvalidStateException", "CustomKeyStoreInvalidStateException")
XKS_PROXY_COOLDOWN_SECONDS = 300.0


class XksProxyUnavailable(Rule):
    """A KMS request failed because an external key store's XKS proxy could not serve it (unreachable,
    timed out, refused Khoa's credential, answered nonsense): its XksProxy* error, or a key-state error
    whose message names the proxy (the message is read to classify, never copied into the alert).
    Once per account and region per cooldown."""

    name = XKS_PROXY_UNAVAILABLE

    def observe(self, ctx: PassContext, events: list[Event]) -> None:
        for e in events:
            if e.event_source != "kms.amazonaws.com" or not e.error_code:
                continue
            if e.error_code not in XKS_PROXY_ERROR_CODES and not (
                e.error_code in _XKS_STATE_CODES
                and "external key store proxy" in str(e.record.get("errorMessage") or "")
            ):
                continue
            key_arns = [a for a in e.resource_arns if ":key/" in a]
            self.raise_for(
                ctx,
                e,
                severity="high",
                summary=f"An XKS proxy failed a KMS {e.event_name} request ({e.error_code})",
                dedupe_key=f"{e.account_id}\n{e.region}",
                suppress_seconds=XKS_PROXY_COOLDOWN_SECONDS,
                details={"errorCode": e.error_code, **_caller_details(e)},
                resources=[_resource(_KEY_TYPE, arn) for arn in key_arns],
            )


def build_rules(settings: AlertSettings) -> list[Rule]:
    rules: list[Rule] = [
        NewSecretReader(settings),
        RotationFailed(settings),
        KeyDeletionScheduled(settings),
        AccessDeniedSpike(settings),
        DecryptionFailureBurst(settings),
        AuditSinkErrors(settings),
        AuditDeliveryFailing(settings),
        StorageLow(settings),
        UnexpectedNetwork(settings),
        LeakCheckBurst(settings),
        SecretLeaked(settings),
        XksProxyUnavailable(settings),
    ]
    return [rule for rule in rules if settings.rule_enabled(rule.name)]
