"""The alert engine: a leader job that runs the rules over new audit events and delivers what they raise.

Reading the trail
    A persisted cursor (``alert_state``) names the last ``audit_events`` sequence number read. Two
    kinds of row are held back and read again on later passes instead of being skipped: a sequence
    number missing below the newest row (another process's transaction that has not committed yet;
    dropped after :data:`GAP_SECONDS` - it was rolled back; see :mod:`khoa.sequence`), and a
    mutating call's event that may not be complete yet (events are recorded before the call runs
    and completed after it; one without an outcome is read once it has one, or once it is
    :data:`SETTLE_SECONDS` old). Routine events (successful authenticated reads) reach the rules
    once per kind and batch: see
    :class:`~khoa.alerts.reader.TrailReader`. On the first start ever, the cursor is put at the
    trail's end (history raises nothing) and what history shows about who reads which secret is
    learned.

A pass
    Everything one batch decides - alerts, learned (secret, principal) pairs, the new cursor - is
    committed in one transaction, guarded by the cursor's previous value, so a crash or a second
    leader can neither lose nor duplicate an alert. Each stored alert is logged at once; the alerts
    table is also the outbox for the ``AlertRaised`` audit event and the webhook and Slack deliveries,
    retried on later passes (with backoff, for a day) until each is done.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from khoa.alerts.config import AlertSettings
from khoa.alerts.context import PassContext, digest
from khoa.alerts.model import Alert, Event, iso
from khoa.alerts.notifiers import FAILED, PENDING, SENT, Notifiers, StoredAlert
from khoa.alerts.reader import TrailReader, event_columns, event_from_row
from khoa.alerts.rules import NewSecretReader, Rule, build_rules
from khoa.audit.events import AuditEvent, background
from khoa.ids import new_event_id
from khoa.sequence import GapPolicy, SequenceCursor
from khoa.storage import schema

log = logging.getLogger("khoa.alerts")

SETTLE_SECONDS = 5.0
GAP_SECONDS = 30.0
BATCH = 1000
PASS_SECONDS = 5.0  # reading stops after this long in one pass; the rest waits for the next
OUTBOX_BATCH = 100
EVENT_NAME = "AlertRaised"
EVENT_SERVICE = "khoa"
STATE_NAME = "cursor"
_GAPS = GapPolicy("alerts", GAP_SECONDS)

_EVENTS = schema.audit_events
_ALERTS = schema.alerts
_SEEN = schema.alert_seen_principals
_STATE = schema.alert_state


class AlertAudit(Protocol):
    """What the engine needs of the audit sink (:class:`khoa.audit.recorder.AuditRecorder`): it
    records ``AlertRaised`` events through it, and the audit-sink-errors rule watches its failure
    count."""

    @property
    def failures(self) -> int: ...

    def write(self, events: list[AuditEvent]) -> None: ...

    def note_failure(self) -> None: ...


class DeliveryHealth(Protocol):
    """Whether the trail's log files can be delivered and their disk has room
    (:class:`khoa.audit.health.TrailHealth`): the audit-delivery-failing and storage-low rules watch
    it."""

    def problem(self) -> str | None: ...

    def low_space(self) -> str | None: ...


class StateConflict(Exception):
    """Another process moved the cursor first; this pass's decisions were dropped."""


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


def stored_alert(row: Any) -> StoredAlert:
    body = json.loads(row.details)
    return StoredAlert(
        alert_id=row.alert_id,
        rule=row.rule,
        severity=row.severity,
        account_id=row.account_id,
        region=row.region,
        raised_at=iso(float(row.raised_at)),
        summary=row.summary,
        details=body.get("details", {}),
        resources=body.get("resources", []),
        event_ids=body.get("eventIds", []),
        audit_event_id=row.audit_event_id,
    )


def audit_event(alert: StoredAlert, raised_at: float) -> AuditEvent:
    """The ``AlertRaised`` service event recording an alert (its event id is fixed at raise time, so
    writing it again after a crash cannot duplicate it)."""
    event = background(
        service=EVENT_SERVICE,
        event_name=EVENT_NAME,
        account_id=alert.account_id,
        region=alert.region,
        now=datetime.fromtimestamp(raised_at, UTC),
        details={
            "alertId": alert.alert_id,
            "rule": alert.rule,
            "severity": alert.severity,
            "summary": alert.summary,
            "details": alert.details,
            "triggeringEventIds": alert.event_ids,
        },
        resources=[
            {"accountId": alert.account_id, "type": r.get("type", ""), "ARN": r.get("ARN", "")}
            for r in alert.resources
        ],
    )
    event.record["eventID"] = alert.audit_event_id
    return event


def backoff(attempts: int) -> float:
    return float(min(30 * 2 ** max(attempts - 1, 0), 3600))


class AlertEngine:
    """The ``alerts.evaluate`` leader job.

    It is given exactly what it uses: the database, the alert settings, the audit sink, the domain
    clock (read once, to start watching), and the account and Region that process-health alerts
    (which no event names) are filed under. ``notifiers`` defaults to the configured log, webhook and
    Slack receivers; tests pass their own.
    """

    def __init__(
        self,
        *,
        engine: Engine,
        settings: AlertSettings,
        audit: AlertAudit,
        now: Callable[[], datetime],
        default_account_id: str,
        default_region: str,
        notifiers: Notifiers | None = None,
        delivery: DeliveryHealth | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.audit = audit
        self.delivery = delivery
        self.default_account_id = default_account_id
        self.default_region = default_region
        self.rules: list[Rule] = build_rules(self.settings)
        self.notifiers = notifiers or Notifiers(self.settings)
        self._reader = TrailReader(self.engine.dialect)
        self.started = False
        if self.settings.enabled:
            try:
                self.start(now().timestamp())
            except Exception:
                log.exception("alerts: could not read the alert cursor; will try again on the next pass")

    # -- starting --------------------------------------------------------------------------------
    def _state(self) -> tuple[str, dict[str, Any]] | None:
        with self.engine.connect() as conn:
            raw = conn.execute(select(_STATE.c.value).where(_STATE.c.name == STATE_NAME)).scalar()
        return (raw, json.loads(raw)) if raw is not None else None

    def start(self, at: float) -> None:
        """Begin watching; on the very first start, from the trail's end (see the module notes)."""
        if self._state() is None:
            with self.engine.connect() as conn:
                newest = int(conn.execute(select(func.max(_EVENTS.c.seq))).scalar() or 0)
            state = {"seq": newest, "held": [], "startedAt": at}
            try:
                with self.engine.begin() as conn:
                    conn.execute(insert(_STATE).values(name=STATE_NAME, value=_dumps(state), updated_at=at))
            except IntegrityError:
                pass  # another process started first
            else:
                log.info("alerts: watching the audit trail from event %d", newest)
                self._learn_history(newest, at)
        self.started = True

    def _learn_history(self, upto: int, at: float) -> None:
        """Learn who created and read which secret from the trail so far (raising nothing)."""
        reader = NewSecretReader(self.settings)
        c = _EVENTS.c
        after = 0
        while True:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    select(*event_columns())
                    .where(c.seq > after, c.seq <= upto)
                    .where(c.event_source == "secretsmanager.amazonaws.com")
                    .where(c.event_name.in_(("CreateSecret", "GetSecretValue", "BatchGetSecretValue")))
                    .where(c.error_code.is_(None))
                    .order_by(c.seq)
                    .limit(BATCH)
                ).all()
            if not rows:
                return
            ctx = self._context(at, learn_only=True)
            reader.observe(ctx, [event_from_row(row) for row in rows])
            self._commit(ctx, None)
            after = rows[-1].seq

    def _context(self, at: float, learn_only: bool = False, started_at: float = 0.0) -> PassContext:
        return PassContext(
            engine=self.engine,
            now=at,
            settings=self.settings,
            default_account=self.default_account_id,
            default_region=self.default_region,
            audit_failures=self.audit.failures,
            watch_started_at=started_at,
            learn_only=learn_only,
        )

    # -- the job ---------------------------------------------------------------------------------
    def run(self, now: datetime) -> None:
        """One pass: health rules, then the new audit events, then the outbox."""
        if not self.settings.enabled:
            return
        at = now.timestamp()
        self._tick(at)
        if not self.started:
            self.start(at)
        deadline = time.monotonic() + PASS_SECONDS
        while time.monotonic() < deadline:
            try:
                more = self._read_batch(at)
            except StateConflict:
                log.warning("alerts: another process moved the alert cursor; leaving this batch to it")
                break
            if not more:
                break
        self.deliver(at)

    def _tick(self, at: float) -> None:
        ctx = self._context(at)
        if self.delivery is not None:
            ctx.audit_delivery_problem = self.delivery.problem()
            ctx.storage_low = self.delivery.low_space()
        for rule in self.rules:
            rule.tick(ctx)
        if not ctx.alerts:
            return
        try:
            self._commit(ctx, None)
        except Exception:
            # The database may be what is failing: tell someone anyway, once, without storing it.
            log.exception("alerts: could not store %d alert(s); notifying without storing", len(ctx.alerts))
            for alert in ctx.alerts:
                self._notify_unstored(alert, at)

    def _notify_unstored(self, alert: Alert, at: float) -> None:
        stored = StoredAlert(
            alert_id=str(uuid.uuid4()),
            rule=alert.rule,
            severity=alert.severity,
            account_id=alert.account_id,
            region=alert.region,
            raised_at=iso(at),
            summary=alert.summary,
            details=alert.details,
            resources=alert.resources,
            event_ids=alert.event_ids,
            audit_event_id="",
        )
        self.notifiers.to_log(stored)
        if self.notifiers.webhook_configured:
            self.notifiers.to_webhook(stored)
        if self.notifiers.slack_configured:
            self.notifiers.to_slack(stored)

    # -- reading the trail -----------------------------------------------------------------------
    @staticmethod
    def incomplete(e: Event, at: float) -> bool:
        """A mutating call's event that may still be waiting for its outcome."""
        return (
            not e.read_only
            and e.error_code is None
            and at - e.event_time < SETTLE_SECONDS
            and e.event_type == "AwsApiCall"
            and e.record.get("responseElements") is None
        )

    def _read_batch(self, at: float) -> bool:
        """Read and judge one batch; True when more events are waiting."""
        loaded = self._state()
        if loaded is None:
            raise StateConflict("no alert cursor")
        raw_state, state = loaded
        cursor = SequenceCursor.from_pairs(int(state["seq"]), state.get("held", []))
        c = _EVENTS.c
        with self._snapshot() as conn:
            seqs, rows = self._reader.read(conn, cursor.position, BATCH)
            if not seqs and cursor.position:
                newest = conn.execute(select(func.max(c.seq))).scalar()
                if newest is not None and newest < cursor.position:
                    # The trail was emptied and numbering started again (SQLite reuses rowids).
                    log.warning(
                        "alerts: audit sequence went back from %d to %d; rereading", cursor.position, newest
                    )
                    cursor = SequenceCursor(0, cursor.held)
                    seqs, rows = self._reader.read(conn, cursor.position, BATCH)
            held_rows: list[Any] = []
            wanted = cursor.wanted()
            for start in range(0, len(wanted), 500):
                held_rows.extend(
                    conn.execute(select(*event_columns()).where(c.seq.in_(wanted[start : start + 500]))).all()
                )
        # Gaps and late rows are the cursor's; an event found without its outcome yet is held again
        # (until its own deadline, or SETTLE_SECONDS after it was recorded).
        late = [event_from_row(row) for row in held_rows]
        moved, ready = cursor.advance([*seqs, *(e.seq for e in late)], at, _GAPS)
        ready_now = set(ready)
        events: list[Event] = []
        for seq, e in sorted({e.seq: e for e in [*late, *rows]}.items()):
            if seq not in ready_now:
                continue
            deadline = cursor.held.get(e.seq, e.event_time + SETTLE_SECONDS)
            if self.incomplete(e, at) and deadline > at:
                moved = moved.hold(e.seq, deadline)
            else:
                events.append(e)
        new_state = {
            "seq": moved.position,
            "held": moved.held_pairs(),
            "startedAt": state.get("startedAt", at),
        }
        ctx = self._context(at, started_at=float(state.get("startedAt", 0.0)))
        for rule in self.rules:
            if events:
                rule.observe(ctx, events)
        if new_state != state or ctx.alerts or ctx.learned or ctx.forgotten:
            self._commit(ctx, (raw_state, new_state))
        return len(seqs) == BATCH

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[Connection]:
        """A connection whose statements all see one snapshot of the trail (a batch's sequence
        numbers and its events are read by separate statements). SQLite's read transaction already
        is one; PostgreSQL's default READ COMMITTED gives each statement its own."""
        with self.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            yield conn

    # -- committing ------------------------------------------------------------------------------
    def _commit(self, ctx: PassContext, state_change: tuple[str, dict[str, Any]] | None) -> list[StoredAlert]:
        at = ctx.now
        rows: list[dict[str, Any]] = []
        for position, alert in enumerate(ctx.alerts):
            rows.append(
                {
                    "alert_id": str(uuid.uuid4()),
                    "rule": alert.rule,
                    "severity": alert.severity,
                    "account_id": alert.account_id,
                    "region": alert.region,
                    "raised_at": at + position * 1e-6,  # keeps a pass's alerts in the order raised
                    "summary": alert.summary,
                    "details": _dumps(
                        {"details": alert.details, "resources": alert.resources, "eventIds": alert.event_ids}
                    ),
                    "dedupe_key": digest(alert.dedupe_key),
                    "audit_event_id": new_event_id(),
                    "audited": False,
                    "webhook_status": PENDING if self.notifiers.webhook_configured else None,
                    "slack_status": PENDING if self.notifiers.slack_configured else None,
                    "delivery_attempts": 0,
                    "outbox_due_at": at,
                }
            )
        with self.engine.begin() as conn:
            if state_change is not None:
                old_raw, new_state = state_change
                result = conn.execute(
                    update(_STATE)
                    .where(_STATE.c.name == STATE_NAME, _STATE.c.value == old_raw)
                    .values(value=_dumps(new_state), updated_at=at)
                )
                if result.rowcount != 1:
                    raise StateConflict("the alert cursor moved")
            for secret_arn in ctx.forgotten:
                conn.execute(delete(_SEEN).where(_SEEN.c.secret_key == digest(secret_arn)))
            self._insert_pairs(conn, ctx, at)
            if rows:
                conn.execute(insert(_ALERTS), rows)
        stored = [stored_alert(_Row(row)) for row in rows]
        for one in stored:
            self.notifiers.to_log(one)
        return stored

    @staticmethod
    def _insert_pairs(conn: Any, ctx: PassContext, at: float) -> None:
        learned = ctx.learned
        if not learned:
            return
        ids = list(learned)
        existing: set[str] = set()
        for start in range(0, len(ids), 500):
            existing.update(
                conn.execute(select(_SEEN.c.pair_id).where(_SEEN.c.pair_id.in_(ids[start : start + 500])))
                .scalars()
                .all()
            )
        new = [
            {
                "pair_id": pid,
                "secret_key": digest(secret),
                "secret_arn": secret,
                "principal": who,
                "reason": reason,
                "first_seen_at": at,
            }
            for pid, (secret, who, reason) in learned.items()
            if pid not in existing
        ]
        if new:
            conn.execute(insert(_SEEN), new)

    # -- the outbox ------------------------------------------------------------------------------
    def deliver(self, at: float) -> None:
        """Write outstanding AlertRaised events and send outstanding notifications."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(_ALERTS)
                .where(_ALERTS.c.outbox_due_at.is_not(None), _ALERTS.c.outbox_due_at <= at)
                .order_by(_ALERTS.c.raised_at, _ALERTS.c.alert_id)
                .limit(OUTBOX_BATCH)
            ).all()
        if not rows:
            return
        audited = self._write_audit_events([row for row in rows if not row.audited])
        down: set[str] = set()  # receivers that failed in this pass are not tried again in it
        for row in rows:
            alert = stored_alert(row)
            webhook = self._send("webhook", row.webhook_status, alert, down)
            slack = self._send("slack", row.slack_status, alert, down)
            attempted = PENDING in (row.webhook_status, row.slack_status)
            attempts = row.delivery_attempts + (1 if attempted else 0)
            if PENDING in (webhook, slack) and at - row.raised_at > self.settings.delivery_give_up_seconds:
                log.error("alerts: giving up delivering alert %s after %d attempts", row.alert_id, attempts)
                webhook = FAILED if webhook == PENDING else webhook
                slack = FAILED if slack == PENDING else slack
            is_audited = bool(row.audited) or row.alert_id in audited
            if PENDING in (webhook, slack):
                due: float | None = at + backoff(attempts)
            elif not is_audited:
                due = at  # the audit sink: try again on the next pass
            else:
                due = None
            with self.engine.begin() as conn:
                conn.execute(
                    update(_ALERTS)
                    .where(_ALERTS.c.alert_id == row.alert_id)
                    .values(
                        audited=is_audited,
                        webhook_status=webhook,
                        slack_status=slack,
                        delivery_attempts=attempts,
                        outbox_due_at=due,
                    )
                )

    def _send(self, kind: str, status: str | None, alert: StoredAlert, down: set[str]) -> str | None:
        if status != PENDING:
            return status
        configured = (
            self.notifiers.webhook_configured if kind == "webhook" else self.notifiers.slack_configured
        )
        if not configured:
            log.warning(
                "alerts: the %s receiver is no longer configured; alert %s not sent", kind, alert.alert_id
            )
            return FAILED
        if kind in down:
            return PENDING
        result = self.notifiers.to_webhook(alert) if kind == "webhook" else self.notifiers.to_slack(alert)
        if result == PENDING:
            down.add(kind)
        elif result == SENT:
            log.info("alerts: sent alert %s to the %s receiver", alert.alert_id, kind)
        return result

    def _write_audit_events(self, rows: Iterable[Any]) -> set[str]:
        """Record AlertRaised events; returns the ids of the alerts now recorded. An event written
        before a crash (its id is fixed) is not written twice."""
        pending = [(row.alert_id, audit_event(stored_alert(row), float(row.raised_at))) for row in rows]
        if not pending:
            return set()
        try:
            with self.engine.connect() as conn:
                present = set(
                    conn.execute(
                        select(_EVENTS.c.event_id).where(
                            _EVENTS.c.event_id.in_([e.event_id for _, e in pending])
                        )
                    )
                    .scalars()
                    .all()
                )
            self.audit.write([event for _, event in pending if event.event_id not in present])
        except Exception:
            self.audit.note_failure()
            log.exception("alerts: could not record %d AlertRaised event(s)", len(pending))
            return set()
        return {alert_id for alert_id, _ in pending}


class _Row:
    """Attribute access over a dict (a stored alert before it is read back)."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)
