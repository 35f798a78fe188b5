"""The restJson1 protocol (``rest-json`` in botocore's models): operations addressed by HTTP method and
path (the model's ``http.requestUri``), input members bound to the path, the query string, headers or
the JSON body, errors named by the ``x-amzn-errortype`` header with the model's HTTP status.

Everything here is driven by the service's botocore model, so any rest-json service can be served by
giving its :class:`~khoa.protocol.model.ServiceModel` to :class:`RestJsonRouter`.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, unquote

from khoa.protocol import awsjson
from khoa.protocol.errors import AWSError, serialization_error
from khoa.protocol.model import ServiceModel

CONTENT_TYPE = b"application/json"
_LABEL = re.compile(r"\{([^}]+)\}")


@dataclass(frozen=True)
class _Route:
    method: str
    pattern: re.Pattern[str]
    operation: str
    literal_query: tuple[tuple[str, str], ...]
    specificity: int


def unknown_route() -> AWSError:
    return AWSError("UnknownOperationException", "", 404)


class RestJsonRouter:
    """Finds the operation a request addresses and binds its input members."""

    def __init__(self, model: ServiceModel) -> None:
        self.model = model
        routes: list[_Route] = []
        for name, operation in model.operations.items():
            http = operation.get("http", {})
            uri = http.get("requestUri", "/")
            path, _, query = uri.partition("?")
            regex = "^"
            last = 0
            for match in _LABEL.finditer(path):
                regex += re.escape(path[last : match.start()])
                label = match.group(1)
                if label.endswith("+"):
                    regex += f"(?P<{_group(label[:-1])}>.+)"
                else:
                    regex += f"(?P<{_group(label)}>[^/]+)"
                last = match.end()
            regex += re.escape(path[last:]) + "/?$"
            literal = tuple((key, value) for key, value in parse_qsl(query, keep_blank_values=True) if query)
            routes.append(
                _Route(
                    http.get("method", "POST"), re.compile(regex), name, literal, len(path) - path.count("{")
                )
            )
        # Literal paths before labelled ones (``/analyzer/x`` vs ``/analyzer/{name}``): longest literal first.
        self.routes = sorted(routes, key=lambda r: (-len(r.literal_query), -r.specificity))

    def match(self, method: str, path: str, query_string: str = "") -> tuple[str, dict[str, str]]:
        """The operation addressed and its path labels (percent-decoded); raises for no match."""
        query = dict(parse_qsl(query_string, keep_blank_values=True))
        path_matched = False
        for route in self.routes:
            found = route.pattern.match(path)
            if found is None:
                continue
            if any(query.get(k) != v for k, v in route.literal_query):
                continue
            path_matched = True
            if route.method != method:
                continue
            labels = {_label(key): unquote(value) for key, value in found.groupdict().items()}
            return route.operation, labels
        if path_matched:
            raise AWSError("UnknownOperationException", "", 405)
        raise unknown_route()

    def addresses(self, path: str) -> bool:
        """Whether ``path`` is one of this service's operation paths (whatever the method)."""
        return any(route.pattern.match(path) for route in self.routes)

    def decode(
        self,
        operation: str,
        labels: dict[str, str],
        query_string: str,
        headers: dict[str, list[str]],
        body: bytes,
    ) -> dict[str, Any]:
        """The operation's input as a dict of member names (the validator checks it against the model)."""
        input_ref = self.model.operations[operation].get("input")
        if input_ref is None:
            return {}
        shape = self.model.shapes[input_ref["shape"]]
        members: dict[str, Any] = shape.get("members", {})
        query: dict[str, list[str]] = {}
        for key, value in parse_qsl(query_string, keep_blank_values=True):
            query.setdefault(key, []).append(value)
        payload_name = shape.get("payload")
        bound = {name for name, m in members.items() if m.get("location")}
        raw: dict[str, Any] = {}
        if payload_name is None and set(members) - bound:
            raw = awsjson.decode_body(body)
            raw = {k: v for k, v in raw.items() if k in members and k not in bound}
        elif payload_name is not None and body.strip():
            raw[payload_name] = awsjson.decode_body(body)
        for name, member in members.items():
            location = member.get("location")
            where = member.get("locationName", name)
            target = self.model.shapes[member["shape"]]
            if location == "uri" and where in labels:
                raw[name] = _scalar(target, labels[where], name)
            elif location == "querystring":
                if target["type"] == "list" and where in query:
                    item = self.model.shapes[target["member"]["shape"]]
                    raw[name] = [_scalar(item, v, name) for v in query[where]]
                elif target["type"] == "map":
                    raw[name] = {k: v[0] for k, v in query.items() if k not in _bound_query(members)}
                elif where in query:
                    raw[name] = _scalar(target, query[where][0], name)
            elif location == "header":
                values = headers.get(where.lower())
                if values:
                    raw[name] = _scalar(target, ",".join(values), name)
        return raw

    def encode(self, operation: str, result: dict[str, Any]) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        """The status, JSON body and headers of a successful answer."""
        op = self.model.operations[operation]
        status = int(op.get("http", {}).get("responseCode", 200))
        output_ref = op.get("output")
        headers: list[tuple[bytes, bytes]] = []
        if output_ref is None:
            return status, b"", headers
        shape = self.model.shapes[output_ref["shape"]]
        body: dict[str, Any] = {}
        for name, value in result.items():
            member = shape.get("members", {}).get(name)
            if member is None or value is None:
                continue
            location = member.get("location")
            if location == "header":
                headers.append((member.get("locationName", name).encode(), str(value).encode()))
            elif location == "statusCode":
                status = int(value)
            else:
                body[name] = self._value(member["shape"], value)
        return status, json.dumps(body, separators=(",", ":")).encode(), headers

    def _value(self, shape_name: str, value: Any) -> Any:
        shape = self.model.shapes[shape_name]
        kind = shape["type"]
        if kind == "structure" and isinstance(value, dict):
            members = shape.get("members", {})
            return {
                k: self._value(members[k]["shape"], v)
                for k, v in value.items()
                if k in members and v is not None
            }
        if kind == "list" and isinstance(value, list):
            return [self._value(shape["member"]["shape"], v) for v in value]
        if kind == "map" and isinstance(value, dict):
            return {k: self._value(shape["value"]["shape"], v) for k, v in value.items()}
        if kind == "timestamp" and isinstance(value, datetime):
            if shape.get("timestampFormat") == "unixTimestamp":
                return round(value.timestamp(), 3)
            return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
        if kind == "blob" and isinstance(value, (bytes, bytearray)):
            return base64.b64encode(bytes(value)).decode("ascii")
        return value


def encode_error(error: AWSError) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """An error's JSON body and its ``x-amzn-errortype`` header."""
    body: dict[str, str] = {"__type": error.code}
    if error.message is not None:
        body["message"] = error.message
    if error.code == "ValidationException":
        body["reason"] = "fieldValidationFailed" if "validation error" in (error.message or "") else "other"
    return json.dumps(body).encode(), [(b"x-amzn-errortype", error.code.encode())]


def _group(label: str) -> str:
    return "l_" + re.sub(r"[^A-Za-z0-9_]", lambda m: f"_{ord(m.group(0)):02x}", label)


def _label(group: str) -> str:
    return re.sub(r"_([0-9a-f]{2})", lambda m: chr(int(m.group(1), 16)), group[2:])


def _bound_query(members: dict[str, Any]) -> set[str]:
    return {m.get("locationName", n) for n, m in members.items() if m.get("location") == "querystring"}


def _scalar(shape: dict[str, Any], text: str, name: str) -> Any:
    """A path, query or header value as the JSON value the validator expects for its shape."""
    kind = shape["type"]
    if kind in ("integer", "long"):
        try:
            return int(text)
        except ValueError:
            raise serialization_error(f"Cannot convert '{text[:40]}' to an integer for {name}") from None
    if kind in ("float", "double"):
        try:
            return float(text)
        except ValueError:
            raise serialization_error(f"Cannot convert '{text[:40]}' to a number for {name}") from None
    if kind == "boolean":
        if text.lower() not in ("true", "false"):
            raise serialization_error(f"Cannot convert '{text[:40]}' to a boolean for {name}")
        return text.lower() == "true"
    return text


_ROUTERS: dict[str, RestJsonRouter] = {}


def router(model: ServiceModel) -> RestJsonRouter:
    """The (cached) router of a rest-json service's model."""
    found = _ROUTERS.get(model.service)
    if found is None or found.model is not model:
        found = _ROUTERS[model.service] = RestJsonRouter(model)
    return found
