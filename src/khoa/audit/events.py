"""Building CloudTrail records from requests, with CloudTrail's redaction.

Request and response elements use lowerCamelCase member names as CloudTrail does. Any member whose
botocore shape is marked sensitive, or whose name says it is secret, is replaced by
``HIDDEN_DUE_TO_SECURITY_REASONS``; blobs (plaintexts, ciphertexts, key material) are left out.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
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
    """Copy ``value`` following its shape, hiding sensitive members and dropping blobs.

    A shape is a sensitive one's HIDDEN; a structure keeps, in the shape's member order, its members
    that are present and not None, in lowerCamelCase, with secret-named or sensitive members HIDDEN
    (khoa-leaks' candidate values left out) and blob members left out; lists and maps are copied item
    by item; a blob is None; a timestamp is CloudTrail's text form; anything else (or a value that
    is not of its shape's kind) is kept as it is. Each shape's walk is made once per model (this
    runs for every call, on the event loop).
    """
    if shape_name is None:
        return None
    return _redactions(model).of(shape_name)(value)


_Redact = Callable[[Any], Any]


def _hidden(value: Any) -> Any:
    return HIDDEN


def _left_blank(value: Any) -> Any:
    return None


def _kept(value: Any) -> Any:
    return value


def _timestamp(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%b %d, %Y, %I:%M:%S %p")
    return value


def _structure(members: tuple[tuple[str, str, _Redact | None], ...]) -> _Redact:
    """``members``: (name, lowerCamelCase name, its redaction, or None to keep the value as it is)."""

    def walk(value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        out: dict[str, Any] = {}
        for name, camel, member in members:
            item = value.get(name)
            if item is not None:
                out[camel] = item if member is None else member(item)
        return out

    return walk


def _list(item: _Redact | None) -> _Redact:
    def walk(value: Any) -> Any:
        if not isinstance(value, list):
            return value
        return list(value) if item is None else [item(v) for v in value]

    return walk


def _map(item: _Redact | None) -> _Redact:
    def walk(value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        if item is None:
            return {k: v for k, v in value.items()}
        return {k: item(v) for k, v in value.items()}

    return walk


# Shape kinds whose values redaction keeps as they are (when the shape is not sensitive).
_WALKED_KINDS = frozenset({"structure", "list", "map", "blob", "timestamp"})
_COMPILING = threading.Lock()


class _Redactions:
    """The redaction of each shape of one model, made on first use.

    Walks are published only once complete (a walk being made is visible to no other thread), and a
    shape that contains itself reaches its own walk through the published table.
    """

    def __init__(self, model: ServiceModel) -> None:
        self.shapes = model.shapes
        self.service = model.service
        self.walks: dict[str, _Redact] = {}

    def of(self, shape_name: str) -> _Redact:
        walk = self.walks.get(shape_name)
        if walk is None:
            with _COMPILING:
                made: dict[str, _Redact] = {}
                walk = self._make(shape_name, made, set())
                self.walks.update(made)
        return walk

    def _member(self, shape_name: str, made: dict[str, _Redact], making: set[str]) -> _Redact | None:
        """A member's or item's redaction; None when its value is kept as it is."""
        shape = self.shapes[shape_name]
        if shape["type"] not in _WALKED_KINDS and not shape.get("sensitive"):
            return None
        return self._make(shape_name, made, making)

    def _make(self, shape_name: str, made: dict[str, _Redact], making: set[str]) -> _Redact:
        walk = self.walks.get(shape_name) or made.get(shape_name)
        if walk is not None:
            return walk
        if shape_name in making:  # a shape within itself: its walk is published before it runs
            walks = self.walks
            return lambda value: walks[shape_name](value)
        making.add(shape_name)
        shape = self.shapes[shape_name]
        kind = shape["type"]
        if shape.get("sensitive"):
            walk = _hidden
        elif kind == "structure":
            members: list[tuple[str, str, _Redact | None]] = []
            for name, member in shape.get("members", {}).items():
                member_shape = self.shapes[member["shape"]]
                if member_shape["type"] == "blob":
                    continue
                if name.lower() in _SECRET_NAMES or member_shape.get("sensitive"):
                    if (self.service, name) not in _LEFT_OUT:
                        members.append((name, _camel(name), _hidden))
                    continue
                members.append((name, _camel(name), self._member(member["shape"], made, making)))
            walk = _structure(tuple(members))
        elif kind == "list":
            walk = _list(self._member(shape["member"]["shape"], made, making))
        elif kind == "map":
            walk = _map(self._member(shape["value"]["shape"], made, making))
        elif kind == "blob":
            walk = _left_blank
        elif kind == "timestamp":
            walk = _timestamp
        else:
            walk = _kept
        making.discard(shape_name)
        made[shape_name] = walk
        return walk


_REDACTIONS: dict[str, _Redactions] = {}


def _redactions(model: ServiceModel) -> _Redactions:
    redactions = _REDACTIONS.get(model.service)
    if redactions is None or redactions.shapes is not model.shapes:
        redactions = _REDACTIONS[model.service] = _Redactions(model)
    return redactions


@dataclass(frozen=True, slots=True)
class _Operation:
    """What an event of one known operation takes from the model, worked out once."""

    operations: dict[str, Any]  # the model's operations and shapes it was made from
    shapes: dict[str, Any]
    read_only: bool
    request: _Redact | None  # the input's redaction (None: the operation takes no input)
    response: _Redact | None  # the output's (None: none, or the operation reads: not recorded)


_OPERATIONS: dict[tuple[str, str], _Operation] = {}


def _operation(model: ServiceModel, operation: str) -> _Operation | None:
    """The known operation's plan; None for an operation the model does not have (never kept: its
    name is whatever the caller sent)."""
    key = (model.service, operation)
    plan = _OPERATIONS.get(key)
    if plan is not None and plan.operations is model.operations and plan.shapes is model.shapes:
        return plan
    op = model.operations.get(operation)
    if op is None:
        return None
    redactions = _redactions(model)
    read_only = is_read_only(operation)
    input_shape = op.get("input", {}).get("shape")
    output_shape = op.get("output", {}).get("shape")
    plan = _Operation(
        operations=model.operations,
        shapes=model.shapes,
        read_only=read_only,
        request=redactions.of(input_shape) if input_shape is not None else None,
        response=redactions.of(output_shape) if output_shape is not None and not read_only else None,
    )
    _OPERATIONS[key] = plan
    return plan


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
_ARN_KEY_SET = frozenset(_ARN_KEYS)


def _resources(
    service: str, account_id: str, region: str, params: dict[str, Any] | None, result: dict[str, Any] | None
) -> list[dict[str, str]]:
    """The resources a call touched, as ARNs (CloudTrail names resources by ARN)."""
    arns: list[str] = []
    for source in (result, params):
        if not source:
            continue
        metadata = source.get("KeyMetadata")
        if metadata is not None and isinstance(metadata, dict):
            _add_arn(arns, metadata.get("Arn"))
        if _ARN_KEY_SET.isdisjoint(source):  # most calls' parameters name nothing by ARN
            continue
        for key in _ARN_KEYS:
            if key in source:
                value = source[key]
                if isinstance(value, str) and value.startswith("arn:") and value not in arns:
                    arns.append(value)
    if service == "ssm" and params:
        names = [params["Name"]] if params.get("Name") else list(params.get("Names", []))
        for name in names:
            if isinstance(name, str) and not name.startswith("arn:"):
                name = f"arn:aws:ssm:{region}:{account_id}:parameter/{name.split(':')[0].lstrip('/')}"
            if isinstance(name, str) and name not in arns:
                arns.append(name)
    if not arns:
        return []
    resource_type = _RESOURCE_TYPES.get(service) or f"AWS::{service}"
    return [{"accountId": account_id, "type": resource_type, "ARN": arn} for arn in arns[:8]]


def _add_arn(arns: list[str], value: object) -> None:
    if isinstance(value, str) and value.startswith("arn:") and value not in arns:
        arns.append(value)


def event_time(now: datetime) -> str:
    """CloudTrail's eventTime form, ``2026-11-29T08:00:00Z`` (isoformat is several times faster than
    strftime, and this runs for every call)."""
    return now.astimezone(UTC).isoformat(timespec="seconds")[:19] + "Z"


def event_time_at(now: datetime, timestamp: float) -> str:
    """``event_time(now)``, where ``timestamp`` is ``now.timestamp()``: each second is formatted once.

    The whole seconds of the timestamp name the second the text shows exactly while a float's
    rounding cannot carry 0.999999 s into the next second (up to 2**32, the year 2106; beyond, and
    before 1970, every call formats).
    """
    if not 0.0 <= timestamp < 4294967296.0:
        return event_time(now)
    return _second_text(int(timestamp))


@functools.lru_cache(maxsize=8)
def _second_text(second: int) -> str:
    return event_time(datetime.fromtimestamp(second, UTC))


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
    shared_event_id: str | None = None,
) -> AuditEvent:
    """The CloudTrail record of one API call (``event_id``: a new one when not given), for
    ``recipient_account``'s trail; ``shared_event_id`` joins the records of one call that reach
    several accounts' trails (CloudTrail's sharedEventID)."""
    plan = _operation(model, operation) if model is not None else None
    if plan is None:
        # The name of an operation that does not exist is whatever the caller sent (a 60,000-character
        # X-Amz-Target, an Action with a NUL): cut to what the event_name column and PostgreSQL take,
        # or the trail would refuse the record and with it the request (503).
        operation = _column_text(operation, 128)
        read_only = is_read_only(operation)
        request_parameters = None
        response_elements = None
    else:
        read_only = plan.read_only
        request = plan.request
        response = plan.response
        request_parameters = (request(params) or None) if params is not None and request is not None else None
        response_elements = (
            (response(result) or None) if result is not None and response is not None else None
        )
    if access_key_id and (len(access_key_id) > 128 or "\x00" in access_key_id):
        access_key_id = _column_text(access_key_id, 128)
    account = recipient_account or (principal.account_id if principal is not None else recipient_account)
    resources = _resources(service, recipient_account, region, params, result) if error_code is None else []
    timestamp = now.timestamp()
    event_source = f"{service}.amazonaws.com"
    record: dict[str, Any] = {
        "eventVersion": EVENT_VERSION,
        "userIdentity": user_identity(principal, access_key_id),
        "eventTime": event_time_at(now, timestamp),
        "eventSource": event_source,
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
        "recipientAccountId": account,
        "eventCategory": "Management",
    }
    if error_code is not None:
        record["errorCode"] = error_code
        record["errorMessage"] = error_message or ""
    if shared_event_id is not None:
        record["sharedEventID"] = shared_event_id
    return AuditEvent(
        record=record,
        account_id=account,
        region=region,
        event_time=timestamp,
        event_source=event_source,
        event_name=operation,
        read_only=read_only,
        username=username_of(principal),
        access_key_id=access_key_id or (principal.access_key_id if principal is not None else None),
        error_code=error_code,
        resources=resources,
        event_type="AwsApiCall",
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
