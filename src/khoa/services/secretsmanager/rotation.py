"""RotateSecret / CancelRotateSecret bookkeeping: rotation configuration and NextRotationDate.

Running the rotation function's steps is the rotation engine's job (khoa.secret_rotation.engine, reached
through the backend's RotationControl); here Khoa records the configuration exactly as AWS reports it
and queues or cancels the rotation.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from khoa.clock import from_epoch
from khoa.protocol.context import RequestContext
from khoa.services.secretsmanager import errors, names, schedule, stages
from khoa.services.secretsmanager.backend import SecretsBackend

_LAMBDA_ARN = re.compile(r"^arn:aws:lambda:[a-z0-9-]+:\d{12}:function:[A-Za-z0-9_-]+(:[A-Za-z0-9_$-]+)?$")


_INCOMPLETE = "A previous rotation isn't complete. That rotation will be reattempted."
_NO_LAMBDA = (
    "You tried to enable rotation on a secret that doesn't already have a Lambda function ARN configured "
    "and you didn't include such an ARN as a parameter in this call."
)


def rotate_secret(sm: SecretsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    record = names.require(ctx, sm.store, params["SecretId"])
    lambda_arn = params.get("RotationLambdaARN") or record.rotation_lambda_arn
    if not lambda_arn and not record.owning_service:
        raise errors.invalid_request(_NO_LAMBDA)
    if lambda_arn and not _LAMBDA_ARN.match(lambda_arn):
        raise errors.invalid_parameter(
            "RotationLambdaARN must be a Lambda function ARN (arn:aws:lambda:REGION:ACCOUNT:function:NAME)."
        )
    # Khoa has no Lambda function policies: a function of another account than the secret's never
    # grants Secrets Manager the right to invoke it for this secret, and AWS refuses such a function.
    if lambda_arn and (
        lambda_arn.split(":")[4] != record.account_id or not sm.rotation.has_function(lambda_arn)
    ):
        raise errors.cannot_invoke_function()
    current_stages = sm.store.read_stages(record.secret_id)
    immediately = params.get("RotateImmediately", True)
    if (immediately and sm.rotation.in_progress(record.secret_id)) or (
        stages.PENDING in current_stages
        and current_stages.get(stages.CURRENT) != current_stages[stages.PENDING]
    ):
        raise errors.invalid_request(_INCOMPLETE)
    token = params.get("ClientRequestToken") or str(uuid.uuid4())
    if (
        sm.store.version(record.secret_id, token) is not None
        and sm.rotation.in_progress(record.secret_id) != token
    ):
        # "This value becomes the VersionId of the new version" (RotateSecret API reference): a rotation
        # always makes a new version. A token naming an existing one (other than the retried token of
        # the rotation in progress) would have the rotation relabel that version, and its value
        # (perhaps one rotated away) would become AWSCURRENT again.
        raise errors.invalid_request(
            f"You can't use ClientRequestToken {token} because that value is already in use for a version "
            f"of secret {record.arn}. A rotation creates a new version."
        )
    rules = params.get("RotationRules") or record.rules
    if rules is not None:
        schedule.validate(rules)
    # Rotating immediately counts as a rotation now; otherwise the schedule runs on from the last one.
    last = from_epoch(record.last_rotated_at)
    base = ctx.now if params.get("RotateImmediately", True) or last is None else last
    next_at = schedule.next_rotation(rules, base) if rules else None
    configuration = {
        "rotation_enabled": rules is not None,
        "rotation_lambda_arn": lambda_arn,
        "rotation_rules": json.dumps(rules) if rules else None,
        "next_rotation_at": next_at.timestamp() if next_at else None,
        "last_changed_at": ctx.now.timestamp(),
    }
    if immediately:
        # The checks above read before this call's transaction, so concurrent calls may all pass
        # them. Starting is conditional (the engine locks the secret, then queues only if nothing is
        # queued): exactly one starts, its configuration written with it, and the others are refused
        # as AWS refuses a RotateSecret during a rotation, with nothing written.
        if not sm.rotation.start(record.secret_id, token, ctx.now.timestamp(), configure=configuration):
            raise errors.invalid_request(_INCOMPLETE)
        sm.poke_jobs()
    else:
        sm.store.update(record.secret_id, **configuration)
    return {"ARN": record.arn, "Name": record.name, "VersionId": token}


def cancel_rotate_secret(sm: SecretsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    record = names.require(ctx, sm.store, params["SecretId"])
    if not record.rotation_enabled and not record.rotation_lambda_arn:
        raise errors.invalid_request(_NO_LAMBDA)
    sm.store.update(
        record.secret_id, rotation_enabled=False, next_rotation_at=None, last_changed_at=ctx.now.timestamp()
    )
    sm.rotation.cancel(record.secret_id)
    result: dict[str, Any] = {"ARN": record.arn, "Name": record.name}
    pending = sm.store.read_stages(record.secret_id).get(stages.PENDING)
    if pending:
        result["VersionId"] = pending
    return result


OPERATIONS = {"RotateSecret": rotate_secret, "CancelRotateSecret": cancel_rotate_secret}
