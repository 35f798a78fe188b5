"""The response to a leak: make a leaked value worthless now, and say so.

``respond`` runs for ReportLeakedValues (``Respond`` true; ``khoa scan --respond``) on the live matches:

- an **IAM user's access key**: deactivated at once and the user quarantined with the AWS-managed
  policy ``AWSCompromisedKeyQuarantineV2`` (in Khoa it denies every action), as AWS does when it finds
  one of its keys exposed; the key is left for an administrator to delete once the user's activity is
  reviewed. The account root's key is deactivated when the root has another active key (a policy
  cannot restrict the root); its only key is left active with a critical alert, since an account
  whose root has no key could not be administered any more;
- a **secret** with a rotation function: an emergency rotation now (khoa.secret_rotation.emergency:
  the new value, then the earlier ones revoked and checked refused); without one, a high-severity
  alert that says the value must be changed by hand;
- a **SecureString** parameter, or an unexpired **STS credential**: an alert naming it (Khoa cannot
  know what the parameter's value unlocks; a role's sessions are revoked by its administrator).

Only a match that proves a leak is responded to (check.py): a secret access key, a session token, a
secret's or SecureString's value, never an access key id, which is no secret. A match the caller may
not see (visibility.py: a secret it may not describe...) is responded to all the same, the value
being the proof, but the Response returned to the caller names nothing: the wildcard ARN of its
type and what was done.

Each response is recorded as a ``LeakResponse`` service event (eventSource ``khoa-leaks.amazonaws.com``),
from which the ``secret-leaked`` alert rule raises one alert per response; these name the resource
(for the account's administrators). Responses never carry a value. Khoa acts as itself here (the
caller was authorised for the report, not for IAM or Secrets Manager): the other services' handlers
are called as the account root, without their authorisation.

``emergency_rotate`` is EmergencyRotateSecret (``khoa secrets emergency-rotate``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

from khoa.access import aws_managed
from khoa.audit.events import background
from khoa.auth.principal import Principal
from khoa.protocol.context import RequestContext
from khoa.protocol.errors import AWSError
from khoa.services.leaks.backend import LeaksBackend
from khoa.services.leaks.visibility import hidden_arn, noun

log = logging.getLogger("khoa.leaks")

QUARANTINED = "access-key-quarantined"
ROTATION_STARTED = "emergency-rotation-started"
ALERTED = "alerted"
EVENT_NAME = "LeakResponse"
# One report answers within the SDKs' default read timeout (60 s) however many secrets it rotates:
# rotations past this budget are queued and left to `khoa secrets emergency-rotate`.
REPORT_BUDGET_SECONDS = 45.0
EMERGENCY_TIMEOUT_SECONDS = 50.0
_QUARANTINE_ARN = aws_managed.arn_of(aws_managed.QUARANTINE)
_HIDDEN_ACTIONS = {
    QUARANTINED: "quarantined",
    ROTATION_STARTED: "started an emergency rotation of",
    ALERTED: "raised an alert about",
}
_RESOURCE_TYPES = {
    "secret": "AWS::SecretsManager::Secret",
    "parameter": "AWS::SSM::Parameter",
    "access-key": "AWS::IAM::AccessKey",
    "sts-credential": "AWS::STS::AssumedRole",
}


@dataclass
class _Response:
    resource_arn: str
    action: str
    detail: str
    severity: str = "high"
    extra: dict[str, Any] = field(default_factory=dict)

    def wire(self) -> dict[str, Any]:
        return {"ResourceArn": self.resource_arn, "Action": self.action, "Detail": self.detail[:1000]}

    def hidden(self, resource_type: str, account_id: str) -> dict[str, Any]:
        """What the caller is told of a response to a match it may not see: what was done, to "one of
        this account's" resources."""
        what = _HIDDEN_ACTIONS.get(self.action, "responded to")
        detail = (
            f"Khoa {what} {noun(resource_type)} of this account whose value this report matched. You "
            "may not describe it, so it is not named here; the account's administrators find it in the "
            "trail (LeakResponse event) and in the secret-leaked alert."
        )
        return {"ResourceArn": hidden_arn(resource_type, account_id), "Action": self.action, "Detail": detail}


def _as_khoa(ctx: RequestContext, region: str | None = None) -> RequestContext:
    """The call's context acting as the account itself (the account root), in ``region``."""
    return replace(ctx, principal=Principal.account_root(ctx.account_id), region=region or ctx.region)


def _call(backend: LeaksBackend, service: str, operation: str, ctx: RequestContext, **params: Any) -> Any:
    return backend.services[service].handlers[operation](ctx, params)


# -- access keys -----------------------------------------------------------------------------------------
def _quarantine(backend: LeaksBackend, ctx: RequestContext, match: dict[str, Any]) -> _Response:
    arn = match["ResourceArn"]
    key_id = match.get("AccessKeyId", "")
    extra = {"accessKeyId": key_id}
    if arn.endswith(":root"):
        return _root_key(backend, ctx, arn, key_id)
    user = arn.rsplit("/", 1)[-1]
    _call(backend, "iam", "UpdateAccessKey", ctx, UserName=user, AccessKeyId=key_id, Status="Inactive")
    how = f"attached {_QUARANTINE_ARN}"
    try:
        _call(backend, "iam", "AttachUserPolicy", ctx, UserName=user, PolicyArn=_QUARANTINE_ARN)
    except AWSError as error:
        if error.code != "LimitExceeded":
            raise
        # ten managed policies attached already: the same document as an inline policy
        document = aws_managed.document(_QUARANTINE_ARN) or ""
        _call(
            backend,
            "iam",
            "PutUserPolicy",
            ctx,
            UserName=user,
            PolicyName=aws_managed.QUARANTINE,
            PolicyDocument=document,
        )
        how = f"put the inline policy {aws_managed.QUARANTINE} (the user has ten managed policies)"
    return _Response(
        arn,
        QUARANTINED,
        f"deactivated the access key {key_id} of user {user} and {how}, which denies every action; "
        "review the user's activity, then delete the key and detach the policy",
        "high",
        extra,
    )


def _root_key(backend: LeaksBackend, ctx: RequestContext, arn: str, key_id: str) -> _Response:
    """The account root's key: deactivated when the root has another active key; its only one is left
    active (an account whose root has no key cannot be administered any more: Khoa has no way back)
    with a critical alert saying what to do. A policy cannot restrict the root, so no quarantine."""
    keys = _call(backend, "iam", "ListAccessKeys", ctx)["AccessKeyMetadata"]
    others = [k for k in keys if k["AccessKeyId"] != key_id and k["Status"] == "Active"]
    if not others:
        return _Response(
            arn,
            ALERTED,
            f"the account root's only active access key {key_id} leaked; Khoa did not deactivate it, "
            "which would leave the account without its root: create a second root key now (aws iam "
            "create-access-key, as the root), switch to it, then deactivate and delete this one",
            "critical",
            {"accessKeyId": key_id},
        )
    _call(backend, "iam", "UpdateAccessKey", ctx, AccessKeyId=key_id, Status="Inactive")
    return _Response(
        arn,
        QUARANTINED,
        f"deactivated the account root's access key {key_id} (a policy cannot restrict the root); "
        "review what it did, then delete it",
        "critical",
        {"accessKeyId": key_id},
    )


# -- secrets -------------------------------------------------------------------------------------------
def _describe(backend: LeaksBackend, ctx: RequestContext, secret_id: str) -> tuple[RequestContext, Any]:
    """DescribeSecret of the secret, or of its primary when ``secret_id`` is a replica (rotation
    happens on the primary), with the context of the primary's region."""
    described = _call(backend, "secretsmanager", "DescribeSecret", ctx, SecretId=secret_id)
    primary = described.get("PrimaryRegion")
    if primary and primary != ctx.region:
        ctx = replace(ctx, region=primary)
        described = _call(backend, "secretsmanager", "DescribeSecret", ctx, SecretId=described["Name"])
    return ctx, described


def _has_rotation(described: dict[str, Any]) -> bool:
    return bool(described.get("RotationLambdaARN"))


def _rotate(
    backend: LeaksBackend, ctx: RequestContext, described: dict[str, Any], timeout: float
) -> _Response:
    arn, name = described["ARN"], described["Name"]
    if timeout <= 0:
        return _queue(backend, ctx, arn, name)
    result = backend.rotation.emergency(arn, ctx.now, timeout)
    version = result.get("VersionId", "")
    actions = "; ".join(result.get("Actions", []))
    extra = {"versionId": version, "actions": result.get("Actions", [])}
    if result.get("Succeeded"):
        return _Response(arn, ROTATION_STARTED, f"emergency rotation of {name}: {actions}", "high", extra)
    return _Response(
        arn,
        ROTATION_STARTED,
        f"the emergency rotation of {name} did not complete: {result.get('Error', '')} "
        f"(done: {actions or 'nothing'}); run `khoa secrets emergency-rotate {arn}`",
        "critical",
        extra,
    )


def _queue(backend: LeaksBackend, ctx: RequestContext, arn: str, name: str) -> _Response:
    """Past the report's time budget: queue a rotation for the job runner (without the revocation of
    the earlier values, which needs `khoa secrets emergency-rotate`)."""
    _call(backend, "secretsmanager", "RotateSecret", ctx, SecretId=arn, RotateImmediately=True)
    backend.poke_jobs()
    return _Response(
        arn,
        ROTATION_STARTED,
        f"queued a rotation of {name} (this report's time ran out before it could run here); the "
        f"earlier values stay valid until you run `khoa secrets emergency-rotate {arn}`",
        "critical",
    )


def _secret(
    backend: LeaksBackend, ctx: RequestContext, match: dict[str, Any], done: set[str], deadline: float
) -> _Response | None:
    ctx, described = _describe(backend, ctx, match["ResourceArn"])
    arn = described["ARN"]
    if arn in done:
        return None  # another candidate of this report matched the same secret: rotated once
    done.add(arn)
    version = match.get("VersionId", "")
    stages = ",".join(match.get("VersionStages") or []) or "no label"
    where = f"version {version} ({stages})" + (f", field {match['Field']}" if match.get("Field") else "")
    if described.get("DeletedDate"):
        return _Response(
            arn,
            ALERTED,
            f"the value of secret {described['Name']} ({where}) leaked; the secret is scheduled for "
            "deletion but its value still works where it is used: change that credential now",
            "high",
            {"versionId": version},
        )
    if not _has_rotation(described):
        return _Response(
            arn,
            ALERTED,
            f"the live value of secret {described['Name']} ({where}) leaked and the secret has NO "
            "rotation configured: change the credential it holds and put the new value now",
            "high",
            {"versionId": version},
        )
    return _rotate(backend, ctx, described, min(EMERGENCY_TIMEOUT_SECONDS, deadline - time.monotonic()))


# -- what Khoa only reports ------------------------------------------------------------------------------
def _parameter(match: dict[str, Any]) -> _Response:
    arn = match["ResourceArn"]
    name = arn.split(":parameter", 1)[-1] or arn
    version = match.get("VersionId", "")
    return _Response(
        arn,
        ALERTED,
        f"the live value of SecureString parameter {name} (version {version}) leaked: change what it "
        "unlocks and put a new value (ssm put-parameter --overwrite)",
        "high",
        {"versionId": version},
    )


def _session(match: dict[str, Any]) -> _Response:
    arn = match["ResourceArn"]
    key_id = match.get("AccessKeyId", "")
    return _Response(
        arn,
        ALERTED,
        f"a live temporary credential {key_id} of {arn} leaked: it works until it expires; deny the "
        "role's older sessions (a policy with aws:TokenIssueTime) or remove what the role may do",
        "high",
        {"accessKeyId": key_id},
    )


# -- recording ---------------------------------------------------------------------------------------
def _record(backend: LeaksBackend, ctx: RequestContext, match: dict[str, Any], response: _Response) -> None:
    resource_type = match.get("ResourceType", "")
    details = {
        "resourceArn": response.resource_arn,
        "resourceType": resource_type,
        "action": response.action,
        "severity": response.severity,
        "detail": response.detail[:1000],
        **response.extra,
    }
    event = background(
        service="khoa-leaks",
        event_name=EVENT_NAME,
        account_id=ctx.account_id,
        region=ctx.region,
        now=ctx.now,
        details=details,
        resources=[
            {
                "accountId": ctx.account_id,
                "type": _RESOURCE_TYPES.get(resource_type, resource_type),
                "ARN": response.resource_arn,
            }
        ],
    )
    backend.audit.write([event])


def _one(
    backend: LeaksBackend, ctx: RequestContext, match: dict[str, Any], done: set[str], deadline: float
) -> _Response | None:
    kind = match.get("ResourceType")
    key = f"{kind}:{match.get('ResourceArn')}:{match.get('AccessKeyId', '')}"
    if kind != "secret":
        if key in done:
            return None
        done.add(key)
    try:
        if kind == "access-key":
            return _quarantine(backend, ctx, match)
        if kind == "secret":
            return _secret(backend, ctx, match, done, deadline)
        if kind == "parameter":
            return _parameter(match)
        return _session(match)
    except AWSError as error:
        # the resource changed meanwhile (deleted, deactivated...): say that the response failed
        return _Response(
            match.get("ResourceArn", ""),
            ALERTED,
            f"the automatic response to this leak failed ({error.code}): respond by hand",
            "critical",
        )


def respond(
    backend: LeaksBackend, ctx: RequestContext, matches: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Respond to every live match that proves a leak once per resource (see the module docstring);
    the Response dicts, naming only what the caller may see."""
    deadline = time.monotonic() + REPORT_BUDGET_SECONDS
    done: set[str] = set()
    responses: list[dict[str, Any]] = []
    for match in matches:
        if match.get("Status") != "live" or match.get("ProvesLeak") is not True:
            continue  # former: nothing to stop; a key id: no leak
        where = _as_khoa(ctx, match.get("Region"))
        response = _one(backend, where, match, done, deadline)
        if response is None:
            continue
        _record(backend, where, match, response)
        log.warning("leak response: %s %s", response.action, response.resource_arn)
        if match.get("Shown") is True:
            responses.append(response.wire())
            continue
        hidden = response.hidden(str(match.get("ResourceType")), ctx.account_id)
        if hidden not in responses:  # as its matches, hidden responses that say the same are said once
            responses.append(hidden)
    return responses


# -- EmergencyRotateSecret ---------------------------------------------------------------------------
def emergency_rotate(backend: LeaksBackend, ctx: RequestContext, secret_id: str) -> dict[str, Any]:
    """Rotate the secret now and make its earlier values stop working; what was done (``Actions``).
    The caller was authorised for it (``khoa:EmergencyRotateSecret`` and ``secretsmanager:RotateSecret``
    on the secret)."""
    khoa = _as_khoa(ctx)
    described = _call(backend, "secretsmanager", "DescribeSecret", khoa, SecretId=secret_id)
    if described.get("DeletedDate"):
        raise AWSError(
            "InvalidRequestException",
            "You can't perform this operation on the secret because it was marked for deletion.",
        )
    primary = described.get("PrimaryRegion")
    if primary and primary != ctx.region:
        raise AWSError(
            "InvalidRequestException",
            f"Operation not permitted on a replica secret. Call must be made in primary secret's region "
            f"({primary}).",
        )
    if not _has_rotation(described):
        raise AWSError(
            "InvalidRequestException",
            f"The secret {described['Name']} has no rotation function, so Khoa cannot rotate it: configure "
            "one (RotateSecret with RotationLambdaARN), or change the credential and put the new value "
            "by hand.",
        )
    result = backend.rotation.emergency(described["ARN"], ctx.now, EMERGENCY_TIMEOUT_SECONDS)
    actions = [str(a) for a in result.get("Actions", [])]
    if not result.get("Succeeded"):
        raise AWSError(
            "EmergencyRotationFailedException",
            f"{result.get('Error') or 'the emergency rotation failed'}. Done: "
            f"{'; '.join(actions) or 'nothing'}.",
        )
    return {
        "ARN": described["ARN"],
        "Name": described["Name"],
        "VersionId": result.get("VersionId", ""),
        "Actions": actions,
    }
