"""The awsJson1_1 protocol: JSON bodies, ``X-Amz-Target`` dispatch, ``__type`` errors."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import orjson

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
    if not body or body.isspace():  # (bytes.isspace: the ASCII whitespace bytes.strip() removes)
        return {}
    try:
        text = body.decode("utf-8").removeprefix("\ufeff")
        value = _DECODER.decode(text)
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


# What ``json.loads(text, parse_constant=_no_constant)`` builds on every call, built once (a decoder
# holds no state between documents).
_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def _inspect(value: Any) -> tuple[int, bool]:
    """The nesting depth of a parsed document and whether every string in it (keys and values)
    encodes as UTF-8; iterative, so no document is too deep to inspect."""
    if not isinstance(value, (dict, list)):
        return 0, not isinstance(value, str) or _encodes(value)
    deepest = 0
    encodable = True
    stack: list[tuple[dict[str, Any] | list[Any], int]] = [(value, 1)]  # containers, by their depth
    pop = stack.pop
    push = stack.append
    while stack:
        item, depth = pop()
        if depth > deepest:
            deepest = depth
        if isinstance(item, dict):
            if encodable:
                for key in item:  # (a JSON object's keys are strings)
                    if not key.isascii() and not _encodes(key):
                        encodable = False
                        break
            children: Iterable[Any] = item.values()
        else:
            children = item
        for child in children:
            if isinstance(child, str):
                if encodable and not child.isascii() and not _encodes(child):
                    encodable = False
            elif isinstance(child, (dict, list)):
                push((child, depth + 1))
    return deepest, encodable


def _encodes(text: str) -> bool:
    """Whether ``text`` encodes as UTF-8 (holds no unpaired surrogate). ASCII text always does, and
    ``str.isascii`` answers without reading it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, datetime):
        return round(value.timestamp(), 3)
    raise TypeError(f"cannot encode {type(value).__name__}")


# Datetimes go through _default (epoch seconds, as AWS's JSON protocols send them), not orjson's ISO text.
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def encode_body(result: dict[str, Any]) -> bytes:
    """A result as JSON: by orjson (a few times faster), or by the standard library for what orjson
    refuses (an integer beyond 64 bits, a key that is not text), with the same ``_default``."""
    try:
        return orjson.dumps(result, default=_default, option=_ORJSON_OPTIONS)
    except orjson.JSONEncodeError:
        return json.dumps(result, default=_default, separators=(",", ":")).encode()


def encode_error(error: AWSError) -> bytes:
    body: dict[str, str] = {"__type": error.code}
    if error.message is not None:
        body["message"] = error.message
    return json.dumps(body).encode()
