"""The awsQuery protocol (STS, IAM): form-encoded requests, XML responses and errors.

Request parameters arrive flattened (``Tags.member.1.Key=...``); the botocore model says how to fold
them back into structures and what type each scalar has. Responses are serialised from the model's
output shape, so member names, list wrappers and result wrappers match what SDKs parse.
"""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

from khoa.protocol.errors import AWSError
from khoa.protocol.model import ServiceModel

CONTENT_TYPE = b"text/xml"
_INDEX = re.compile(r"^([0-9]+)")
_MAX_INDEX_DIGITS = 9
# An integer as AWS's query parsers read one: ASCII digits and an optional minus sign, nothing else
# (int() also takes "1_0", " 3", "+2" and "٣"). Its length is bounded before int() reads it (a long
# is 19 digits; a few more still reach the model's range check, which answers for them).
_INTEGER = re.compile(r"-?[0-9]{1,32}")
# Characters XML 1.0 cannot carry, even as character references.
_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(value: str) -> str:
    """``value`` escaped for XML character data; characters XML 1.0 forbids (NUL and the other C0
    controls, lone surrogates, U+FFFE/U+FFFF) become U+FFFD, so every response parses."""
    return escape(_NOT_XML.sub("\ufffd", value))


def parse_form(body: bytes, query_string: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for source in (query_string, body.decode("utf-8", errors="replace")):
        if source:
            params.update(parse_qsl(source, keep_blank_values=True))
    return params


class QueryServiceModel(ServiceModel):
    """A query service's model in its own dialect: input problems are ``ValidationError`` ("1 validation
    error detected: ..."), not ``ValidationException``, and errors carry the statuses the model
    declares for their codes."""

    def __init__(self, service: str) -> None:
        super().__init__(service)
        self._statuses = {
            shape["error"]["code"]: int(shape["error"].get("httpStatusCode", 400))
            for shape in self.shapes.values()
            if "error" in shape and "code" in shape["error"]
        }

    def error_status(self, code: str) -> int:
        return self._statuses.get(code) or super().error_status(code)

    def validate(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        try:
            return super().validate(operation, params)
        except AWSError as error:
            if error.code in ("ValidationException", "SerializationException"):
                raise AWSError("ValidationError", error.message) from None
            raise


class QueryDecoder:
    """Fold flat query parameters into the nested, JSON-typed form the validator takes."""

    def __init__(self, model: ServiceModel) -> None:
        self.model = model

    def decode(self, operation: str, flat: dict[str, str]) -> dict[str, Any]:
        op = self.model.operations[operation]
        if "input" not in op:
            return {}
        value = self._structure(op["input"]["shape"], "", flat)
        return value or {}

    def _value(self, shape_name: str, key: str, flat: dict[str, str]) -> Any:
        shape = self.model.shapes[shape_name]
        kind = shape["type"]
        if kind == "structure":
            return self._structure(shape_name, key + ".", flat)
        if kind == "list":
            return self._list(shape, key, flat)
        if kind == "map":
            return self._map(shape, key, flat)
        if key not in flat:
            return None
        raw = flat[key]
        if kind in ("integer", "long"):
            if _INTEGER.fullmatch(raw) is None:
                raise AWSError("ValidationError", f"Invalid integer for {key}: {raw[:100]}")
            return int(raw)
        if kind in ("float", "double"):
            try:
                return float(raw)
            except ValueError:
                raise AWSError("ValidationError", f"Invalid number for {key}: {raw}") from None
        if kind == "boolean":
            return raw.lower() == "true"
        return raw

    def _structure(self, shape_name: str, prefix: str, flat: dict[str, str]) -> dict[str, Any] | None:
        shape = self.model.shapes[shape_name]
        out: dict[str, Any] = {}
        for name, member in shape.get("members", {}).items():
            value = self._value(member["shape"], prefix + member.get("locationName", name), flat)
            if value is not None:
                out[name] = value
        return out if (out or not prefix) else None

    def _indexes(self, prefix: str, flat: dict[str, str]) -> list[int]:
        found = set()
        for key in flat:
            if key.startswith(prefix):
                match = _INDEX.match(key[len(prefix) :])
                if match:
                    digits = match.group(1)
                    # No list holds a billion members (refused before int() meets 5,000 digits), and
                    # members are numbered from 1.
                    if len(digits) > _MAX_INDEX_DIGITS or int(digits) == 0:
                        raise AWSError("ValidationError", f"Invalid list index in parameter {key[:100]}")
                    found.add(int(digits))
        return sorted(found)

    def _list(self, shape: dict[str, Any], key: str, flat: dict[str, str]) -> list[Any] | None:
        member = shape["member"]
        prefix = f"{key}." if shape.get("flattened") else f"{key}.{member.get('locationName', 'member')}."
        indexes = self._indexes(prefix, flat)
        if not indexes:
            return [] if flat.get(key) == "" else None
        return [self._value(member["shape"], f"{prefix}{i}", flat) for i in indexes]

    def _map(self, shape: dict[str, Any], key: str, flat: dict[str, str]) -> dict[str, Any] | None:
        prefix = f"{key}." if shape.get("flattened") else f"{key}.entry."
        key_name = shape["key"].get("locationName", "key")
        value_name = shape["value"].get("locationName", "value")
        indexes = self._indexes(prefix, flat)
        if not indexes:
            return None
        out: dict[str, Any] = {}
        for i in indexes:
            map_key = flat.get(f"{prefix}{i}.{key_name}")
            if map_key is not None:
                out[map_key] = self._value(shape["value"]["shape"], f"{prefix}{i}.{value_name}", flat)
        return out


def _timestamp(value: Any) -> str:
    if isinstance(value, (int, float)):
        value = datetime.fromtimestamp(value, UTC)
    assert isinstance(value, datetime)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class QueryEncoder:
    def __init__(self, model: ServiceModel) -> None:
        self.model = model
        self.namespace = model.metadata.get("xmlNamespace", "")

    def encode(self, operation: str, result: dict[str, Any], request_id: str) -> bytes:
        op = self.model.operations[operation]
        parts = [f'<{operation}Response xmlns="{self.namespace}">']
        output = op.get("output")
        if output is not None:
            wrapper = output.get("resultWrapper", f"{operation}Result")
            parts.append(f"<{wrapper}>")
            parts.append(self._members(output["shape"], result))
            parts.append(f"</{wrapper}>")
        parts.append(f"<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>")
        parts.append(f"</{operation}Response>")
        return "".join(parts).encode()

    def _members(self, shape_name: str, value: dict[str, Any]) -> str:
        shape = self.model.shapes[shape_name]
        out = []
        for name, member in shape.get("members", {}).items():
            if name in value and value[name] is not None:
                out.append(self._element(member.get("locationName", name), member["shape"], value[name]))
        return "".join(out)

    def _element(self, tag: str, shape_name: str, value: Any) -> str:
        shape = self.model.shapes[shape_name]
        kind = shape["type"]
        if kind == "structure":
            return f"<{tag}>{self._members(shape_name, value)}</{tag}>"
        if kind == "list":
            member = shape["member"]
            inner_tag = member.get("locationName", "member")
            items = "".join(
                self._element(tag if shape.get("flattened") else inner_tag, member["shape"], item)
                for item in value
            )
            return items if shape.get("flattened") else f"<{tag}>{items}</{tag}>"
        if kind == "map":
            entries = "".join(
                f"<entry><key>{xml_text(str(k))}</key>{self._element('value', shape['value']['shape'], v)}"
                f"</entry>"
                for k, v in value.items()
            )
            return f"<{tag}>{entries}</{tag}>"
        if kind == "timestamp":
            text = _timestamp(value)
        elif kind == "boolean":
            text = "true" if value else "false"
        elif kind == "blob":
            text = base64.b64encode(value).decode()
        else:
            text = xml_text(str(value))
        return f"<{tag}>{text}</{tag}>"

    def encode_error(self, error: AWSError, request_id: str) -> bytes:
        kind = "Receiver" if error.status >= 500 else "Sender"
        return (
            f'<ErrorResponse xmlns="{self.namespace}"><Error><Type>{kind}</Type>'
            f"<Code>{xml_text(error.code)}</Code><Message>{xml_text(error.message or '')}</Message></Error>"
            f"<RequestId>{request_id}</RequestId></ErrorResponse>"
        ).encode()


# The query services name authentication failures differently from the JSON services.
QUERY_AUTH_CODES = {
    "UnrecognizedClientException": ("InvalidClientTokenId", 403),
    "InvalidSignatureException": ("SignatureDoesNotMatch", 403),
    "IncompleteSignatureException": ("IncompleteSignature", 400),
    "MissingAuthenticationTokenException": ("MissingAuthenticationToken", 403),
    "ExpiredTokenException": ("ExpiredToken", 403),
}


def query_auth_error(error: AWSError) -> AWSError:
    mapped = QUERY_AUTH_CODES.get(error.code)
    if mapped is None:
        return error
    message = error.message
    if error.code == "MissingAuthenticationTokenException":
        message = "Request is missing Authentication Token"
    return AWSError(mapped[0], message, mapped[1])
