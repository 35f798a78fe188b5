"""Emergency rotation: rotate a leaked secret now and make every earlier value of it stop working.

A normal rotation keeps AWSPREVIOUS valid on purpose: with alternating users the previous user keeps
its password until the rotation after next, so applications holding it keep working meanwhile. After a
leak that grace is the danger, so an emergency rotation goes further:

1. it rotates now, in the caller's thread (a rotation already queued or failing is resumed and run at
   once; one running on another node is waited for), with the secret's registered function;
2. for Khoa's built-in database rotators, with the function's role as every step:
   - alternating users: the master user gives the previous user (AWSPREVIOUS once the rotation
     finished) a new random password that is stored nowhere;
   - single user: setSecret already replaced the only password;
   - then testSecret turned around: every value that carried a label before the rotation must be
     refused by the database, and AWSPREVIOUS is taken off the previous version, so nothing labelled
     holds a value that is no longer valid (a leak check then calls the leaked value ``former``);
3. for Python and HTTP functions Khoa cannot know what the credential is: the rotation runs, and the
   outcome says that the earlier values must be revoked by hand.

Nothing is stored about an emergency beyond the rotation run itself: if the process stops half-way,
the rotation finishes later as a normal one and the caller (who saw no success) runs it again, which
revokes what is then AWSPREVIOUS. Every outcome is recorded as an ``EmergencyRotation`` service event.
"""

from __future__ import annotations

import functools
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from khoa.protocol.errors import AWSError
from khoa.secret_rotation import functions
from khoa.secret_rotation.builtin import DatabaseRotator
from khoa.secret_rotation.invoke import InvocationError, call_redacted
from khoa.storage import schema

if TYPE_CHECKING:
    from khoa.secret_rotation.engine import RotationEngine

TIMEOUT_SECONDS = 120.0
EVENT_NAME = "EmergencyRotation"
_CURRENT, _PREVIOUS, _PENDING = "AWSCURRENT", "AWSPREVIOUS", "AWSPENDING"


@dataclass
class EmergencyOutcome:
    """What an emergency rotation did (``actions``, one line each, never a value) and whether every
    earlier value is known to be worthless now (``succeeded``); ``error`` says what failed."""

    secret_arn: str
    version_id: str = ""
    actions: list[str] = field(default_factory=list)
    succeeded: bool = False
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "VersionId": self.version_id,
            "Actions": list(self.actions),
            "Succeeded": self.succeeded,
            "Error": self.error,
        }


def _labels(engine: RotationEngine, secret_id: str) -> dict[str, list[str]]:
    """Version id → labels, read from the database (not from a cache)."""
    return engine.store.many_stages([secret_id])[secret_id]


def _holder(labels: dict[str, list[str]], label: str) -> str | None:
    return next((v for v, held in labels.items() if label in held), None)


def emergency_rotate(
    engine: RotationEngine, secret_arn: str, now: datetime, timeout: float = TIMEOUT_SECONDS
) -> EmergencyOutcome:
    """Rotate ``secret_arn`` now and revoke what came before (see the module docstring). The caller has
    checked that the secret exists, is a primary and has a rotation function."""
    outcome = EmergencyOutcome(secret_arn)
    try:
        _rotate(engine, outcome, now, time.monotonic() + timeout)
    except InvocationError as exc:
        outcome.succeeded, outcome.error = False, str(exc)
    details: dict[str, Any] = {"versionId": outcome.version_id, "actions": outcome.actions}
    if outcome.error:
        details["error"] = outcome.error
    engine.record(EVENT_NAME, secret_arn, now, {"succeeded": outcome.succeeded, **details})
    return outcome


def _rotate(engine: RotationEngine, outcome: EmergencyOutcome, now: datetime, deadline: float) -> None:
    table = schema.sm_secrets
    with engine.engine.connect() as conn:
        secret = conn.execute(select(table).where(table.c.arn == outcome.secret_arn)).first()
    if secret is None:
        outcome.error = "the secret no longer exists"
        return
    function = functions.lookup(engine.engine, secret.rotation_lambda_arn or "")
    if function is None:
        outcome.error = f"no rotation function is registered as {secret.rotation_lambda_arn}"
        return
    if function.account_id != secret.account_id:
        outcome.error = f"the function {function.arn} is of another account than the secret's: it never runs"
        return
    with_values = {v.version_id for v in engine.store.versions(secret.secret_id) if not v.placeholder}
    before = [v for v, labels in _labels(engine, secret.secret_id).items() if labels and v in with_values]

    token = engine.in_progress(secret.secret_id)
    if token is not None:
        outcome.actions.append(f"resumed the rotation already in progress (version {token}) at once")
    else:
        token = str(uuid.uuid4())
        try:
            started = engine.start(secret.secret_id, token, now.timestamp())
        except AWSError:  # ResourceNotFoundException: deleted since it was read above
            outcome.error = "the secret no longer exists"
            return
        if not started:
            token = engine.in_progress(secret.secret_id) or token  # queued meanwhile by another call
        outcome.actions.append(f"started a rotation to version {token} with function {function.name}")
    outcome.version_id = token
    run = engine.run_now(secret.secret_id, now, deadline)
    if run is not None and not run.succeeded:
        outcome.error = f"the rotation did not complete: {run.error} (it is retried with backoff)"
        return
    labels = _labels(engine, secret.secret_id)
    if _holder(labels, _CURRENT) != token:
        outcome.error = f"the rotation to version {token} was cancelled before it finished"
        return
    outcome.actions.append(f"version {token} is AWSCURRENT")
    previous = _holder(labels, _PREVIOUS)
    earlier = [v for v in dict.fromkeys([*before, *([previous] if previous else [])]) if v != token]

    if function.kind != "builtin":
        outcome.actions.append(
            f"the function {function.name} is a {function.kind} function, not a built-in database "
            "rotator: Khoa cannot revoke or check the earlier values; revoke the credentials of "
            f"version(s) {', '.join(earlier) or '(none)'} by hand"
        )
        outcome.succeeded = True
        return

    client = engine.client_for(function, secret.region, now)
    rotator = DatabaseRotator(function.target)
    arn = outcome.secret_arn
    if previous is not None and previous != token:
        revoked = call_redacted(
            "revokePrevious", client, lambda: rotator.revoke_previous(client, arn, previous)
        )
        if revoked:
            outcome.actions.append(
                f"gave the previous user {revoked} (version {previous}) a new password that is stored nowhere"
            )
    still: list[str] = []
    for version_id in earlier:
        username, accepted = call_redacted(
            "testRevoked", client, functools.partial(rotator.still_accepted, client, arn, version_id)
        )
        if accepted:
            still.append(f"version {version_id} (user {username})")
        else:
            outcome.actions.append(
                f"checked that the credentials of version {version_id} (user {username}) are refused"
            )
    if still:
        outcome.error = f"the earlier credentials still log in: {', '.join(still)}"
        return
    if previous is not None and previous != token:
        call_redacted(
            "removePrevious",
            client,
            lambda: client.update_secret_version_stage(
                SecretId=arn, VersionStage=_PREVIOUS, RemoveFromVersionId=previous
            ),
        )
        outcome.actions.append(f"removed AWSPREVIOUS from version {previous}: no earlier value is valid")
    outcome.succeeded = True
