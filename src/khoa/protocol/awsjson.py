"""The awsJson1_1 protocol: JSON bodies, ``X-Amz-Target`` dispatch, ``__type`` errors."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

from khoa.protocol.errors import AWSError, serialization_error

CONTENT_TYPE = b"application/x-amz-json-1.1"
# Deepest JSON nesting a request body may have. The deepest AWS input shape Khoa serves is about ten
# levels; Jackson, which AWS's services parse with, stops at 1,000.
MAX_DEPTH = 64


def decode_body(body: bytes) -> dict[str, Any]:
    """Parse a request body; an empty body is an empty request, anything but an object is refused.

    The body must be strict UTF-8: ``json.loads`` on bytes would decode with ``surrogatepass`` and
    let the CESU-8 bytes of a lone surrogate (``ED A0 80``) through as a ``str`` that no later
    ``.encode()`` (database, audit record, log) can write.
    """
    if not body.strip():
        return {}
    try:
        text = body.decode("utf-8").removeprefix("\ufeff")
        value = json.loads(text, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        # AWS answers a body that is not JSON with a bare SerializationException (no message).
        raise AWSError("SerializationException", None) from None
    depth, encodable = _inspect(value)
    if depth > MAX_DEPTH:
        # No AWS input shape nests more than a handful of levels. A deeper document is refused here,
        # before recursive code (validation messages, audit redaction, policy parsing) meets it.
        raise serialization_error(f"JSON nested deeper than {MAX_DEPTH} levels")
    if not encodable:
        # An unpaired surrogate escape ("\ud800") parses but is not a Unicode string.
        raise serialization_error("Invalid UTF-8 in a JSON string") from None
    if not isinstance(value, dict):
        raise serialization_error(
            "Start of list found where not expected" if isinstance(value, list) else "Expected a JSON object"
        )
    return value


def _no_constant(name: str) -> Any:
    """``NaN``, ``Infinity`` and ``-Infinity`` are not JSON (RFC 8259); Python accepts them by default."""
    raise ValueError(f"{name} is not a JSON value")


def _inspect(value: Any) -> tuple[int, bool]:
    """The nesting depth of a parsed document and whether every string in it (keys and values)
    encodes as UTF-8; iterative, so no document is too deep to inspect."""
    deepest = 0
    encodable = True
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            deepest = max(deepest, depth + 1)
            stack.extend((key, depth + 1) for key in item)
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            deepest = max(deepest, depth + 1)
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, str) and encodable:
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                encodable = False
    return deepest, encodable


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
