"""The rotation engine: runs createSecret, setSecret, testSecret and finishSecret for each rotation.

A rotation is a row in ``rotation_runs`` naming the secret, the version token and the next step. Only
the job leader runs rotations, each step is recorded as it completes, and a failed step is retried
with backoff from where it stopped, so a crash or failure leaves AWSPENDING for the next attempt and
never two AWSCURRENTs or a lost value. Functions call this server back through the normal API as
their registered role, so their calls are authorised and audited like any other; outside ``--dev`` a
built-in or Python function registered without a role cannot run (its rotation fails, saying so), as a
Lambda function cannot exist without an execution role. HTTP functions call back with credentials of
their own.

Several processes may share one database: the job lease makes one of them the leader, and each run is
also claimed (``owner``, ``owner_expires_at``) before its steps are invoked, so even a pass outlasting
the lease never runs a rotation on two nodes at once. A claim lives as long as the jobs lease
(``KHOA_JOB_LEASE_SECONDS``, ``CLAIM_SECONDS`` by default) and is renewed every third of that while a
step runs, so a claim left by a crashed process expires within seconds and the next leader resumes the
run at its recorded step (a pass that finds a run claimed by another node waits up to one claim time
for it to free). When the claim cannot be renewed (the jobs lease was lost: the engine's writes run
under the jobs fence) the run is abandoned as it stands, recording nothing: its new owner resumes it.

Each step runs on a thread of its own and may take ``KHOA_ROTATION_STEP_TIMEOUT_SECONDS`` (HTTP
functions: at least their registered timeout); a step that runs longer fails the rotation (retried
with backoff, as any failed step) and never holds the pass. Python cannot stop a thread, so a step
that timed out may still be running: the function sees its later calls for a token that is still
AWSPENDING, which the rotation protocol makes harmless (every step must be idempotent).

An emergency rotation (after a leak, :mod:`khoa.secret_rotation.emergency`) runs a queued rotation in
the calling thread instead (``run_now``), then revokes and checks the earlier values.

The engine is given what it uses (database, barrier, secret store, audit writer, the settings it
reads) rather than the whole application, so it is built before the Secrets Manager service, which
reaches it only to queue, cancel and look up rotations (``RotationControl`` in that package).
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Engine, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from khoa.audit.events import AuditEvent, background
from khoa.auth.sessions import SessionCredentials, issue_session
from khoa.changes.changes import publish, snapshot
from khoa.crypto.barrier import Barrier
from khoa.lease import LeaseLost
from khoa.protocol.errors import AWSError
from khoa.secret_rotation import emergency, functions
from khoa.secret_rotation.invoke import InvocationError, invoke, khoa_client
from khoa.services.secretsmanager.schedule import next_rotation
from khoa.services.secretsmanager.store import SecretStore
from khoa.settings import Settings
from khoa.storage import schema

log = logging.getLogger("khoa.secret_rotation")

STEPS = ("createSecret", "setSecret", "testSecret", "finishSecret")
MAX_BACKOFF = timedelta(hours=1)
CLAIM_SECONDS = 6.0
STEP_TIMEOUT_SECONDS = 60.0
# While waiting for a claim held by another node to expire, check this often.
_CLAIM_POLL_SECONDS = 0.5
_RUNS = schema.rotation_runs
_SECRETS = schema.sm_secrets


@dataclass
class RotationOutcome:
    secret_arn: str
    succeeded: bool
    error: str = ""


class AuditWriter(Protocol):
    """Where the engine records RotationSucceeded and RotationFailed (khoa.audit.recorder.AuditRecorder)."""

    def write(self, events: list[AuditEvent]) -> None: ...


@dataclass(frozen=True)
class RotationSettings:
    """What the engine reads of Khoa's settings.

    ``endpoint`` is where functions call this server back; ``dev`` is ``--dev``, where they call back
    with any signature as the account root, so no role session is issued for them.
    """

    endpoint: str
    dev: bool = False
    step_timeout_seconds: float = STEP_TIMEOUT_SECONDS
    claim_seconds: float = CLAIM_SECONDS

    @classmethod
    def from_settings(cls, settings: Settings) -> RotationSettings:
        """This server as its own functions reach it: over loopback when it listens on every address."""
        host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host  # noqa: S104
        scheme = "https" if settings.tls_cert else "http"
        return cls(
            endpoint=f"{scheme}://{host}:{settings.port}",
            dev=settings.dev,
            step_timeout_seconds=settings.rotation_step_timeout_seconds,
            claim_seconds=settings.job_lease_seconds,
        )


class _InProgress(Exception):
    """A rotation of the secret is already queued or running (``start`` rolls back and says False)."""


class ClaimLost(Exception):
    """Another node owns the run now (or this one lost the jobs lease): stop, record nothing."""


class RotationEngine:
    def __init__(
        self,
        engine: Engine,
        barrier: Barrier,
        store: SecretStore,
        audit: AuditWriter,
        settings: RotationSettings,
    ) -> None:
        """``barrier`` opens HTTP functions' HMAC keys and seals the role sessions functions act with;
        ``store`` is Secrets Manager's, whose caches a rotation's writes clear."""
        self.engine = engine
        self.barrier = barrier
        self.store = store
        self.audit = audit
        self.settings = settings
        self.node = uuid.uuid4().hex
        self.succeeded = 0
        self.failed = 0
        self.last_success: float | None = None

    # -- starting -----------------------------------------------------------------------------------
    def start(
        self, secret_id: str, token: str, now: float, configure: Mapping[str, Any] | None = None
    ) -> bool:
        """Queue a rotation, and give its token a version labelled AWSPENDING (no value until the
        function's createSecret step puts one); with ``configure``, write those columns of the secret's
        row (RotateSecret's rotation configuration) in the same transaction. False, with nothing
        written, when a rotation of the secret is already queued or running: the secret's row is locked
        first and the queue read after, so of concurrent starts exactly one queues its rotation (the
        queue's primary key decides too). A secret deleted meanwhile raises ResourceNotFoundException.
        """
        try:
            with self.engine.begin() as conn:
                self.store.lock(conn, secret_id, now)
                queued = conn.execute(select(_RUNS.c.token).where(_RUNS.c.secret_id == secret_id)).first()
                if queued is not None:
                    raise _InProgress
                if configure:
                    conn.execute(
                        update(_SECRETS).where(_SECRETS.c.secret_id == secret_id).values(**configure)
                    )
                self.store.add_placeholder(conn, secret_id, token, now)
                conn.execute(
                    insert(_RUNS).values(
                        secret_id=secret_id,
                        token=token,
                        step=STEPS[0],
                        attempts=0,
                        next_attempt_at=now,
                        last_error=None,
                        started_at=now,
                    )
                )
        except (_InProgress, IntegrityError):
            return False
        self.store.invalidate_all()
        return True

    def in_progress(self, secret_id: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(select(_RUNS.c.token).where(_RUNS.c.secret_id == secret_id)).scalar()

    def has_function(self, arn: str) -> bool:
        return functions.lookup(self.engine, arn) is not None

    def cancel(self, secret_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(_RUNS).where(_RUNS.c.secret_id == secret_id))

    def start_scheduled(self, now: datetime) -> int:
        """Queue rotations whose schedule has come due."""
        with self.engine.connect() as conn:
            due = (
                conn.execute(
                    select(_SECRETS.c.secret_id)
                    .where(_SECRETS.c.rotation_enabled.is_(True))
                    .where(_SECRETS.c.deleted_at.is_(None))
                    .where(_SECRETS.c.primary_secret_id.is_(None))
                    .where(_SECRETS.c.next_rotation_at.is_not(None))
                    .where(_SECRETS.c.next_rotation_at <= now.timestamp())
                )
                .scalars()
                .all()
            )
        started = 0
        for secret_id in due:
            try:
                started += self.start(secret_id, str(uuid.uuid4()), now.timestamp())
            except AWSError:  # deleted since it was found due (ResourceNotFoundException)
                continue
        return started

    # -- running ------------------------------------------------------------------------------------
    def run_now(self, secret_id: str, now: datetime, deadline: float) -> RotationOutcome | None:
        """Run the secret's queued rotation in the calling thread (an emergency rotation does not wait
        for the next pass): claim it and run its remaining steps, or, while another node runs it, wait
        for it until ``deadline`` (``time.monotonic()``). None when no run is left (it finished or was
        cancelled elsewhere: the caller looks at the labels); a failed outcome when it failed (recorded
        and retried with backoff as any failure) or was still running elsewhere at the deadline."""
        while True:
            with self.engine.connect() as conn:
                run = conn.execute(select(_RUNS).where(_RUNS.c.secret_id == secret_id)).first()
            if run is None:
                return None
            # Not one this node holds: this process's rotation lane (or another call) may be running it.
            if self._claim(run, held_here=False):
                return self._run(run, now)
            if time.monotonic() >= deadline:
                return RotationOutcome("", False, "it is running on another node and did not finish in time")
            time.sleep(_CLAIM_POLL_SECONDS)

    def emergency(self, secret_arn: str, now: datetime, timeout: float) -> dict[str, Any]:
        """Rotate now and make every earlier value stop working (:mod:`khoa.secret_rotation.emergency`):
        ``{"VersionId", "Actions", "Succeeded", "Error"}``; a failure is reported, not raised."""
        return emergency.emergency_rotate(self, secret_arn, now, timeout).as_dict()

    def client_for(self, function: functions.RotationFunction, region: str, now: datetime) -> Any:
        """A Secrets Manager client acting as ``function``'s role (as its steps do)."""
        return khoa_client(self.settings.endpoint, region, self._credentials(function, now))

    def record(self, name: str, secret_arn: str, now: datetime, details: dict[str, Any]) -> None:
        """Record a service event about a secret's rotation (the emergency rotation's outcome)."""
        with self.engine.connect() as conn:
            secret = conn.execute(select(_SECRETS).where(_SECRETS.c.arn == secret_arn)).first()
        if secret is not None:
            self._audit(name, secret, now, details)

    def run_due(self, now: datetime) -> list[RotationOutcome]:
        """Run every due rotation this node can claim; one claimed by another node is waited for up to
        one claim time (a crashed leader's claim runs out within it), then left to a later pass."""
        self.start_scheduled(now)
        with self.engine.connect() as conn:
            runs = conn.execute(select(_RUNS).where(_RUNS.c.next_attempt_at <= now.timestamp())).all()
        outcomes: list[RotationOutcome] = []
        waiting = []
        for run in runs:
            if self._claim(run):
                outcomes.append(self._run(run, now))
            else:
                waiting.append(run)
        deadline = time.monotonic() + self.settings.claim_seconds + 1.0
        while waiting and time.monotonic() < deadline:
            time.sleep(_CLAIM_POLL_SECONDS)
            still = []
            for run in waiting:
                if not self._exists(run):
                    continue
                if self._claim(run):
                    outcomes.append(self._run(run, now))
                else:
                    still.append(run)
            waiting = still
        return outcomes

    def _exists(self, run: Any) -> bool:
        """Whether the run is still queued (its owner may have finished or cancelled it meanwhile)."""
        with self.engine.connect() as conn:
            found = conn.execute(
                select(_RUNS.c.token)
                .where(_RUNS.c.secret_id == run.secret_id)
                .where(_RUNS.c.token == run.token)
            ).first()
        return found is not None

    def _claim(self, run: Any, held_here: bool = True) -> bool:
        """Take this run for this process (by the wall clock, which every node shares), or skip it;
        ``held_here`` False: not when this node holds an unexpired claim on it either."""
        wall = time.time()
        free = [_RUNS.c.owner.is_(None), _RUNS.c.owner_expires_at.is_(None), _RUNS.c.owner_expires_at < wall]
        if held_here:
            free.append(_RUNS.c.owner == self.node)
        with self.engine.begin() as conn:
            claimed = conn.execute(
                update(_RUNS)
                .where(_RUNS.c.secret_id == run.secret_id)
                .where(_RUNS.c.token == run.token)
                .where(or_(*free))
                .values(owner=self.node, owner_expires_at=wall + self.settings.claim_seconds)
            )
        return bool(claimed.rowcount)

    def _renew_claim(self, run: Any) -> None:
        """Push this node's claim out while a step runs; :class:`ClaimLost` when it is not ours any more
        (or, through the jobs fence, when this process lost the jobs lease)."""
        with self.engine.begin() as conn:
            renewed = conn.execute(
                update(_RUNS)
                .where(_RUNS.c.secret_id == run.secret_id)
                .where(_RUNS.c.token == run.token)
                .where(_RUNS.c.owner == self.node)
                .values(owner_expires_at=time.time() + self.settings.claim_seconds)
            )
        if not renewed.rowcount:
            raise ClaimLost(f"the rotation of {run.secret_id} is no longer claimed by this node")

    def _step_timeout(self, function: functions.RotationFunction) -> float:
        if function.kind == "http":
            return max(self.settings.step_timeout_seconds, function.timeout_seconds + 5.0)
        return self.settings.step_timeout_seconds

    def _invoke_step(self, run: Any, step: str, call: Callable[[], None], timeout: float) -> None:
        """Run one step on a thread of its own, renewing the claim meanwhile; InvocationError if it
        fails or outlasts ``timeout``, ClaimLost if the claim is lost while it runs."""
        outcome: list[BaseException | None] = []
        done = threading.Event()

        def target() -> None:
            try:
                call()
                outcome.append(None)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                outcome.append(exc)
            finally:
                done.set()

        worker = threading.Thread(target=target, name=f"khoa-rotation-{step}", daemon=True)
        worker.start()
        deadline = time.monotonic() + timeout
        beat = max(self.settings.claim_seconds / 3, 0.05)
        while not done.wait(min(beat, max(deadline - time.monotonic(), 0.0))):
            if time.monotonic() >= deadline:
                raise InvocationError(f"{step} timed out after {timeout:g} s")
            self._renew_claim(run)
        error = outcome[0] if outcome else None
        if error is not None:
            raise error

    def _credentials(self, function: functions.RotationFunction, now: datetime) -> SessionCredentials | None:
        if self.settings.dev:
            return None  # --dev accepts any signature as the account root
        if function.kind == "http":
            return None  # an HTTP function calls Khoa back with credentials of its own
        if not function.role_arn:
            raise InvocationError(
                f"the function {function.name} has no role: register it with --role ROLE_ARN "
                "(outside --dev a function acts only as its role)"
            )
        roles = schema.iam_principals
        with self.engine.connect() as conn:
            role = conn.execute(
                select(roles).where(roles.c.kind == "role").where(roles.c.arn == function.role_arn)
            ).first()
        if role is None:
            raise InvocationError(f"the function's role {function.role_arn} does not exist")
        return issue_session(
            self.engine,
            self.barrier,
            account_id=role.account_id,
            role_id=role.principal_id,
            role_arn=role.arn,
            session_name=f"khoa-rotation-{function.name}"[:64],
            now=now,
            duration_seconds=3600,
            source_identity="secretsmanager.amazonaws.com",
        )

    def _run(self, run: Any, now: datetime) -> RotationOutcome:
        with self.engine.connect() as conn:
            secret = conn.execute(select(_SECRETS).where(_SECRETS.c.secret_id == run.secret_id)).first()
        if secret is None:
            self.cancel(run.secret_id)
            return RotationOutcome("", False, "the secret no longer exists")
        function = functions.lookup(self.engine, secret.rotation_lambda_arn or "")
        step = run.step
        try:
            if function is None:
                raise InvocationError(f"no rotation function is registered as {secret.rotation_lambda_arn}")
            if function.account_id != secret.account_id:
                # RotateSecret refuses such a function (no function policy can grant Secrets Manager
                # invoke across accounts in Khoa); one stored before that check never runs either.
                raise InvocationError(
                    f"Secrets Manager cannot invoke the function {function.arn} of another account "
                    f"than the secret's ({secret.account_id})"
                )
            hmac_key = None
            if function.secret_sealed:
                hmac_key = self.barrier.open(
                    function.secret_sealed,
                    functions.hmac_binding(function.account_id, function.region, function.name),
                )
            client = khoa_client(self.settings.endpoint, secret.region, self._credentials(function, now))
            for step in STEPS[STEPS.index(run.step) :]:
                event = {
                    "SecretId": secret.arn,
                    "ClientRequestToken": run.token,
                    "Step": step,
                    "RotationToken": str(uuid.uuid4()),
                }
                self._invoke_step(
                    run,
                    step,
                    functools.partial(invoke, function, event, client, hmac_key),
                    self._step_timeout(function),
                )
                self._renew_claim(run)  # still ours: the step's outcome may be recorded
                if step != STEPS[-1]:
                    with self.engine.begin() as conn:
                        conn.execute(
                            update(_RUNS)
                            .where(_RUNS.c.secret_id == run.secret_id)
                            .where(_RUNS.c.owner == self.node)
                            .values(step=STEPS[STEPS.index(step) + 1])
                        )
        except InvocationError as exc:
            return self._failed(run, secret, step, str(exc), now)
        except (ClaimLost, LeaseLost) as exc:
            log.warning("rotation of %s abandoned at %s: %s", secret.arn, step, exc)
            return RotationOutcome(secret.arn, False, f"abandoned: {exc}")
        self._succeeded(run, secret, now)
        return RotationOutcome(secret.arn, True)

    def _succeeded(self, run: Any, secret: Any, now: datetime) -> None:
        stages = schema.sm_stages
        rules = secret.rotation_rules
        next_at = None
        if secret.rotation_enabled and rules:
            next_at = next_rotation(json.loads(rules), now).timestamp()
        with self.engine.begin() as conn:
            # AWSPENDING leaves the version once it is current, as Secrets Manager does after finishSecret.
            conn.execute(
                delete(stages)
                .where(stages.c.secret_id == run.secret_id)
                .where(stages.c.stage == "AWSPENDING")
                .where(stages.c.version_id == run.token)
            )
            conn.execute(
                update(_SECRETS)
                .where(_SECRETS.c.secret_id == run.secret_id)
                .values(
                    last_rotated_at=now.timestamp(), next_rotation_at=next_at, last_changed_at=now.timestamp()
                )
            )
            conn.execute(delete(_RUNS).where(_RUNS.c.secret_id == run.secret_id))
        self.store.invalidate_all()
        self.succeeded += 1
        self.last_success = now.timestamp()
        self._audit("RotationSucceeded", secret, now, {"versionId": run.token})
        self._publish(secret, "RotationSucceeded", {"versionId": run.token})
        log.info("rotated %s", secret.arn)

    def _failed(self, run: Any, secret: Any, step: str, error: str, now: datetime) -> RotationOutcome:
        attempts = run.attempts + 1
        delay = min(timedelta(minutes=2 ** min(attempts, 10)), MAX_BACKOFF)
        with self.engine.begin() as conn:
            conn.execute(
                update(_RUNS)
                .where(_RUNS.c.secret_id == run.secret_id)
                .values(
                    attempts=attempts,
                    step=step,
                    last_error=error[:1000],
                    next_attempt_at=(now + delay).timestamp(),
                    owner=None,
                    owner_expires_at=None,
                )
            )
        self.failed += 1
        self._audit(
            "RotationFailed", secret, now, {"versionId": run.token, "step": step, "error": error[:300]}
        )
        self._publish(secret, "RotationFailed", {"versionId": run.token, "step": step})
        log.warning("rotation of %s failed at %s (attempt %d): %s", secret.arn, step, attempts, error)
        return RotationOutcome(secret.arn, False, error)

    def _publish(self, secret: Any, kind: str, detail: dict[str, str]) -> None:
        state = snapshot(self.engine, secret.secret_id)
        if state is not None:
            publish(self.engine, state, kind, detail)

    def _audit(self, name: str, secret: Any, now: datetime, details: dict[str, Any]) -> None:
        event = background(
            service="secretsmanager",
            event_name=name,
            account_id=secret.account_id,
            region=secret.region,
            now=now.astimezone(UTC),
            details=details,
            resources=[
                {"accountId": secret.account_id, "type": "AWS::SecretsManager::Secret", "ARN": secret.arn}
            ],
        )
        try:
            self.audit.write([event])
        except Exception:
            log.exception("could not record the %s event", name)
