"""Building CloudTrail records from requests, with CloudTrail's redaction.

Request and response elements use lowerCamelCase member names as CloudTrail does. Any member whose
botocore shape is marked sensitive, or whose name says it is secret, is replaced by
``HIDDEN_DUE_TO_SECURITY_REASONS``; blobs (plaintexts, ciphertexts, key material) are left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from khoa.auth.principal import Principal
from khoa.ids import new_event_id
from khoa.protocol.model import ServiceModel

HIDDEN = "HIDDEN_DUE_TO_SECURITY_REASONS"
EVENT_VERSION = "1.08"
_SECRET_NAMES = {
    "secretaccesskey",
    "sessiontoken",
    "plaintext",
    "privatekeyplaintext",
    "sharedsecret",
    "secretstring",
    "secretbinary",
    "randompassword",
    "password",
    "value",
    "oldpassword",
    "newpassword",
    "encryptedkeymaterial",
    "importtoken",
}
# Secret members left out of the record entirely rather than shown as hidden: khoa-leaks' candidate
# values (a check's record says which candidate Ids were checked, and nothing of what they were).
_LEFT_OUT = frozenset({("khoa-leaks", "Value")})
_READ_PREFIXES = (
    "Get",
    "List",
    "Describe",
    "BatchGet",
    "Lookup",
    "Simulate",
    "Validate",
    "Decrypt",
    "Encrypt",
    "GenerateDataKey",
    "GenerateRandom",
    "GenerateMac",
    "VerifyMac",
    "Verify",
    "Sign",
    "ReEncrypt",
    "DeriveSharedSecret",
    "AssumeRole",
)
_RESOURCE_TYPES = {
    "kms": "AWS::KMS::Key",
    "secretsmanager": "AWS::SecretsManager::Secret",
    "ssm": "AWS::SSM::Parameter",
    "iam": "AWS::IAM::Entity",
    "sts": "AWS::IAM::Role",
}


def is_read_only(operation: str) -> bool:
    return operation.startswith(_READ_PREFIXES)


def _camel(name: str) -> str:
    return name[:1].lower() + name[1:]


def redact(model: ServiceModel, shape_name: str | None, value: Any) -> Any:
    """Copy ``value`` following its shape, hiding sensitive members and dropping blobs."""
    if shape_name is None:
        return None
    shape = model.shapes[shape_name]
    kind = shape["type"]
    if shape.get("sensitive"):
        return HIDDEN
    if kind == "structure" and isinstance(value, dict):
        out: dict[str, Any] = {}
        for name, member in shape.get("members", {}).items():
            if name not in value or value[name] is None:
                continue
            member_shape = model.shapes[member["shape"]]
            if member_shape["type"] == "blob":
                continue
            if name.lower() in _SECRET_NAMES or member_shape.get("sensitive"):
                if (model.service, name) not in _LEFT_OUT:
                    out[_camel(name)] = HIDDEN
                continue
            out[_camel(name)] = redact(model, member["shape"], value[name])
        return out
    if kind == "list" and isinstance(value, list):
        return [redact(model, shape["member"]["shape"], item) for item in value]
    if kind == "map" and isinstance(value, dict):
        return {k: redact(model, shape["value"]["shape"], v) for k, v in value.items()}
    if kind == "blob":
        return None
    if kind == "timestamp" and isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%b %d, %Y, %I:%M:%S %p")
    return value


def user_identity(principal: Principal | None, access_key_id: str = "") -> dict[str, Any]:
    if principal is None:
        identity: dict[str, Any] = {"type": "Unknown"}
        if access_key_id:
            identity["accessKeyId"] = access_key_id
        return identity
    identity = {
        "type": principal.kind,
        "principalId": principal.user_id,
        "arn": principal.arn,
        "accountId": principal.account_id,
    }
    if principal.access_key_id:
        identity["accessKeyId"] = principal.access_key_id
    if principal.kind == "IAMUser":
        identity["userName"] = principal.name
    if principal.kind == "AssumedRole":
        identity["sessionContext"] = {
            "sessionIssuer": {
                "type": "Role",
                "principalId": principal.principal_id,
                "arn": f"arn:aws:iam::{principal.account_id}:role/{principal.name}",
                "accountId": principal.account_id,
                "userName": principal.name,
            },
            "attributes": {"mfaAuthenticated": "false"},
        }
        if principal.source_identity:
            identity["sessionContext"]["sourceIdentity"] = principal.source_identity
    return identity


def username_of(principal: Principal | None) -> str | None:
    if principal is None:
        return None
    if principal.kind == "Root":
        return "root"
    if principal.kind == "AssumedRole":
        return principal.session_name
    return principal.name


def acting_principal(principal: Principal | None) -> str | None:
    """Who acted, as the alert rules key it: the role for an assumed-role session (sessions come and
    go; the role is what is granted access), otherwise the principal's own ARN."""
    if principal is None or principal.kind in ("", "Unknown", "AWSService"):
        return None
    if principal.kind == "AssumedRole":
        return f"arn:aws:iam::{principal.account_id}:role/{principal.name}"
    return principal.arn or None


@dataclass
class AuditEvent:
    """One CloudTrail record plus the columns LookupEvents filters on and alert rules read."""

    record: dict[str, Any]
    account_id: str
    region: str
    event_time: float
    event_source: str
    event_name: str
    read_only: bool
    username: str | None = None
    access_key_id: str | None = None
    error_code: str | None = None
    resources: list[dict[str, str]] = field(default_factory=list)
    event_type: str = "AwsApiCall"
    principal_arn: str | None = None
    source_ip: str = ""

    @property
    def event_id(self) -> str:
        return str(self.record["eventID"])


_ARN_KEYS = ("ARN", "Arn", "KeyId", "SecretId", "RoleArn", "KeyArn", "SourceKeyId")


def _resources(
    service: str, account_id: str, region: str, params: dict[str, Any] | None, result: dict[str, Any] | None
) -> list[dict[str, str]]:
    """The resources a call touched, as ARNs (CloudTrail names resources by ARN)."""
    arns: list[str] = []
    for source in (result, params):
        if not source:
            continue
        metadata = source.get("KeyMetadata")
        if isinstance(metadata, dict):
            _add_arn(arns, metadata.get("Arn"))
        for key in _ARN_KEYS:
            if key in source:
                _add_arn(arns, source[key])
    if service == "ssm" and params:
        names = [params["Name"]] if params.get("Name") else list(params.get("Names", []))
        for name in names:
            if isinstance(name, str) and not name.startswith("arn:"):
                name = f"arn:aws:ssm:{region}:{account_id}:parameter/{name.split(':')[0].lstrip('/')}"
            if isinstance(name, str) and name not in arns:
                arns.append(name)
    if not arns:
        return []
    resource_type = _RESOURCE_TYPES.get(service, f"AWS::{service}")
    return [{"accountId": account_id, "type": resource_type, "ARN": arn} for arn in arns[:8]]


def _add_arn(arns: list[str], value: object) -> None:
    if isinstance(value, str) and value.startswith("arn:") and value not in arns:
        arns.append(value)


def event_time(now: datetime) -> str:
    """CloudTrail's eventTime form, ``2026-11-29T08:00:00Z`` (isoformat is several times faster than
    strftime, and this runs for every call)."""
    return now.astimezone(UTC).isoformat(timespec="seconds")[:19] + "Z"


def _column_text(value: str, limit: int) -> str:
    """``value`` as a bounded, NUL-free column value (NUL becomes U+FFFD)."""
    return value.replace("\x00", "\ufffd")[:limit]


def build(
    *,
    model: ServiceModel | None,
    service: str,
    operation: str,
    region: str,
    request_id: str,
    principal: Principal | None,
    access_key_id: str,
    source_ip: str,
    user_agent: str,
    params: dict[str, Any] | None,
    result: dict[str, Any] | None,
    error_code: str | None,
    error_message: str | None,
    now: datetime,
    recipient_account: str,
    event_id: str | None = None,
) -> AuditEvent:
    known = model is not None and operation in model.operations
    if not known:
        # The name of an operation that does not exist is whatever the caller sent (a 60,000-character
        # X-Amz-Target, an Action with a NUL): cut to what the event_name column and PostgreSQL take,
        # or the trail would refuse the record and with it the request (503).
        operation = _column_text(operation, 128)
    access_key_id = _column_text(access_key_id, 128) if access_key_id else access_key_id
    read_only = is_read_only(operation)
    request_parameters = None
    response_elements = None
    if model is not None and known:
        op = model.operations[operation]
        if params is not None:
            request_parameters = redact(model, op.get("input", {}).get("shape"), params) or None
        if result is not None and not read_only:
            response_elements = redact(model, op.get("output", {}).get("shape"), result) or None
    account = principal.account_id if principal is not None else recipient_account
    resources = _resources(service, recipient_account, region, params, result) if error_code is None else []
    record: dict[str, Any] = {
        "eventVersion": EVENT_VERSION,
        "userIdentity": user_identity(principal, access_key_id),
        "eventTime": event_time(now),
        "eventSource": f"{service}.amazonaws.com",
        "eventName": operation,
        "awsRegion": region,
        "sourceIPAddress": source_ip,
        "userAgent": user_agent,
        "requestParameters": request_parameters,
        "responseElements": response_elements,
        "requestID": request_id,
        "eventID": event_id or new_event_id(),
        "readOnly": read_only,
        "resources": resources,
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": recipient_account or account,
        "eventCategory": "Management",
    }
    if error_code is not None:
        record["errorCode"] = error_code
        record["errorMessage"] = error_message or ""
    return AuditEvent(
        record=record,
        account_id=recipient_account or account,
        region=region,
        event_time=now.timestamp(),
        event_source=record["eventSource"],
        event_name=operation,
        read_only=read_only,
        username=username_of(principal),
        access_key_id=access_key_id or (principal.access_key_id if principal else None),
        error_code=error_code,
        resources=resources,
        principal_arn=acting_principal(principal),
        source_ip=source_ip,
    )


def background(
    *,
    service: str,
    event_name: str,
    account_id: str,
    region: str,
    now: datetime,
    details: dict[str, Any],
    resources: list[dict[str, str]] | None = None,
) -> AuditEvent:
    """An event for work Khoa did on its own (scheduled deletion, automatic rotation, seal/unseal)."""
    record: dict[str, Any] = {
        "eventVersion": EVENT_VERSION,
        "userIdentity": {"type": "AWSService", "invokedBy": f"{service}.amazonaws.com"},
        "eventTime": event_time(now),
        "eventSource": f"{service}.amazonaws.com",
        "eventName": event_name,
        "awsRegion": region,
        "sourceIPAddress": f"{service}.amazonaws.com",
        "userAgent": f"{service}.amazonaws.com",
        "requestParameters": None,
        "responseElements": None,
        "additionalEventData": details,
        "eventID": new_event_id(),
        "readOnly": False,
        "resources": resources or [],
        "eventType": "AwsServiceEvent",
        "managementEvent": True,
        "recipientAccountId": account_id,
        "eventCategory": "Management",
    }
    return AuditEvent(
        record=record,
        account_id=account_id,
        region=region,
        event_time=now.timestamp(),
        event_source=record["eventSource"],
        event_name=event_name,
        read_only=False,
        resources=resources or [],
        event_type="AwsServiceEvent",
        source_ip=record["sourceIPAddress"],
    )
