"""Console pages for Secrets Manager: the list, a secret's page, revealing a value, and the actions
(create, put a new value, rotate now, cancel rotation, delete with a recovery window, restore).

Everything goes through the API as the signed-in principal, so what a page shows is what that
principal may read, and every read (a reveal above all) is in the trail as the API recorded it.
Secret names contain slashes, so a secret is named by ``?id=`` in GETs and a form field ``id`` in
POSTs, never by a path segment. A revealed value is rendered once into the answer to a POST (answers
are ``no-store``): it never travels in a URL, a notice, an error message or a log line.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlencode

from botocore.exceptions import ClientError

from khoa.webconsole.http import BadRequest, Page, Redirect, Request, Route, page_arguments

MAX_PAGE = 50  # one API page per console page, whatever the number of secrets
VERSIONS_PAGE = 20
# How much of the secret's recent trail the page reads to find its latest rotation outcome.
ROTATION_EVENTS_PAGE = 50
REVEAL_SECONDS = 30
_DENIED_CODES = frozenset({"AccessDeniedException", "AccessDenied", "UnauthorizedOperation"})
_STAGES = ("AWSCURRENT", "AWSPREVIOUS", "AWSPENDING")


def detail_url(secret_id: str) -> str:
    """A secret's page; the name or ARN (slashes and all) is a query value."""
    return "/console/secrets/detail?id=" + quote(secret_id, safe="")


def _denied(error: ClientError) -> bool:
    """Whether an API error means "not allowed to read this" (a section shows so; the page stays)."""
    code = error.response.get("Error", {}).get("Code", "")
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in _DENIED_CODES or status == 403


def _per_page(request: Request) -> int:
    raw = request.arg("per_page", str(MAX_PAGE))
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest("per_page must be a whole number.") from None
    if not 1 <= value <= MAX_PAGE:
        raise BadRequest(f"per_page must be between 1 and {MAX_PAGE}.")
    return value


def secret_list(request: Request) -> Page:
    """ListSecrets, one page of at most 50 (fast whatever the count), optionally by name prefix."""
    sm = request.client_api.client("secretsmanager")
    query = request.arg("q").strip()
    deleted = request.arg("deleted") == "1"
    per_page = _per_page(request)
    kwargs = page_arguments(per_page, request.arg("next"), IncludePlannedDeletion=deleted)
    if query:
        kwargs["Filters"] = [{"Key": "name", "Values": [query]}]
    answer = sm.list_secrets(**kwargs)
    base_query = {"q": query, "deleted": "1" if deleted else ""}
    if per_page != MAX_PAGE:
        base_query["per_page"] = str(per_page)
    kept = {name: value for name, value in base_query.items() if value}
    base = "/console/secrets" + ("?" + urlencode(kept) if kept else "")
    secrets = answer.get("SecretList", [])
    for secret in secrets:
        secret["_url"] = detail_url(secret["ARN"])
    return Page(
        "secrets/list.html",
        {
            "title": "Secrets",
            "secrets": secrets,
            "q": query,
            "deleted": deleted,
            "next_token": answer.get("NextToken"),
            "base": base,
            "first": not request.arg("next"),
        },
    )


def new_secret(request: Request) -> Page:
    return Page("secrets/new.html", {"title": "Create a secret"})


def create(request: Request) -> Redirect:
    """CreateSecret; an empty value makes a secret with no version yet (as the API allows)."""
    name = request.field("name").strip()
    if not name:
        raise BadRequest("A secret needs a name.")
    kwargs: dict[str, Any] = {"Name": name}
    description = request.field("description", "").strip()
    if description:
        kwargs["Description"] = description
    value = request.field("value", "")
    if value:
        kwargs["SecretString"] = value
    kms_key_id = request.field("kms_key_id", "").strip()
    if kms_key_id:
        kwargs["KmsKeyId"] = kms_key_id
    answer = request.client_api.client("secretsmanager").create_secret(**kwargs)
    return Redirect(detail_url(answer["ARN"]), notice=f"Secret {answer['Name']} created.")


def _versions(sm: Any, secret_id: str, next_token: str) -> dict[str, Any]:
    kwargs = page_arguments(VERSIONS_PAGE, next_token, SecretId=secret_id, IncludeDeprecated=True)
    try:
        answer = sm.list_secret_version_ids(**kwargs)
    except ClientError as error:
        if _denied(error):
            return {"denied": True, "items": [], "next": None}
        raise
    items = sorted(answer.get("Versions", []), key=lambda v: v.get("CreatedDate") or 0, reverse=True)
    return {"denied": False, "items": items, "next": answer.get("NextToken")}


def _policy(sm: Any, secret_id: str) -> dict[str, Any]:
    try:
        answer = sm.get_resource_policy(SecretId=secret_id)
    except ClientError as error:
        if _denied(error):
            return {"denied": True, "document": None}
        raise
    return {"denied": False, "document": answer.get("ResourcePolicy")}


def _rotation_outcome(api: Any, arn: str) -> dict[str, Any]:
    """The latest RotationSucceeded/RotationFailed the trail holds for this secret among its recent
    events (Khoa records rotation outcomes there; the failure's message never holds a value)."""
    try:
        answer = api.client("cloudtrail").lookup_events(
            LookupAttributes=[{"AttributeKey": "ResourceName", "AttributeValue": arn}],
            MaxResults=ROTATION_EVENTS_PAGE,
        )
    except ClientError as error:
        if _denied(error):
            return {"denied": True, "event": None}
        raise
    for event in answer.get("Events", []):  # newest first
        name = event.get("EventName")
        if name not in ("RotationFailed", "RotationSucceeded"):
            continue
        try:
            details = json.loads(event.get("CloudTrailEvent") or "{}").get("additionalEventData") or {}
        except ValueError:
            details = {}
        return {
            "denied": False,
            "event": {
                "name": name,
                "time": event.get("EventTime"),
                "step": details.get("step", ""),
                "error": details.get("error", ""),
                "version": details.get("versionId", ""),
            },
        }
    return {"denied": False, "event": None}


def _detail_values(request: Request, secret_id: str, versions_next: str = "") -> dict[str, Any]:
    """Everything the secret's page shows; each section a principal may not read says so."""
    api = request.client_api
    sm = api.client("secretsmanager")
    secret = sm.describe_secret(SecretId=secret_id)
    arn = secret["ARN"]
    stages = secret.get("VersionIdsToStages") or {}
    pending = [v for v, labels in stages.items() if "AWSPENDING" in labels and "AWSCURRENT" not in labels]
    rotation_configured = bool(secret.get("RotationEnabled") or secret.get("RotationLambdaARN"))
    outcome = (
        _rotation_outcome(api, arn) if rotation_configured or pending else {"denied": False, "event": None}
    )
    versions = _versions(sm, arn, versions_next)
    known_stages = sorted({label for labels in stages.values() for label in labels})
    return {
        "title": secret["Name"],
        "secret": secret,
        "arn": arn,
        "url": detail_url(arn),
        "pending": pending,
        "outcome": outcome,
        "versions": versions,
        "policy": _policy(sm, arn),
        "tags": secret.get("Tags", []),
        "replicas": secret.get("ReplicationStatus", []),
        "stages": [s for s in _STAGES if s in known_stages] + [s for s in known_stages if s not in _STAGES],
        "revealed": None,
        "reveal_seconds": REVEAL_SECONDS,
    }


def detail(request: Request) -> Page:
    secret_id = request.arg("id")
    if not secret_id:
        raise BadRequest("Which secret? Give its name or ARN as ?id=.")
    return Page("secrets/detail.html", _detail_values(request, secret_id, request.arg("versions_next")))


def _secret_id(request: Request) -> str:
    secret_id = request.field("id").strip()
    if not secret_id:
        raise BadRequest("Which secret? The form's id is empty.")
    return secret_id


def reveal(request: Request) -> Page:
    """GetSecretValue on an explicit click, rendered once into this answer (never a URL or a notice).
    A principal refused the read gets the API's 403 and no page with a value."""
    secret_id = _secret_id(request)
    stage = request.field("version_stage", "").strip()
    kwargs: dict[str, Any] = {"SecretId": secret_id}
    if stage:
        kwargs["VersionStage"] = stage
    answer = request.client_api.client("secretsmanager").get_secret_value(**kwargs)
    if "SecretString" in answer:
        revealed: dict[str, Any] = {"text": answer["SecretString"], "binary": None}
    else:
        revealed = {"text": None, "binary": len(answer.get("SecretBinary") or b"")}
    revealed.update(version=answer.get("VersionId", ""), stages=answer.get("VersionStages", []))
    values = _detail_values(request, answer.get("ARN") or secret_id)
    values["revealed"] = revealed
    return Page("secrets/detail.html", values)


def put_value(request: Request) -> Redirect:
    """PutSecretValue; the notice names the new version, never the value."""
    secret_id = _secret_id(request)
    value = request.field("value")
    if not value:
        raise BadRequest("The new value is empty.")
    answer = request.client_api.client("secretsmanager").put_secret_value(
        SecretId=secret_id, SecretString=value
    )
    return Redirect(detail_url(answer["ARN"]), notice=f"New value stored as version {answer['VersionId']}.")


def rotate(request: Request) -> Redirect:
    """RotateSecret now with the secret's configured function (the API refuses one without)."""
    secret_id = _secret_id(request)
    answer = request.client_api.client("secretsmanager").rotate_secret(SecretId=secret_id)
    return Redirect(
        detail_url(answer["ARN"]), notice=f"Rotation started: the new version is {answer['VersionId']}."
    )


def cancel_rotation(request: Request) -> Redirect:
    secret_id = _secret_id(request)
    request.require_confirmation()
    answer = request.client_api.client("secretsmanager").cancel_rotate_secret(SecretId=secret_id)
    return Redirect(detail_url(answer["ARN"]), notice="Rotation cancelled.")


def delete(request: Request) -> Redirect:
    """DeleteSecret with a recovery window (7 to 30 days): restorable until then."""
    secret_id = _secret_id(request)
    request.require_confirmation()
    try:
        days = int(request.field("recovery_days", "30"))
    except ValueError:
        raise BadRequest("The recovery window must be a whole number of days.") from None
    if not 7 <= days <= 30:
        raise BadRequest("The recovery window must be between 7 and 30 days.")
    answer = request.client_api.client("secretsmanager").delete_secret(
        SecretId=secret_id, RecoveryWindowInDays=days
    )
    return Redirect(
        detail_url(answer["ARN"]),
        notice=f"Secret scheduled for deletion in {days} days; it can be restored until then.",
    )


def restore(request: Request) -> Redirect:
    secret_id = _secret_id(request)
    answer = request.client_api.client("secretsmanager").restore_secret(SecretId=secret_id)
    return Redirect(detail_url(answer["ARN"]), notice="Secret restored.")


ROUTES = [
    Route("GET", "/console/secrets", secret_list),
    Route("GET", "/console/secrets/new", new_secret),
    Route("POST", "/console/secrets/create", create),
    Route("GET", "/console/secrets/detail", detail),
    Route("POST", "/console/secrets/reveal", reveal),
    Route("POST", "/console/secrets/put-value", put_value),
    Route("POST", "/console/secrets/rotate", rotate),
    Route("POST", "/console/secrets/cancel-rotation", cancel_rotation),
    Route("POST", "/console/secrets/delete", delete),
    Route("POST", "/console/secrets/restore", restore),
]
