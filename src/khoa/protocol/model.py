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
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeAlias

import botocore.loaders
import regex

from khoa.protocol.errors import AWSError, serialization_error

_MAX_REPORTED_ERRORS = 10


# Khoa's own services' models (khoa-leaks), in botocore's layout; clients add it to their loader's
# search paths too (khoa.client.leaks).
MODELS_DIRECTORY = Path(__file__).resolve().parent / "models"


@functools.cache
def _loader() -> botocore.loaders.Loader:
    """One loader for every model: it lists botocore's several hundred service directories once, where
    a loader per service would list them again for each."""
    return botocore.loaders.Loader(extra_search_paths=[str(MODELS_DIRECTORY)])


@functools.cache
def load_service_model(service: str) -> dict[str, Any]:
    """Load botocore's service-2 model for ``service`` (cached for the process lifetime); Khoa's own
    services' models are found in ``MODELS_DIRECTORY``."""
    model: dict[str, Any] = _loader().load_service_model(service, "service-2")
    return model


_Matcher: TypeAlias = re.Pattern[str] | regex.Pattern[str]


@functools.cache
def _compile(pattern: str) -> _Matcher | None:
    """Compile one of the model's (Java-dialect) patterns.

    Java's ``\\w``, ``\\d`` and ``\\s`` are ASCII-only, so patterns compile with ``re.ASCII``. Two
    Java forms the models use are rewritten first: a ``-`` right after a class shorthand inside
    brackets (``[\\w-\\/]``: a literal in Java, an error in Python), and supplementary characters
    written as UTF-16 surrogate pairs. Patterns with Unicode categories (``\\p{L}``: tag keys and
    values of IAM, STS and SSM) compile with the ``regex`` library, which knows the categories; ``re``
    would need every code point of a category spelled out (a second of work per process, on the event
    loop). A pattern that still does not compile is not checked (the handler's own checks remain).
    """
    try:
        if "\\p{" in pattern:
            if _SHORTHAND.search(pattern):
                return None  # none in the models today: ASCII shorthands beside Unicode categories
            return regex.compile(pattern)
        return re.compile(_java_to_python(pattern), re.ASCII)
    except (re.error, regex.error):
        return None


_SHORTHAND = re.compile(r"(?<!\\)\\[wdsWDS]")
_SHORTHAND_DASH = re.compile(r"(\\[wdsWDS])-")
_SURROGATE_PAIR = re.compile(r"\\u(D[89AB][0-9A-F]{2})\\u(D[C-F][0-9A-F]{2})", re.IGNORECASE)


def _java_to_python(pattern: str) -> str:
    def pair(match: re.Match[str]) -> str:
        high, low = int(match.group(1), 16), int(match.group(2), 16)
        return f"\\U{0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00):08X}"

    pattern = _SURROGATE_PAIR.sub(pair, pattern)
    return _SHORTHAND_DASH.sub(
        lambda m: m.group(1) + "\\-" if _inside_class(pattern, m.start()) else m.group(0), pattern
    )


def _inside_class(pattern: str, position: int) -> bool:
    """Whether ``position`` is inside a ``[...]`` (escapes honoured; no nested classes in the models)."""
    inside = False
    i = 0
    while i < position:
        char = pattern[i]
        if char == "\\":
            i += 2
            continue
        if char == "[" and not inside:
            inside = True
        elif char == "]" and inside:
            inside = False
        i += 1
    return inside


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
            return self._string(
                shape, value, path, problems, nul_allowed=(self.service, shape_name) in _NUL_ALLOWED
            )
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

    def _holds_sensitive(self, shape_name: str, seen: frozenset[str] = frozenset()) -> bool:
        """Whether a value of this shape may contain a sensitive one (so it must not be echoed)."""
        shape = self.shapes[shape_name]
        if shape.get("sensitive"):
            return True
        if shape_name in seen:
            return False
        inner = seen | {shape_name}
        if shape["type"] == "structure":
            return any(self._holds_sensitive(m["shape"], inner) for m in shape.get("members", {}).values())
        if shape["type"] == "list":
            return self._holds_sensitive(shape["member"]["shape"], inner)
        if shape["type"] == "map":
            return self._holds_sensitive(shape["value"]["shape"], inner)
        return False

    @staticmethod
    def _join(path: str, name: str) -> str:
        return f"{path}.{_lower_camel(name)}" if path else _lower_camel(name)

    def _list(self, shape: dict[str, Any], value: Any, path: str, problems: list[_Problem]) -> list[Any]:
        if not isinstance(value, list):
            raise _mismatch(value, "List")
        member = shape["member"]["shape"]
        # a list of structures with a sensitive member (khoa-leaks' Candidates) is not shown either
        self._length(
            shape, len(value), path, "" if self._holds_sensitive(member) else _short(value), problems
        )
        member_shape = self.shapes[member]
        if member_shape["type"] not in _SCALARS:
            # Members that are structures, lists or maps report their own members' paths
            # ("tags.2.member.tagKey"), as AWS does.
            return [
                self._value(member, item, f"{path}.{i + 1}.member", problems) for i, item in enumerate(value)
            ]
        # A scalar member that breaks its constraints is reported once for the whole list, in AWS's
        # words: "Value '[a, b]' at 'labels' failed to satisfy constraint: Member must satisfy
        # constraint: [<every constraint of the member shape>]" (all of them, not only those broken).
        item_problems: list[_Problem] = []
        out = [
            self._value(member, item, f"{path}.{i + 1}.member", item_problems) for i, item in enumerate(value)
        ]
        if item_problems:
            constraints = _member_constraints(member_shape)
            constraints += [p.constraint for p in item_problems if p.constraint not in constraints]
            shown = "" if member_shape.get("sensitive") else _short(value)
            problems.append(
                _Problem(
                    path, shown, f"Member must satisfy constraint: [{', '.join(dict.fromkeys(constraints))}]"
                )
            )
        return out

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

    def _string(
        self,
        shape: dict[str, Any],
        value: Any,
        path: str,
        problems: list[_Problem],
        nul_allowed: bool = False,
    ) -> str:
        if not isinstance(value, str):
            raise _mismatch(value, "String")
        shown = "" if shape.get("sensitive") else f"'{value}'"
        self._length(shape, len(value), path, shown, problems)
        if "\x00" in value and not nul_allowed:
            problems.append(_Problem(path, shown, "Member must not contain the null character (U+0000)"))
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
        if integral:
            low, high = _INTEGRAL_RANGES[shape["type"]]
            if not low <= value <= high:
                # Java's deserialisers refuse what does not fit an int/long (rather than wrap it), and
                # nothing past here (SQLite's 64-bit integers, limits, offsets) has to meet 2**64.
                raise serialization_error(
                    f"Numeric value ({_clip(str(value))}) out of range of {_NUMBER_TYPES[shape['type']]}"
                )
        elif not math.isfinite(value):
            raise serialization_error(f"Non-finite number at '{path}'")
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


# String members that may hold U+0000. Everywhere else it is refused: no identifier, name, tag or
# description can contain it (the models' patterns exclude it wherever they have one), PostgreSQL
# cannot store it in text (the request would fail as a 500, or its audit record as a 503), SQLite's
# LIKE ends a pattern at it, and it must behave the same on both. A secret's value is encrypted
# before it is stored and hidden from the audit record, so it may be any text.
_NUL_ALLOWED = frozenset({("secretsmanager", "SecretStringType")})

_SCALARS = frozenset({"string", "integer", "long", "float", "double"})


def _member_constraints(shape: dict[str, Any]) -> list[str]:
    """Every constraint of a list's scalar member shape, in the order AWS lists them: the upper bound,
    the lower bound, then the enum or pattern."""
    unit = "length" if shape["type"] == "string" else "value"
    constraints: list[str] = []
    if "max" in shape:
        constraints.append(f"Member must have {unit} less than or equal to {shape['max']}")
    if "min" in shape:
        constraints.append(f"Member must have {unit} greater than or equal to {shape['min']}")
    if shape.get("enum"):
        constraints.append(f"Member must satisfy enum value set: [{', '.join(shape['enum'])}]")
    if shape.get("pattern"):
        constraints.append(f"Member must satisfy regular expression pattern: {shape['pattern']}")
    return constraints


_NUMBER_TYPES = {"integer": "Integer", "long": "Long", "float": "Float", "double": "Double"}
_INTEGRAL_RANGES = {"integer": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}


def _clip(text: str) -> str:
    return text if len(text) <= 40 else text[:40] + "..."


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
