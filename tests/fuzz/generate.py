"""Requests generated from botocore's service models: valid, boundary and mutated.

Every case is built from one seeded :class:`random.Random`, so a run (and any failure in it) is
reproduced by running again with the same seed. Values are built as JSON-typed Python data; a
:class:`Raw` value is JSON text spliced in verbatim, for what ``json.dumps`` cannot write (``1e309``,
5,000 levels of nesting, duplicate keys, invalid UTF-8).
"""

from __future__ import annotations

import base64
import functools
import json
import random
import re
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from khoa.audit.events import is_read_only
from khoa.protocol.model import load_service_model

JSON_CONTENT_TYPE = "application/x-amz-json-1.1"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded; charset=utf-8"


class Raw:
    """JSON text written into a request body as it is."""

    def __init__(self, text: str | bytes) -> None:
        self.text = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text

    def __repr__(self) -> str:
        shown = self.text[:60]
        return f"Raw({shown!r}{'...' if len(self.text) > 60 else ''}, {len(self.text)} bytes)"


def to_json(value: Any, ascii_only: bool = True) -> bytes:
    """Serialise ``value`` (with :class:`Raw` parts) to JSON bytes; non-ASCII text is sent as UTF-8
    (lone surrogates as their CESU-8 bytes, which are not UTF-8) unless ``ascii_only``."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        items = [to_json(k, ascii_only) + b":" + to_json(v, ascii_only) for k, v in value.items()]
        return b"{" + b",".join(items) + b"}"
    if isinstance(value, list):
        return b"[" + b",".join(to_json(v, ascii_only) for v in value) + b"]"
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


@dataclass
class Case:
    """One HTTP request and what the checker needs to judge its answer."""

    index: int
    service: str
    operation: str
    kind: str
    body: bytes
    headers: dict[str, str]
    protocol: str
    implemented: bool
    mutating: bool
    method: str = "POST"
    path: str = "/"
    detail: str = ""
    # A paging token the server never issued: answering it with a page is a bug (AWS refuses).
    garbage_token: bool = False
    # How the request is signed: "sign" (properly), or a way to break authentication (see harness).
    auth: str = "sign"
    region: str = "us-east-1"

    def describe(self) -> str:
        body = self.body[:300]
        more = f"... ({len(self.body)} bytes)" if len(self.body) > 300 else ""
        target = self.headers.get("X-Amz-Target", "")
        target = target if len(target) < 120 else target[:120] + f"... ({len(target)} chars)"
        return (
            f"case #{self.index} [{self.kind}] {self.service}.{self.operation} {self.detail}\n"
            f"    {self.method} {self.path} auth={self.auth} region={self.region} target={target!r} "
            f"content-type={self.headers.get('Content-Type')!r}\n"
            f"    body={body!r}{more}"
        )


@dataclass
class Pool:
    """Identifiers of resources that exist on the server, by (service, member name).

    Valid requests name real resources so they get past "not found" into the handlers' deeper code.
    ``fresh`` members (names a Create* takes) get a new name half of the time.
    """

    values: dict[tuple[str, str], list[Any]] = field(default_factory=dict)
    fresh: dict[tuple[str, str], str] = field(default_factory=dict)

    def add(self, service: str, member: str, *values: Any) -> None:
        self.values.setdefault((service, member), []).extend(values)

    def pick(self, rng: random.Random, service: str, member: str) -> Any | None:
        prefix = self.fresh.get((service, member))
        known = self.values.get((service, member))
        if prefix is not None and (not known or rng.random() < 0.5):
            return f"{prefix}{rng.randrange(10**9):09d}"
        if known:
            return rng.choice(known)
        return None


# List members named after the list: ``GrantTokens`` holds GrantToken values, and so on.
_SINGULAR = {
    "GrantTokens": "GrantToken",
    "Names": "Name",
    "SecretIdList": "SecretId",
    "Labels": "Label",
    "TagKeys": "TagKey",
    "KeyIds": "KeyId",
    "PolicyArns": "PolicyArn",
    "AddReplicaRegions": "Region",
    "RemoveReplicaRegions": "Region",
}

_GENERIC_STRINGS = [
    "fuzz",
    "fuzz-1",
    "Fuzz_2",
    "f",
    "fuzz.name",
    "/fuzz/",
    "/fuzz/a",
    "fuzz@example.com",
    "arn:aws:iam::111122223333:root",
    "arn:aws:iam::111122223333:user/fuzz",
    "arn:aws:iam::aws:policy/ReadOnlyAccess",
    "arn:aws:lambda:us-east-1:111122223333:function:fuzz",
    "1",
    "a1b2c3d4",
    "AKIAFUZZ000000000000",
    "us-east-1",
    "2012-10-17",
    "alias/fuzz",
    "EXAMPLE-token-0123456789abcdef0123456789abcdef",
    "rate(10 days)",
    "{}",
]

# Values that break a member in a way a model-valid value does not.
_UNICODE = [
    "ключ-🔑-测试",
    "\u202etxet-lmth\u202c",
    "e\u0301\u0301\u0301",
    "\U0010ffff\U000e0001",
    "\ufeff\ufffe\uffff",
    "Ⅻ٣𝟗",
    "ß" * 64,
    "İ",
    "\u2028\u2029",
    "%00%2e%2e%2f",
    "../../etc/passwd",
    "*",
    "%",
    "_",
    "\\",
    "' OR '1'='1",
    "alias/aws/",
    "arn:aws:kms:us-east-1:111122223333:key/",
    "arn:::::",
    " ",
    "\t\r\n",
]
_NUL = ["\x00", "a\x00", "\x00a", "fuzz\x00/../x", "\x00" * 100, "/fz\x00", "%\x00%", "\x01\x02\x1f\x7f"]
_SURROGATES = ["\ud800", "a\udfffb", "\udc00\ud800", "\ud83d"]
_NUMBERS: list[Any] = [
    2**63,
    2**63 - 1,
    2**64,
    -(2**63) - 1,
    -1,
    0,
    -0.0,
    1.5,
    2**31,
    -(2**31) - 1,
    10**30,
    Raw("1e309"),
    Raw("-1e309"),
    Raw("1" + "0" * 5000),
    Raw("NaN"),
    Raw("Infinity"),
    Raw("-Infinity"),
    Raw("1e-400"),
    Raw("0x10"),
    Raw("01"),
    Raw("1E+2"),
]
_TOKENS = [
    "9" * 40,
    "99999999999999999999",
    str(2**63),
    str(2**64),
    "-1",
    "0",
    "",
    " ",
    "null",
    "AAAA",
    "====",
    "%%%",
    "not base64!",
    base64.b64encode(b"\xff\xfe\xfd").decode(),
    base64.b64encode(b'[1e309, "x"]').decode(),
    base64.b64encode(b'["x"]').decode(),
    base64.b64encode(b'{"a": 1}').decode(),
    base64.b64encode(json.dumps([2**64, "0" * 36]).encode()).decode(),
    base64.urlsafe_b64encode(b"\x00\x00\x00").decode(),
    base64.urlsafe_b64encode(b"/zzz").decode(),
    base64.urlsafe_b64encode(b"\xc3\x28").decode(),
    "A" * 5000,
    "\x00",
    "\ud800",
    "ключ",
]
_BAD_BASE64 = ["!!!", "abc", "a", "====", "YQ", "YQ=", "Y Q = =", "ключ", "\x00", "\ud800", "A" * 4097, "*"]
_WRONG_TYPES: list[Any] = [
    123,
    -1,
    1.5,
    True,
    False,
    "text",
    "",
    [],
    ["a", 1],
    {},
    {"a": 1},
    [[["x"]]],
    [{"Key": "k"}],
]
_BAD_TIMESTAMPS: list[Any] = [
    "yesterday",
    "",
    "2026-13-45T99:99:99Z",
    -1,
    2**63,
    Raw("1e309"),
    Raw("NaN"),
    "9999999-01-01",
    -(10**20),
    True,
]


def _shaped_tokens(operation: str) -> list[str]:
    """Tokens in the shapes Khoa's own tokens take, carrying values that overflow or do not belong:
    a forged token must be refused (InvalidMarker/InvalidNextToken), never reach SQL as 2**64."""

    def b64(text: str) -> str:
        return base64.urlsafe_b64encode(text.encode()).decode()

    return [
        b64(f"khoa:{operation}:{2**64}"),
        b64(f"khoa:{operation}:{'9' * 30}"),
        b64(f"khoa:{operation}:-1"),
        b64(f"khoa:Other{operation}:1"),
        b64(json.dumps(["khoa-ssm-page-1", "\u0000"])),
        b64(json.dumps(["khoa-ssm-page-1", "/" * 5000])),
        b64(json.dumps([{"a": 1}, "x"])),
        b64(json.dumps([2**64, "x"])),
        b64("khoa-iam:" + "9" * 30),
        b64("khoa-iam:-1"),
    ]


def _policy(statement: str) -> str:
    return '{"Version":"2012-10-17","Statement":' + statement + "}"


_POLICY_MEMBERS = (
    "Policy",
    "PolicyDocument",
    "AssumeRolePolicyDocument",
    "ResourcePolicy",
    "KeyPolicy",
    "PolicyInputList",
    "PermissionsBoundaryPolicyInputList",
)
# Policy documents nested too deep or outside IAM's grammar: a 400 (MalformedPolicyDocument or the
# service's code), never a 500, and never stored.
_BAD_POLICIES = [
    _policy("[" * 1_500 + "]" * 1_500),
    _policy("[" * 5_000 + "]" * 5_000),
    _policy('{"Effect":"Allow","Action":"*","Resource":' + '{"a":' * 2_000 + "1" + "}" * 2_000 + "}"),
    _policy(
        '{"Effect":"Allow","Action":"*","Resource":"*","Condition":'
        + '{"a":' * 1_200
        + '"b"'
        + "}" * 1_200
        + "}"
    ),
    _policy('{"Effect":"Allow","Principal":42,"Action":"*","Resource":"*"}'),
    _policy('{"Effect":"Allow","Action":1e309,"Resource":"*"}'),
    _policy('{"Effect":"Allow","Action":"*","Resource":"*","NotResource":"*"}'),
    _policy('{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"StringEqualz":{"a":"b"}}}'),
    _policy(
        '{"Effect":"Allow","Action":"*","Resource":"*"},' * 2_000
        + '{"Effect":"Deny","Action":"*","Resource":"*"}'
    ),
    '{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"\u0000","Resource":"*"}}',
    '{"Version":"2012-10-17"',
    "[]",
    "",
    " " * 10,
]


def deep(depth: int, kind: str) -> Raw:
    """JSON nested ``depth`` levels: lists, objects, or both alternating."""
    if kind == "list":
        return Raw("[" * depth + "]" * depth)
    if kind == "map":
        return Raw('{"a":' * depth + "1" + "}" * depth)
    opening = "".join('[{"a":' if i % 2 else "[" for i in range(depth))
    closing = "".join("}]" if i % 2 else "]" for i in reversed(range(depth)))
    return Raw(opening + "1" + closing)


@functools.cache
def _pattern(text: str) -> re.Pattern[str] | None:
    try:
        return re.compile(text)
    except re.error:
        return None


def _fits(shape: dict[str, Any], value: str) -> bool:
    if "min" in shape and len(value) < shape["min"]:
        return False
    if "max" in shape and len(value) > shape["max"]:
        return False
    pattern = _pattern(shape["pattern"]) if "pattern" in shape else None
    return pattern is None or not value or pattern.fullmatch(value) is not None


Path = tuple[Any, ...]
# Timestamps are drawn around a fixed instant (2026-12-01T00:00:00Z), not the clock, so that a seed
# always makes the same requests.
_EPOCH = 1_796_083_200
_PAGING_MEMBERS = ("Marker", "NextToken", "StartingToken", "nextToken")


class OperationFuzzer:
    """Valid and mutated inputs for the operations of one service, from its botocore model."""

    def __init__(self, service: str, handlers: set[str], rng: random.Random, pool: Pool) -> None:
        self.service = service
        self.model = load_service_model(service)
        self.shapes: dict[str, Any] = self.model["shapes"]
        self.operations: dict[str, Any] = self.model["operations"]
        self.protocol = {"query": "query", "rest-json": "rest-json"}.get(
            self.model["metadata"]["protocol"], "json"
        )
        self.target_prefix = self.model["metadata"].get("targetPrefix", "")
        self.api_version = self.model["metadata"]["apiVersion"]
        self.handlers = handlers
        self.rng = rng
        self.pool = pool

    # -- valid values ---------------------------------------------------------------------------
    def valid(self, operation: str, boundary: bool = False) -> tuple[dict[str, Any], list[tuple[Path, str]]]:
        """A model-valid input and the (path, shape) of every member in it (the mutation slots)."""
        slots: list[tuple[Path, str]] = []
        ref = self.operations[operation].get("input")
        if ref is None:
            return {}, slots
        value = self._structure(ref["shape"], (), slots, 0, boundary)
        return value, slots

    def _value(
        self,
        shape_name: str,
        member: str,
        path: Path,
        slots: list[tuple[Path, str]],
        depth: int,
        boundary: bool,
    ) -> Any:
        slots.append((path, shape_name))
        shape = self.shapes[shape_name]
        kind = shape["type"]
        rng = self.rng
        known = self.pool.pick(rng, self.service, _SINGULAR.get(member, member))
        if known is not None and kind in ("string", "blob") and not (boundary and rng.random() < 0.3):
            if kind == "blob" and isinstance(known, bytes):
                return base64.b64encode(known).decode()
            if isinstance(known, str):
                return known
        if kind == "structure":
            return self._structure(shape_name, path, slots, depth, boundary)
        if kind == "list":
            low, high = shape.get("min", 0), shape.get("max", 4)
            count = (
                (high if rng.random() < 0.5 else low) if boundary else rng.randint(low, min(high, low + 2))
            )
            count = min(count, 60)
            item = _SINGULAR.get(member, member)
            return [
                self._value(shape["member"]["shape"], item, (*path, i), slots, depth + 1, boundary)
                for i in range(count)
            ]
        if kind == "map":
            count = rng.randint(max(shape.get("min", 0), 0), min(shape.get("max", 3), 3))
            out = {}
            for i in range(count):
                key = self._string(self.shapes[shape["key"]["shape"]], f"{member}Key", boundary) + str(i)
                out[key] = self._value(
                    shape["value"]["shape"], member, (*path, key), slots, depth + 1, boundary
                )
            return out
        if kind == "string":
            return self._string(shape, member, boundary)
        if kind in ("integer", "long"):
            low, high = shape.get("min", 0), shape.get("max", 100)
            if boundary:
                return rng.choice([low, high, max(low, min(high, 0))])
            return rng.randint(low, min(high, low + 20))
        if kind in ("float", "double"):
            return float(rng.randint(shape.get("min", 0), 10))
        if kind == "boolean":
            return rng.random() < 0.5
        if kind == "blob":
            low, high = shape.get("min", 1), min(shape.get("max", 64), 4096 if boundary else 64)
            size = rng.choice([low, high]) if boundary else rng.randint(low, max(low, min(high, 32)))
            return base64.b64encode(rng.randbytes(size)).decode()
        if kind == "timestamp":
            return _EPOCH + rng.randint(-86400, 86400 * 30)
        return None

    def _structure(
        self,
        shape_name: str,
        path: Path,
        slots: list[tuple[Path, str]],
        depth: int,
        boundary: bool,
    ) -> dict[str, Any]:
        shape = self.shapes[shape_name]
        required = set(shape.get("required", []))
        out: dict[str, Any] = {}
        for name, member in shape.get("members", {}).items():
            chance = 1.0 if name in required else (0.6 if boundary else 0.4) / (1 + depth)
            if self.rng.random() < chance and depth < 5:
                out[name] = self._value(member["shape"], name, (*path, name), slots, depth + 1, boundary)
        return out

    def _string(self, shape: dict[str, Any], member: str, boundary: bool) -> str:
        rng = self.rng
        enum = shape.get("enum")
        if enum:
            return str(rng.choice(enum))
        low, high = shape.get("min", 0), shape.get("max", 256)
        if boundary and "pattern" not in shape:
            size = rng.choice([low, high, min(high, 1024)])
            unit = "".join(rng.choice(string.ascii_letters) for _ in range(16))
            return (unit * (size // 16 + 1))[:size]
        candidates = list(_GENERIC_STRINGS)
        rng.shuffle(candidates)
        suffix = "".join(rng.choice(string.ascii_lowercase + string.digits) for _ in range(6))
        candidates = [f"fz{suffix}", *candidates]
        if boundary:
            longest = min(high, 2048)
            candidates = [c * max(1, longest // max(1, len(c))) for c in candidates[:4]] + candidates
        for candidate in candidates:
            if _fits(shape, candidate):
                return candidate
        return "a" * max(low, 1) if _fits(shape, "a" * max(low, 1)) else "fuzz"

    # -- mutations --------------------------------------------------------------------------------
    def mutated(self, operation: str, kind: str) -> tuple[Any, str]:
        """A JSON input for ``operation`` broken as ``kind`` says, and a note on what was broken."""
        rng = self.rng
        value, slots = self.valid(operation)
        ref = self.operations[operation].get("input")
        top_shape = self.shapes[ref["shape"]] if ref else {"members": {}}
        members = list(top_shape.get("members", {}))
        if kind == "missing-required":
            nested = [path for path, _ in slots if len(path) > 1 and isinstance(path[-1], str)]
            if nested and rng.random() < 0.4:
                # A member of a nested structure (often optional in the model, needed by the handler).
                path = rng.choice(nested)
                parent = value
                for step in path[:-1]:
                    parent = parent[step]
                parent.pop(path[-1], None)
                return value, f"dropped {'.'.join(map(str, path))}"
            required = top_shape.get("required", [])
            if required:
                dropped = rng.choice(required)
                value.pop(dropped, None)
                return value, f"dropped {dropped}"
            kind = "wrong-type"
        if kind == "unknown-member":
            value[rng.choice(["Unknown", "__type", "keyId", "", "\x00", "A" * 300])] = rng.choice(
                _WRONG_TYPES
            )
            return value, "unknown member"
        if kind == "null-member" and members:
            name = rng.choice(members)
            value[name] = None
            return value, f"{name}=null"
        if kind == "pagination-garbage":
            paging = [m for m in members if m in _PAGING_MEMBERS]
            if paging:
                name = rng.choice(paging)
                value[name] = rng.choice(_TOKENS + _shaped_tokens(operation))
                limits = [m for m in members if m in ("Limit", "MaxResults", "MaxItems", "maxResults")]
                if limits and rng.random() < 0.5:
                    value[rng.choice(limits)] = rng.choice([1, 2**63, -1, 0])
                return value, f"{name}={str(value[name])[:40]!r}"
            kind = "number-overflow"
        if kind == "policy-document":
            policies = [m for m in members if m in _POLICY_MEMBERS]
            if policies:
                name = rng.choice(policies)
                value[name] = rng.choice(_BAD_POLICIES)
                return value, f"{name}={str(value[name])[:40]!r}"
            kind = "json-in-string"
        # The rest replace one member (an existing slot, or a top-level member of any type).
        slot = self._slot(slots, top_shape.get("members", {}), kind)
        if slot is None:
            return {"Fuzz": rng.choice(_WRONG_TYPES)}, "no members"
        path, shape_name = slot
        shape = self.shapes[shape_name]
        replacement = self._replacement(kind, shape)
        value = _set(value, path, replacement)
        return value, f"{'.'.join(map(str, path))} ({shape['type']})"

    def _slot(
        self, slots: list[tuple[Path, str]], members: dict[str, Any], kind: str
    ) -> tuple[Path, str] | None:
        """A member to break: one of the request's (of a type ``kind`` suits, when there is one),
        sometimes a top-level member the valid request left out."""
        rng = self.rng
        wanted = {
            "number-overflow": ("integer", "long", "float", "double"),
            "blob-garbage": ("blob",),
            "enum-garbage": ("string",),
            "timestamp-garbage": ("timestamp",),
            "deep-nesting": ("list", "map", "structure", "string"),
        }.get(kind)
        typed = [s for s in slots if wanted is None or self.shapes[s[1]]["type"] in wanted]
        if kind == "enum-garbage":
            typed = [s for s in typed if "enum" in self.shapes[s[1]]] or typed
        if typed and rng.random() < 0.8:
            return rng.choice(typed)
        if members:
            name = rng.choice(list(members))
            return (name,), str(members[name]["shape"])
        return rng.choice(slots) if slots else None

    def _replacement(self, kind: str, shape: dict[str, Any]) -> Any:
        rng = self.rng
        if kind == "wrong-type":
            return rng.choice(_WRONG_TYPES)
        if kind == "huge-string":
            size = rng.choice([shape.get("max", 2048) + 1, 65_536, 300_000, 1_100_000])
            return rng.choice(["A", "é", "\U0001f511", "\\"]) * size
        if kind == "deep-nesting":
            return deep(rng.choice([1_000, 1_500, 2_500, 5_000]), rng.choice(["list", "map", "mixed"]))
        if kind == "unicode":
            return rng.choice(_UNICODE)
        if kind == "nul":
            return rng.choice(_NUL)
        if kind == "lone-surrogate":
            return rng.choice(_SURROGATES)
        if kind == "number-overflow":
            return rng.choice(_NUMBERS)
        if kind == "blob-garbage":
            return rng.choice(_BAD_BASE64)
        if kind == "enum-garbage":
            enum = shape.get("enum") or ["X"]
            return rng.choice(
                [str(enum[0]).lower(), str(enum[0]) + " ", "", "NOT_AN_ENUM", str(enum[0]) + "\x00"]
            )
        if kind == "timestamp-garbage":
            return rng.choice(_BAD_TIMESTAMPS)
        if kind == "empty":
            return rng.choice(["", [], {}])
        if kind == "json-in-string":
            return rng.choice(
                [
                    "{",
                    '{"Version":"2012-10-17","Statement":' + "[" * 3000 + "]" * 3000 + "}",
                    '{"a":' * 2000 + "1" + "}" * 2000,
                    '{"Statement":[{"Effect":"Allow","Action":1e309,"Resource":"*"}]}',
                    "[]",
                    "null",
                ]
            )
        return rng.choice(_UNICODE + _NUL)


def _set(root: Any, path: Path, replacement: Any) -> Any:
    if not path:
        return replacement
    node = root
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = replacement
    return root


# -- query protocol (IAM, STS) -------------------------------------------------------------------------
def flatten(fuzzer: OperationFuzzer, shape_name: str, value: Any, prefix: str, out: dict[str, str]) -> None:
    """Serialise ``value`` the way botocore's query serialiser does (``A.member.1.Key=...``)."""
    shape = fuzzer.shapes[shape_name]
    kind = shape["type"]
    if isinstance(value, Raw):
        out[prefix] = value.text.decode("utf-8", "surrogatepass")
    elif kind == "structure" and isinstance(value, dict):
        for name, member in shape.get("members", {}).items():
            if name in value and value[name] is not None:
                key = member.get("locationName", name)
                flatten(fuzzer, member["shape"], value[name], f"{prefix}.{key}" if prefix else key, out)
    elif kind == "list" and isinstance(value, list):
        if not value:
            out[prefix] = ""
        member_name = shape["member"].get("locationName", "member")
        for i, item in enumerate(value, start=1):
            key = f"{prefix}.{i}" if shape.get("flattened") else f"{prefix}.{member_name}.{i}"
            flatten(fuzzer, shape["member"]["shape"], item, key, out)
    elif kind == "map" and isinstance(value, dict):
        for i, (k, v) in enumerate(value.items(), start=1):
            out[f"{prefix}.entry.{i}.key"] = str(k)
            flatten(fuzzer, shape["value"]["shape"], v, f"{prefix}.entry.{i}.value", out)
    elif kind == "boolean" and isinstance(value, bool):
        out[prefix] = "true" if value else "false"
    elif kind == "timestamp" and isinstance(value, (int, float)) and not isinstance(value, bool):
        out[prefix] = datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    elif isinstance(value, (dict, list)):
        out[prefix] = json.dumps(value)
    else:
        out[prefix] = str(value)


def encode_form(params: list[tuple[str, str]]) -> bytes:
    return "&".join(f"{_quote(k)}={_quote(v)}" for k, v in params).encode()


def _quote(text: str) -> str:
    """Percent-encode (UTF-8, lone surrogates as CESU-8); huge values are quoted in cached chunks."""
    if len(text) < 4096:
        return _quote_chunk(text)
    return "".join(_quote_chunk(text[i : i + 4096]) for i in range(0, len(text), 4096))


@functools.lru_cache(maxsize=256)
def _quote_chunk(text: str) -> str:
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


# -- the campaign ----------------------------------------------------------------------------------------
JSON_KINDS = [
    "valid",
    "valid",
    "valid",
    "boundary",
    "boundary",
    "missing-required",
    "missing-required",
    "wrong-type",
    "wrong-type",
    "wrong-type",
    "null-member",
    "unknown-member",
    "huge-string",
    "deep-nesting",
    "deep-nesting",
    "unicode",
    "unicode",
    "nul",
    "nul",
    "lone-surrogate",
    "number-overflow",
    "number-overflow",
    "pagination-garbage",
    "pagination-garbage",
    "blob-garbage",
    "enum-garbage",
    "timestamp-garbage",
    "empty",
    "json-in-string",
    "policy-document",
    "duplicate-keys",
    "content-type",
    "malformed-json",
    "raw-utf8",
]
QUERY_KINDS = [
    "valid",
    "valid",
    "valid",
    "boundary",
    "boundary",
    "missing-required",
    "missing-required",
    "wrong-type",
    "wrong-type",
    "huge-string",
    "unicode",
    "unicode",
    "nul",
    "lone-surrogate",
    "number-overflow",
    "number-overflow",
    "pagination-garbage",
    "index-mangle",
    "index-mangle",
    "index-mangle",
    "map-mangle",
    "duplicate-param",
    "percent-garbage",
    "invalid-utf8",
    "json-in-string",
    "policy-document",
    "deep-keys",
    "content-type",
    "version-garbage",
    "action-in-query-string",
]
_INDEX_IN_KEY = re.compile(r"\.(member|entry)\.\d+")
_BAD_INDEXES = [
    "999999999",
    "0",
    "-1",
    "01",
    "1e3",
    "",
    "x",
    "9" * 40,
    "9" * 5000,
    "1 ",
    "\u0661",  # ARABIC-INDIC DIGIT ONE: a digit to str.isdigit, not to a parser of indexes
    "2147483648",
    "18446744073709551616",
    "1.1",
]


class Campaign:
    """Builds the whole, deterministic list of cases for the services given."""

    def __init__(self, seed: int, handlers: dict[str, set[str]], pool: Pool) -> None:
        self.rng = random.Random(seed)
        self.pool = pool
        self.fuzzers = {name: OperationFuzzer(name, ops, self.rng, pool) for name, ops in handlers.items()}
        self.index = 0

    def _case(self, fuzzer: OperationFuzzer, operation: str, kind: str, body: bytes, **kw: Any) -> Case:
        headers: dict[str, str] = kw.pop("headers", None) or {}
        if fuzzer.protocol == "json":
            headers.setdefault("X-Amz-Target", f"{fuzzer.target_prefix}.{operation}")
            headers.setdefault("Content-Type", JSON_CONTENT_TYPE)
        elif fuzzer.protocol == "rest-json":
            headers.setdefault("Content-Type", "application/json")
        else:
            headers.setdefault("Content-Type", FORM_CONTENT_TYPE)
        case = Case(
            index=self.index,
            service=fuzzer.service,
            operation=operation,
            kind=kind,
            body=body,
            headers=headers,
            protocol=fuzzer.protocol,
            implemented=operation in fuzzer.handlers,
            mutating=not is_read_only(operation),
            **kw,
        )
        self.index += 1
        return case

    def operation_cases(self, service: str, operation: str, count: int) -> Iterator[Case]:
        fuzzer = self.fuzzers[service]
        kinds = JSON_KINDS if fuzzer.protocol == "json" else QUERY_KINDS
        for i in range(count):
            kind = kinds[i % len(kinds)] if i < len(kinds) else self.rng.choice(kinds)
            if fuzzer.protocol == "json":
                yield self._json_case(fuzzer, operation, kind)
            elif fuzzer.protocol == "rest-json":
                yield self._rest_case(fuzzer, operation, kind)
            else:
                yield self._query_case(fuzzer, operation, kind)

    def _json_case(self, fuzzer: OperationFuzzer, operation: str, kind: str) -> Case:
        rng = self.rng
        headers: dict[str, str] = {}
        detail = ""
        if kind in ("valid", "boundary"):
            value, _ = fuzzer.valid(operation, boundary=kind == "boundary")
            body = to_json(value, ascii_only=rng.random() < 0.5)
        elif kind == "duplicate-keys":
            value, _ = fuzzer.valid(operation)
            text = to_json(value)
            name = next(iter(value), "KeyId")
            extra = to_json({name: rng.choice(_WRONG_TYPES + _NUL)})
            body = text[:-1] + (b"," if value else b"") + extra[1:] if text.endswith(b"}") else text
            detail = f"duplicate {name}"
        elif kind == "content-type":
            value, _ = fuzzer.valid(operation)
            body = to_json(value)
            content_type = rng.choice(
                [
                    "",
                    "text/plain",
                    "application/json",
                    "application/x-amz-json-1.0",
                    "application/x-www-form-urlencoded",
                    "multipart/form-data; boundary=x",
                    "application/x-amz-json-1.1; charset=\x7f",
                    "application/cbor",
                    "\u00ff" * 10,
                ]
            )
            headers["Content-Type"] = content_type
            detail = f"content-type {content_type!r}"
        elif kind == "malformed-json":
            value, _ = fuzzer.valid(operation)
            text = to_json(value)
            body = rng.choice(
                [
                    text[: max(1, len(text) // 2)],
                    text + b"}",
                    text + b"garbage",
                    text.replace(b":", b"=", 1),
                    text.replace(b'"', b"'"),
                    b"{" * 3,
                    b'{"a":}',
                    b"{,}",
                    b"\xef\xbb\xbf" + text,
                    b"\x00" + text,
                    text + b"\x00",
                    b"null",
                    b"[]",
                    b'"string"',
                    b"123",
                    b"true",
                    b"   ",
                    b"",
                    b"[" * 5000 + b"]" * 5000,
                    b'{"a":' * 5000 + b"1" + b"}" * 5000,
                    b"{" + b'"k":1,' * 50_000 + b'"k":2}',
                ]
            )
            detail = "malformed body"
        elif kind == "raw-utf8":
            value, _ = fuzzer.valid(operation)
            text = to_json(value)
            body = text.replace(b'"', b'"\xff\xfe', 1) if b'"' in text else b'{"\xc3\x28":1}'
            if rng.random() < 0.5:
                body = text.replace(b'"', b'"\xed\xa0\x80', 1) if b'"' in text else body
            detail = "invalid UTF-8 bytes"
        else:
            value, detail = fuzzer.mutated(operation, kind)
            body = to_json(value, ascii_only=rng.random() < 0.5)
        case = self._case(fuzzer, operation, kind, body, headers=headers, detail=detail)
        case.garbage_token = (
            kind == "pagination-garbage" and detail.startswith(_PAGING_MEMBERS) and "=''" not in detail
        )
        return case

    def _rest_case(self, fuzzer: OperationFuzzer, operation: str, kind: str) -> Case:
        """A restJson1 request: the JSON case's body (members bound to the path or query string are
        ignored there by the server), sent to the operation's method and path with those members
        taken from the (possibly mutated) input."""
        case = self._json_case(fuzzer, operation, kind)
        try:
            value = json.loads(case.body)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            value, _ = fuzzer.valid(operation)
        case.method, case.path = rest_target(fuzzer, operation, value)
        return case

    def _query_case(self, fuzzer: OperationFuzzer, operation: str, kind: str) -> Case:
        rng = self.rng
        ref = fuzzer.operations[operation].get("input")
        if kind in ("valid", "boundary"):
            value, _ = fuzzer.valid(operation, boundary=kind == "boundary")
            detail = ""
        elif kind in (
            "missing-required",
            "wrong-type",
            "huge-string",
            "unicode",
            "nul",
            "lone-surrogate",
            "number-overflow",
            "pagination-garbage",
            "json-in-string",
            "policy-document",
        ):
            value, detail = fuzzer.mutated(operation, kind)
            if kind == "wrong-type" and isinstance(value, dict):
                # Query values are text: a wrong type is text the member's type cannot parse.
                self._query_wrong_type(fuzzer, ref, value)
        else:
            value, _ = fuzzer.valid(operation)
            detail = kind
        flat: dict[str, str] = {}
        if ref is not None and isinstance(value, dict):
            flatten(fuzzer, ref["shape"], value, "", flat)
        params: list[tuple[str, str]] = [
            ("Action", operation),
            ("Version", fuzzer.api_version),
            *flat.items(),
        ]
        headers: dict[str, str] = {}
        path = "/"
        if kind == "index-mangle":
            params = self._mangle_indexes(fuzzer, ref, params)
            detail = "list index " + " ".join(k for k, _ in params[2:4])[:120]
        elif kind == "map-mangle":
            params += [
                ("Tags.member.1.Key", rng.choice(_NUL + _UNICODE)),
                ("Tags.member.1.Value", "v"),
                (f"Tags.member.{rng.choice(_BAD_INDEXES)}.Key", "k"),
                ("Tags.member.1.Key.member.1", "x"),
                ("Tags.entry.1.key", "k"),
                ("PolicyArns.member.1.arn", "arn:aws:iam::111122223333:policy/x"),
                (f"PolicyArns.member.{rng.choice(_BAD_INDEXES)}.arn", "x"),
            ]
        elif kind == "duplicate-param":
            params += [
                (k, rng.choice(_WRONG_TYPES[5:7] + _NUL)) for k, _ in params[: rng.randint(1, len(params))]
            ]
        elif kind == "percent-garbage":
            body = encode_form(params) + rng.choice([b"&%zz=%", b"&a=%E0%A4%A", b"&%=&&==&", b"&=x", b"&&&&"])
            return self._case(fuzzer, operation, kind, body, detail="bad percent-encoding")
        elif kind == "invalid-utf8":
            body = encode_form(params) + rng.choice(
                [b"&Marker=%FF%FE", b"&UserName=%ED%A0%80", b"&\xff=\xfe"]
            )
            return self._case(fuzzer, operation, kind, body, detail="invalid UTF-8")
        elif kind == "deep-keys":
            key = rng.choice(["Tags", "PolicyArns", "Marker", "Path"]) + ".member.1" * rng.choice(
                [1000, 3000]
            )
            params.append((key, "x"))
        elif kind == "content-type":
            headers["Content-Type"] = rng.choice(["", "application/json", "text/xml", JSON_CONTENT_TYPE])
            detail = f"content-type {headers['Content-Type']!r}"
        elif kind == "version-garbage":
            params[1] = ("Version", rng.choice(["", "1999-01-01", "\x00", "9" * 500]))
        elif kind == "action-in-query-string":
            path = "/?" + encode_form(params[:2]).decode()
            params = params[2:]
        return self._case(
            fuzzer, operation, kind, encode_form(params), headers=headers, path=path, detail=detail
        )

    def _query_wrong_type(
        self, fuzzer: OperationFuzzer, ref: dict[str, Any] | None, value: dict[str, Any]
    ) -> None:
        if ref is None:
            return
        members = fuzzer.shapes[ref["shape"]].get("members", {})
        for name, member in members.items():
            kind = fuzzer.shapes[member["shape"]]["type"]
            if kind in ("integer", "long", "boolean", "timestamp"):
                value[name] = Raw(
                    self.rng.choice(["abc", "", "1.5", "9" * 5000, "1e309", "nan", "inf", "-0", "maybe"])
                )
                return

    def _mangle_indexes(
        self, fuzzer: OperationFuzzer, ref: dict[str, Any] | None, params: list[tuple[str, str]]
    ) -> list[tuple[str, str]]:
        rng = self.rng
        bad = rng.choice(_BAD_INDEXES)
        out = list(params)
        mangled = False
        for i, (key, val) in enumerate(out):
            if ".member." in key or ".entry." in key:
                out[i] = (_INDEX_IN_KEY.sub(lambda m: "." + str(m.group(1)) + "." + bad, key, count=1), val)
                mangled = True
                break
        if not mangled and ref is not None:
            lists = [
                member.get("locationName", name)
                for name, member in fuzzer.shapes[ref["shape"]].get("members", {}).items()
                if fuzzer.shapes[member["shape"]]["type"] in ("list", "map")
            ]
            name = rng.choice(lists) if lists else "Tags"
            out.append((f"{name}.member.{bad}", "x"))
            out.append((f"{name}.member.{bad}.Key", "k"))
        if rng.random() < 0.3:
            out += [(f"Tags.member.{n}.Key", "k") for n in (1, 999_999_999, 2)]
        return out

    def protocol_cases(self, service: str, count: int) -> Iterator[Case]:
        """Requests broken below the operation: targets, methods, bodies the dispatcher sees first."""
        fuzzer = self.fuzzers[service]
        rng = self.rng
        operations = sorted(fuzzer.handlers)
        for _ in range(count):
            operation = rng.choice(operations)
            value, _ = fuzzer.valid(operation)
            body = to_json(value) if fuzzer.protocol != "query" else b""
            choice = rng.randrange(10)
            headers: dict[str, str] = {}
            method = "POST"
            detail = ""
            op_name = operation
            if fuzzer.protocol == "rest-json":
                method, path = rest_target(fuzzer, operation, value)
                if choice < 4:
                    method = rng.choice([m for m in ("GET", "PUT", "POST", "DELETE", "PATCH") if m != method])
                    detail = f"method {method}"
                elif choice < 7:
                    path = rng.choice(
                        [
                            path + "/extra",
                            path.split("?")[0] + "/" + "A" * rng.choice([1_000, 8_000]),
                            "/analyzer/%zz",
                            "/finding//",
                            "/" + "a/" * 500,
                            path.replace("/", "//", 1),
                            path + "?" + "x=1&" * 200,
                        ]
                    )
                    detail = f"path {path[:60]!r}"
                else:
                    body = rng.choice([b"", b"{}", b"\x00" * 10, rng.randbytes(64), b"{" * 5000, b"[" * 5000])
                    detail = "raw body"
                case = self._case(
                    fuzzer,
                    operation,
                    "protocol",
                    body,
                    headers=headers,
                    method=method,
                    path=path,
                    detail=detail,
                )
                case.implemented = operation in fuzzer.handlers and detail == "raw body"
                yield case
                continue
            if fuzzer.protocol == "json":
                target = f"{fuzzer.target_prefix}.{operation}"
                targets = [
                    "A" * rng.choice([1_000, 8_000, 60_000]),
                    f"{fuzzer.target_prefix}." + "A" * rng.choice([1_000, 8_000, 60_000]),
                    f"{fuzzer.target_prefix}.",
                    fuzzer.target_prefix,
                    "." + operation,
                    f"{fuzzer.target_prefix}.{operation}.{operation}",
                    f"{fuzzer.target_prefix}.{operation.lower()}",
                    f"{fuzzer.target_prefix}.{operation}\x00",
                    f"{fuzzer.target_prefix}.{operation} ",
                    f"{fuzzer.target_prefix}.é{operation}",
                    f"{fuzzer.target_prefix}.__init__",
                    f"{fuzzer.target_prefix}.__class__",
                    f"{fuzzer.target_prefix}.handlers",
                    f"{fuzzer.target_prefix}.{operation}?x=1",
                    "TrentService." + operation if service != "kms" else "AmazonSSM." + operation,
                ]
                if choice < 6:
                    target = rng.choice(targets)
                    detail = f"target {target[:60]!r}"
                    op_name = target.rpartition(".")[2][:60]
                elif choice < 8:
                    method = rng.choice(["GET", "PUT", "DELETE", "PATCH", "OPTIONS"])
                    detail = f"method {method}"
                else:
                    body = rng.choice([b"", b"{}", b"\x00" * 10, rng.randbytes(64), b"{" * 5000, b"[" * 5000])
                    detail = "raw body"
                headers["X-Amz-Target"] = target
            else:
                params = [("Action", operation), ("Version", fuzzer.api_version)]
                if choice < 4:
                    action = rng.choice(
                        ["", "A" * 60_000, "__init__", operation.lower(), operation + "\x00", "é", "Action"]
                    )
                    params[0] = ("Action", action)
                    op_name = action[:60]
                    detail = f"action {action[:60]!r}"
                elif choice < 6:
                    params = params[1:]
                    op_name = ""
                    detail = "no Action"
                elif choice < 8:
                    method = rng.choice(["GET", "PUT", "DELETE"])
                    detail = f"method {method}"
                else:
                    many = rng.choice([2_000, 30_000])
                    params += [("Tags.member.1.Key", "k"), ("Tags.member.1.Value", "v")]
                    detail = f"{many} parameters"
                body = encode_form(params)
                if detail.endswith(" parameters"):
                    body += b"".join(b"&P%d=v&Tags.member.%d.Key=k" % (i, i + 2) for i in range(many))
            case = self._case(
                fuzzer, op_name, "protocol", body, headers=headers, method=method, detail=detail
            )
            case.implemented = op_name in fuzzer.handlers and detail.startswith(("method", "raw body"))
            yield case


# Longest value a path label or query parameter of a generated rest-json request carries: the request
# line must stay within what the HTTP parser accepts (the whole value still travels in the body).
_REST_VALUE_LIMIT = 2048


def _rest_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    text = (
        value
        if isinstance(value, str)
        else json.dumps(value)
        if isinstance(value, (dict, list))
        else str(value)
    )
    return text[:_REST_VALUE_LIMIT]


def _rest_quote(value: Any) -> str:
    return quote(_rest_text(value).encode("utf-8", "surrogatepass"), safe="")


def rest_target(fuzzer: OperationFuzzer, operation: str, value: dict[str, Any]) -> tuple[str, str]:
    """The method and path (with query string) of a restJson1 request for ``value``."""
    http = fuzzer.operations[operation].get("http", {})
    path = http.get("requestUri", "/")
    ref = fuzzer.operations[operation].get("input")
    members = fuzzer.shapes[ref["shape"]].get("members", {}) if ref else {}
    query: list[str] = []
    for name, member in members.items():
        where = member.get("locationName", name)
        if member.get("location") == "uri":
            path = path.replace("{" + where + "}", _rest_quote(value.get(name, "")))
            path = path.replace("{" + where + "+}", _rest_quote(value.get(name, "")))
        elif member.get("location") == "querystring" and name in value:
            items = value[name] if isinstance(value[name], list) else [value[name]]
            query += [f"{quote(where)}={_rest_quote(item)}" for item in items[:20]]
    return http.get("method", "POST"), path + ("?" + "&".join(query) if query else "")


AUTH_BREAKS = (
    "none",
    "garbage",
    "bad-signature",
    "huge",
    "bad-date",
    "old-date",
    "bad-token",
    "wrong-service",
    "unknown-region",
)
# Regions a valid request may be signed for (served by every test server), and one nobody serves.
OTHER_REGIONS = ("eu-west-1", "ap-southeast-2")
UNKNOWN_REGION = "xx-yyy-9"


def region_cases(campaign: Campaign, count: int) -> list[Case]:
    """Requests of random operations in other regions: served ones (fresh namespaces, so mostly
    "not found" paths), and an unknown region, which must be refused whatever the credentials."""
    rng = campaign.rng
    out = []
    services = sorted(campaign.fuzzers)
    for i in range(count):
        fuzzer = campaign.fuzzers[rng.choice(services)]
        operation = rng.choice(sorted(fuzzer.handlers))
        case = next(campaign.operation_cases(fuzzer.service, operation, 1))
        if i % 4 == 0:
            case.kind = "auth"
            case.auth = "unknown-region"
            case.region = UNKNOWN_REGION
        else:
            case.region = rng.choice(OTHER_REGIONS)
        out.append(case)
    return out


def auth_cases(campaign: Campaign, count: int) -> list[Case]:
    """Valid requests of random operations whose authentication is broken (for a signed server)."""
    rng = campaign.rng
    out = []
    services = sorted(campaign.fuzzers)
    for i in range(count):
        fuzzer = campaign.fuzzers[rng.choice(services)]
        operation = rng.choice(sorted(fuzzer.handlers))
        case = next(campaign.operation_cases(fuzzer.service, operation, 1))
        case.kind = "auth"
        case.auth = AUTH_BREAKS[i % len(AUTH_BREAKS)]
        if case.auth == "unknown-region":
            case.region = UNKNOWN_REGION
        out.append(case)
    return out


def plan(
    campaign: Campaign,
    services: dict[str, set[str]],
    per_operation: int,
    per_unimplemented: int,
    protocol_per_service: int,
) -> list[Case]:
    """Every operation of every service: implemented ones ``per_operation`` times, the model's others
    ``per_unimplemented`` times, plus protocol-level cases; shuffled (deterministically) so state
    left by one operation meets the others."""
    cases: list[Case] = []
    for service in sorted(services):
        fuzzer = campaign.fuzzers[service]
        for operation in sorted(fuzzer.operations):
            count = per_operation if operation in fuzzer.handlers else per_unimplemented
            cases.extend(campaign.operation_cases(service, operation, count))
        cases.extend(campaign.protocol_cases(service, protocol_per_service))
    campaign.rng.shuffle(cases)
    for position, case in enumerate(cases):
        case.index = position
    return cases
