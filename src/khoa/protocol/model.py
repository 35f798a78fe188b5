"""Request validation driven by botocore's own service models.

botocore ships the same Smithy-derived models AWS generates its SDKs from, so the member names,
required members, types, enums and length/range constraints checked here are AWS's own. Messages
follow the Coral form AWS services return ("1 validation error detected: Value ... at 'member'
failed to satisfy constraint: ...").
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import botocore.loaders

from khoa.protocol.errors import AWSError, serialization_error

_MAX_REPORTED_ERRORS = 10


@functools.cache
def load_service_model(service: str) -> dict[str, Any]:
    """Load botocore's service-2 model for ``service`` (cached for the process lifetime)."""
    loader = botocore.loaders.Loader()
    model: dict[str, Any] = loader.load_service_model(service, "service-2")
    return model


@functools.cache
def _compile(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern)
    except re.error:
        return None


def _lower_camel(name: str) -> str:
    return name[:1].lower() + name[1:]


@dataclass
class _Problem:
    path: str
    value: str | None
    constraint: str

    def render(self) -> str:
        shown = "null" if self.value is None else self.value
        if self.value == "":
            return f"Value at '{self.path}' failed to satisfy constraint: {self.constraint}"
        return f"Value {shown} at '{self.path}' failed to satisfy constraint: {self.constraint}"


class ServiceModel:
    """One AWS service's operations and shapes, plus the validator for their inputs."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.raw = load_service_model(service)
        self.shapes: dict[str, Any] = self.raw["shapes"]
        self.operations: dict[str, Any] = self.raw["operations"]
        self.metadata: dict[str, Any] = self.raw["metadata"]

    def error_status(self, code: str) -> int:
        shape = self.shapes.get(code)
        if shape and "error" in shape:
            return int(shape["error"].get("httpStatusCode", 400))
        if shape and shape.get("fault"):
            return 500
        return 400

    def validate(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        """Check ``params`` against the operation's input shape and return them with blobs decoded.

        Raises SerializationException for values of the wrong JSON type (as AWS's deserialiser does)
        and ValidationException listing every constraint violation.
        """
        op = self.operations[operation]
        input_ref = op.get("input")
        if input_ref is None:
            return {}
        problems: list[_Problem] = []
        result = self._structure(input_ref["shape"], params, "", problems)
        if problems:
            count = len(problems)
            noun = "error" if count == 1 else "errors"
            shown = "; ".join(p.render() for p in problems[:_MAX_REPORTED_ERRORS])
            raise AWSError("ValidationException", f"{count} validation {noun} detected: {shown}")
        return result

    # -- shape walkers -------------------------------------------------------------------------
    def _value(self, shape_name: str, value: Any, path: str, problems: list[_Problem]) -> Any:
        shape = self.shapes[shape_name]
        kind = shape["type"]
        if kind == "structure":
            return self._structure(shape_name, value, path, problems)
        if kind == "list":
            return self._list(shape, value, path, problems)
        if kind == "map":
            return self._map(shape, value, path, problems)
        if kind == "string":
            return self._string(shape, value, path, problems)
        if kind in ("integer", "long"):
            return self._number(shape, value, path, problems, integral=True)
        if kind in ("float", "double"):
            return self._number(shape, value, path, problems, integral=False)
        if kind == "boolean":
            if not isinstance(value, bool):
                raise _mismatch(value, "Boolean")
            return value
        if kind == "blob":
            return self._blob(shape, value, path, problems)
        if kind == "timestamp":
            return self._timestamp(value, path)
        return value

    def _structure(self, shape_name: str, value: Any, path: str, problems: list[_Problem]) -> dict[str, Any]:
        shape = self.shapes[shape_name]
        if not isinstance(value, dict):
            raise _mismatch(value, shape_name)
        members: dict[str, Any] = shape.get("members", {})
        out: dict[str, Any] = {}
        for name in shape.get("required", []):
            if value.get(name) is None:
                problems.append(_Problem(self._join(path, name), None, "Member must not be null"))
        for name, raw in value.items():
            member = members.get(name)
            if member is None or raw is None:
                continue  # AWS's JSON deserialisers ignore unknown members and explicit nulls.
            out[name] = self._value(member["shape"], raw, self._join(path, name), problems)
        return out

    @staticmethod
    def _join(path: str, name: str) -> str:
        return f"{path}.{_lower_camel(name)}" if path else _lower_camel(name)

    def _list(self, shape: dict[str, Any], value: Any, path: str, problems: list[_Problem]) -> list[Any]:
        if not isinstance(value, list):
            raise _mismatch(value, "List")
        self._length(shape, len(value), path, _short(value), problems)
        member = shape["member"]["shape"]
        return [self._value(member, item, f"{path}.{i + 1}.member", problems) for i, item in enumerate(value)]

    def _map(self, shape: dict[str, Any], value: Any, path: str, problems: list[_Problem]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise _mismatch(value, "Map")
        self._length(shape, len(value), path, _short(value), problems)
        key_shape = shape["key"]["shape"]
        value_shape = shape["value"]["shape"]
        out: dict[str, Any] = {}
        for k, v in value.items():
            key = self._value(key_shape, k, f"{path}.key", problems)
            if v is None:
                continue
            out[key] = self._value(value_shape, v, f"{path}.value", problems)
        return out

    def _string(self, shape: dict[str, Any], value: Any, path: str, problems: list[_Problem]) -> str:
        if not isinstance(value, str):
            raise _mismatch(value, "String")
        shown = "" if shape.get("sensitive") else f"'{value}'"
        self._length(shape, len(value), path, shown, problems)
        enum = shape.get("enum")
        if enum is not None and value not in enum:
            problems.append(_Problem(path, shown, f"Member must satisfy enum value set: [{', '.join(enum)}]"))
        pattern = shape.get("pattern")
        if pattern and value:
            compiled = _compile(pattern)
            if compiled is not None and compiled.fullmatch(value) is None:
                problems.append(
                    _Problem(path, shown, f"Member must satisfy regular expression pattern: {pattern}")
                )
        return value

    def _number(
        self, shape: dict[str, Any], value: Any, path: str, problems: list[_Problem], integral: bool
    ) -> int | float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _mismatch(value, _NUMBER_TYPES[shape["type"]])
        if integral and isinstance(value, float):
            if not value.is_integer():
                raise serialization_error(f"Expected an integer at '{path}'")
            value = int(value)
        shown = f"'{value}'"
        if "min" in shape and value < shape["min"]:
            problems.append(
                _Problem(path, shown, f"Member must have value greater than or equal to {shape['min']}")
            )
        if "max" in shape and value > shape["max"]:
            problems.append(
                _Problem(path, shown, f"Member must have value less than or equal to {shape['max']}")
            )
        return value

    def _blob(self, shape: dict[str, Any], value: Any, path: str, problems: list[_Problem]) -> bytes:
        if not isinstance(value, str):
            raise _mismatch(value, "ByteBuffer")
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise serialization_error(f"Invalid base64 value at '{path}'") from None
        self._length(shape, len(data), path, "", problems)
        return data

    @staticmethod
    def _timestamp(value: Any, path: str) -> datetime:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return datetime.fromtimestamp(value, UTC)
            except (OverflowError, OSError, ValueError):  # out of range, NaN or infinite
                raise serialization_error(f"Invalid timestamp at '{path}'") from None
        if isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                raise serialization_error(f"Invalid timestamp at '{path}'") from None
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        raise serialization_error(f"Invalid timestamp at '{path}'")

    @staticmethod
    def _length(shape: dict[str, Any], length: int, path: str, shown: str, problems: list[_Problem]) -> None:
        if "min" in shape and length < shape["min"]:
            problems.append(
                _Problem(path, shown, f"Member must have length greater than or equal to {shape['min']}")
            )
        if "max" in shape and length > shape["max"]:
            problems.append(
                _Problem(path, shown, f"Member must have length less than or equal to {shape['max']}")
            )


_NUMBER_TYPES = {"integer": "Integer", "long": "Long", "float": "Float", "double": "Double"}


def _mismatch(value: Any, target: str) -> AWSError:
    """A JSON value of the wrong type, in the words of AWS's (Coral) JSON deserialiser."""
    if isinstance(value, list):
        return serialization_error("Start of list found where not expected")
    if isinstance(value, dict):
        return serialization_error("Start of structure or map found where not expected.")
    if isinstance(value, bool):
        token = "TRUE_VALUE" if value else "FALSE_VALUE"
    elif isinstance(value, (int, float)):
        token = "NUMBER_VALUE"
    else:
        token = "STRING_VALUE"
    article = "an" if target[:1] in ("A", "E", "I", "O", "U") else "a"
    return serialization_error(f"{token} can not be converted to {article} {target}")


def _java_text(value: Any) -> str:
    """Render a list or map as AWS's (Java) services print them: ``[a, b]`` and ``{k=v}``."""
    if isinstance(value, list):
        return "[" + ", ".join(_java_text(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={_java_text(v)}" for k, v in value.items()) + "}"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _short(value: Any) -> str:
    text = _java_text(value)
    return "'" + (text if len(text) < 200 else text[:200] + "...") + "'"
