"""Log file delivery and signed digest files, exactly as CloudTrail's log file integrity validation.

:class:`AuditTrail` is the writer the leader runs as a job (and ``khoa audit digest`` runs on
demand). It decides *when* to deliver, write digests and apply the retention, and holds the
``audit-trail`` lease while it writes; the work itself is done by the modules it composes:

- :mod:`khoa.audit.formats`: CloudTrail's file names, log and digest formats, string to sign;
- :mod:`khoa.audit.files`: staged, fsynced files published only after their rows commit; recovery;
- :mod:`khoa.audit.delivery`: events to log files, in sequence order, behind a guarded cursor;
- :mod:`khoa.audit.digests`: the signed digest chain per (account, Region);
- :mod:`khoa.audit.signing`: the trail's sealed RSA signing keys;
- :mod:`khoa.audit.retention`: dropping delivered events past the retention.

Conditional updates keep concurrent writers correct on their own; the lease keeps them from wasting
work on the same events.

A write's record made before the call ran is never delivered while it waits for its outcome
(:mod:`khoa.audit.outcomes`): delivery stops just before it, and the leader's next pass tries again
(not only at the next delivery interval); once its outcome is lost it is delivered as unknown.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine

from khoa.audit.delivery import Delivery, DeliveryState
from khoa.audit.digests import Digests
from khoa.audit.errors import TrailBusy
from khoa.audit.files import AuditFiles
from khoa.audit.health import TrailHealth
from khoa.audit.outcomes import Writer, outcome_wait_seconds
from khoa.audit.retention import apply_retention
from khoa.audit.signing import SigningKey, SigningKeys
from khoa.clock import wall_clock
from khoa.crypto.barrier import Barrier
from khoa.lease import Lease
from khoa.logs import LogLimiter
from khoa.settings import Settings

log = logging.getLogger("khoa.audit")

# A mutating call's event is recorded before the call runs and completed right after. Delivery only
# takes events that were already there a while ago, so it seldom comes to one still waiting for its
# outcome (where it stops: khoa.audit.delivery): the leader's job takes what it saw at least
# JOB_SETTLE_SECONDS earlier (from an earlier pass, so it never waits); ``khoa audit digest`` takes
# everything, after waiting SETTLE_SECONDS.
SETTLE_SECONDS = 1.0
JOB_SETTLE_SECONDS = 10.0
LOCK_NAME = "audit-trail"
# Renewed after every batch of events and every digest chain, so a live writer keeps it; a writer
# that died (kill -9) frees it this long after its last renewal, and the next leader's pass delivers.
# Conditional updates keep two writers correct anyway; the lease only saves them wasted work.
_LOCK_SECONDS = 10.0
_RETENTION_INTERVAL_SECONDS = 3600.0


@dataclass(frozen=True)
class ClosedPeriod:
    """What ``khoa audit digest`` wrote; ``waiting``: the event delivery stopped before, a write
    still waiting for its outcome (it and the events after it go in a later period), or None."""

    log_files: list[str]
    digests: list[str]
    waiting: int | None = None


class AuditTrail:
    """Delivers events to log files and writes signed digests (leader job and ``khoa audit digest``)."""

    def __init__(
        self, engine: Engine, barrier: Barrier, settings: Settings, health: TrailHealth | None = None
    ) -> None:
        """``health``: where the leader's passes report whether delivery works (readiness, metrics
        and the ``audit-delivery-failing`` alert read it)."""
        self.engine = engine
        self.barrier = barrier
        self.directory = settings.effective_audit_dir
        self.delivery_seconds = settings.audit_delivery_seconds
        self.retention_days = settings.audit_retention_days
        self.settle_seconds = SETTLE_SECONDS
        self.job_settle_seconds = JOB_SETTLE_SECONDS
        self.files = AuditFiles(engine, self.directory)
        self.health = health if health is not None else TrailHealth(self.directory)
        self._logs = LogLimiter(log)
        self.keys = SigningKeys(engine, barrier)
        self.delivery = Delivery(
            engine,
            self.files,
            renew=self._renew_lock,
            writer=Writer.this_process(),
            outcome_wait_seconds=outcome_wait_seconds(settings.rotation_step_timeout_seconds),
        )
        self.digests = Digests(
            engine, self.files, self.keys, settings.audit_digest_seconds, renew=self._renew_lock
        )
        self._last_delivery = -math.inf
        self._last_retention = -math.inf
        self._lease: Lease | None = None
        self._marks: list[tuple[float, int]] = []  # (monotonic time, newest undelivered seq) per pass

    # -- entry points ----------------------------------------------------------------------------
    def run_job(self, now: datetime) -> None:
        """The leader's pass: deliver every few minutes, write digests for periods that are over,
        then drop delivered events past the retention."""
        at = now.timestamp()
        with self._lock(wait=0) as held:
            if held:
                self._deliver_pass(at)
        if at - self._last_retention >= _RETENTION_INTERVAL_SECONDS:
            self.apply_retention(at)
            self._last_retention = at

    def _deliver_pass(self, at: float) -> None:
        """Deliver and write digests as due, telling ``health`` how it went. A directory the probe
        finds unwritable is not tried (nothing could be delivered); a file that cannot be written is
        logged once per interval with a count, not as a traceback per pass, and the next pass tries
        again (events wait in the database meanwhile). Database errors propagate as before (the job
        runner logs them; readiness reports the database itself)."""
        problem = self.health.probe(force=True)  # its failure shows until a probe succeeds
        if problem is not None:
            self._logs.error("delivery", "audit trail: cannot deliver log files: %s", problem)
            return
        try:
            self.files.recover()
            due = self.digests.due_chains(at)
            watermark = self._settled_watermark()
            wanted = due or at - self._last_delivery >= self.delivery_seconds or self.delivery.backlog()
            if wanted and watermark is not None:
                delivered = self._deliver(at, watermark)
                if self.delivery.waiting is None:  # else the next pass tries again
                    self._last_delivery = at
                if delivered:
                    log.info("audit trail: delivered %d log file(s)", len(delivered))
            if due:
                written = self.digests.write_digests(at, due)
                log.info("audit trail: wrote %d digest file(s)", len(written))
        except OSError as exc:  # the files could not be written (the database's errors go up)
            reason = f"audit trail delivery failed: {exc.strerror or type(exc).__name__}"
            self.health.delivery_failed(reason)
            self._logs.exception("delivery", "audit trail: delivery failed; will retry")
            return
        self.health.delivery_succeeded()
        self._logs.recovered("delivery", "audit trail: delivery works again")

    def close_period(self, now: float | None = None, wait: float = 60.0) -> ClosedPeriod:
        """Deliver pending events and write every chain's digest now (``khoa audit digest``). A write
        still waiting for its outcome stops delivery before it (``waiting`` says which)."""
        with self._lock(wait=wait) as held:
            if not held:
                raise TrailBusy("another process is writing the audit trail; try again")
            self.files.recover()
            at = wall_clock().timestamp() if now is None else now
            newest = self._newest_pending()
            files: list[str] = []
            if newest is not None:
                if self.settle_seconds > 0:
                    time.sleep(self.settle_seconds)
                files = self._deliver(at, newest)
            self._last_delivery = at
            digests = self.digests.write_digests(at, None)
        return ClosedPeriod(files, digests, self.delivery.waiting if newest is not None else None)

    def apply_retention(self, now: float) -> int:
        """Remove delivered events older than the retention (their log files stay)."""
        return apply_retention(self.engine, self.delivery, self.retention_days, now)

    def signing_key(self, now: float) -> SigningKey:
        """The current trail key, created (and sealed, bound to its row) on first use."""
        return self.keys.signing_key(now)

    # -- delivery --------------------------------------------------------------------------------
    def _delivery_state(self) -> DeliveryState:
        return self.delivery.state()

    def _newest_pending(self) -> int | None:
        """The newest event not delivered yet (None when there is none)."""
        return self.delivery.newest_pending()

    def _deliver(self, now: float, watermark: int) -> list[str]:
        """Deliver undelivered events up to sequence number ``watermark``, in order."""
        return self.delivery.deliver(now, watermark)

    def _settled_watermark(self) -> int | None:
        """Note the newest undelivered event now; return the newest noted at least the job's settle
        time ago (None when no earlier pass saw undelivered events long enough ago)."""
        moment = time.monotonic()
        settled = [seq for at, seq in self._marks if moment - at >= self.job_settle_seconds]
        newest = self._newest_pending()
        keep = [(at, seq) for at, seq in self._marks if moment - at < self.job_settle_seconds]
        if settled:
            keep.insert(0, (moment - self.job_settle_seconds, max(settled)))
        if newest is not None:
            keep.append((moment, newest))
        self._marks = keep[-64:]
        return max(settled) if settled else None

    # -- the trail lock --------------------------------------------------------------------------
    @contextlib.contextmanager
    def _lock(self, wait: float) -> Iterator[bool]:
        """One writer at a time across processes (the ``leases`` row ``audit-trail``), with a new
        holder for each hold, so two threads of one process exclude each other as well. Conditional
        updates guard correctness on their own; the lock keeps concurrent writers from wasting work."""
        lease = Lease(self.engine, LOCK_NAME, _LOCK_SECONDS)
        with lease.held(wait) as held:
            if not held:
                yield False
                return
            self._lease = lease
            try:
                yield True
            finally:
                self._lease = None

    def _renew_lock(self) -> None:
        if self._lease is not None:
            self._lease.renew()
