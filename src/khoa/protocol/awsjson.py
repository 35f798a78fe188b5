"""The awsJson1_1 protocol: JSON bodies, ``X-Amz-Target`` dispatch, ``__type`` errors."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

from khoa.protocol.errors import AWSError, serialization_error

CONTENT_TYPE = b"application/x-amz-json-1.1"


def decode_body(body: bytes) -> dict[str, Any]:
    """Parse a request body; an empty body is an empty request, anything but an object is refused."""
    if not body.strip():
        return {}
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        # AWS answers a body that is not JSON with a bare SerializationException (no message).
        raise AWSError("SerializationException", None) from None
    if b"\\u" in body and not _encodable(value):
        # An unpaired surrogate escape ("\ud800") parses but is not a Unicode string.
        raise serialization_error("Invalid UTF-8 in a JSON string") from None
    if not isinstance(value, dict):
        raise serialization_error(
            "Start of list found where not expected" if isinstance(value, list) else "Expected a JSON object"
        )
    return value


def _encodable(value: Any) -> bool:
    """Whether every string (key or value) in a parsed JSON document encodes as UTF-8."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
    return True


def _default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, datetime):
        return round(value.timestamp(), 3)
    raise TypeError(f"cannot encode {type(value).__name__}")


def encode_body(result: dict[str, Any]) -> bytes:
    return json.dumps(result, default=_default, separators=(",", ":")).encode()


def encode_error(error: AWSError) -> bytes:
    body: dict[str, str] = {"__type": error.code}
    if error.message is not None:
        body["message"] = error.message
    return json.dumps(body).encode()
