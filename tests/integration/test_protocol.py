"""The awsJson1_1 protocol layer: dispatch, deserialisation errors, validation, limits, request ids.

Bad input must always get an AWS-shaped 4xx, never a 500: the fuzz tests below send a few hundred
random and malformed bodies across every KMS operation.
"""

from __future__ import annotations

import base64
import json
import random
import uuid
from collections.abc import Iterator
from typing import Any

import botocore.loaders
import pytest

from tests.integration.test_auth import JSON_CONTENT_TYPE, Reply, assert_error, build_request, call, send
from tests.support.errors import error_response
from tests.support.server import KhoaServer

KMS_MODEL: dict[str, Any] = botocore.loaders.Loader().load_service_model("kms", "service-2")
OPERATIONS = sorted(KMS_MODEL["operations"])
MAX_BODY = 1024 * 1024  # KHOA_MAX_BODY_BYTES default


@pytest.fixture(scope="module")
def lax(server: KhoaServer) -> Any:
    """A boto3 client that sends whatever it is given (no client-side validation)."""
    return server.client("kms", validate=False)


def _client_error(call_: Any, **params: Any) -> dict[str, Any]:
    response = error_response(call_, **params)
    assert response["ResponseMetadata"]["RequestId"]
    return response


# -- dispatch -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "TrentService.NoSuchOperation",
        "TrentService.listKeys",
        "TrentService.",
        "NoSuchService.ListKeys",
        "ListKeys",
    ],
)
def test_unknown_target(server: KhoaServer, target: str) -> None:
    reply = call(server.endpoint, target, {})
    assert_error(reply, "UnknownOperationException")


def test_unknown_operation_through_boto3(server: KhoaServer) -> None:
    client = server.client("kms")

    def rename(params: Any, **_: Any) -> None:
        params["headers"]["X-Amz-Target"] = "TrentService.NoSuchOperation"

    client.meta.events.register("before-call.kms.ListKeys", rename)
    response = _client_error(client.list_keys)
    assert response["Error"]["Code"] == "UnknownOperationException"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_known_operation_succeeds_with_empty_body(server: KhoaServer) -> None:
    reply = call(server.endpoint, "TrentService.ListKeys", b"")
    assert reply.status == 200
    assert reply.headers["content-type"] == JSON_CONTENT_TYPE


# -- deserialisation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b"{", b"{not json}", b"[]", b"null", b'"text"', b"12", b"\xff\xfe", b"[" * 50_000 + b"]" * 50_000],
    ids=["truncated", "not-json", "array", "null", "string", "number", "not-utf8", "deep-nesting"],
)
def test_malformed_json(server: KhoaServer, body: bytes) -> None:
    reply = call(server.endpoint, "TrentService.ListKeys", body)
    assert_error(reply, "SerializationException")


def test_body_that_is_not_json_gets_a_bare_serialization_exception(server: KhoaServer) -> None:
    reply = call(server.endpoint, "TrentService.ListKeys", b"{not json}")
    assert reply.json == {"__type": "SerializationException"}


def test_boto3_reads_the_type_mismatch_message(lax: Any) -> None:
    response = _client_error(lax.list_keys, Limit="10")
    assert response["Error"] == {
        "Code": "SerializationException",
        "Message": "STRING_VALUE can not be converted to an Integer",
    }


@pytest.mark.parametrize(
    ("operation", "params"),
    [
        ("list_keys", {"Limit": "10"}),
        ("list_keys", {"Limit": 2.5}),
        ("list_keys", {"Marker": 5}),
        ("describe_key", {"KeyId": ["a"]}),
        ("create_key", {"BypassPolicyLockoutSafetyCheck": "yes"}),
        ("encrypt", {"KeyId": "alias/x", "Plaintext": b"x", "EncryptionContext": {"a": 1}}),
    ],
)
def test_wrong_json_types_through_boto3(lax: Any, operation: str, params: dict[str, Any]) -> None:
    response = _client_error(getattr(lax, operation), **params)
    assert response["Error"]["Code"] == "SerializationException"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400


@pytest.mark.parametrize(
    ("operation", "params"),
    [
        ("DescribeKey", {"KeyId": {"a": "b"}}),
        ("DescribeKey", {"KeyId": True}),
        ("CreateKey", {"Tags": {"TagKey": "a", "TagValue": "b"}}),
        ("CreateKey", {"Tags": ["TagKey"]}),
        ("CreateKey", {"Tags": "a"}),
        ("Encrypt", {"KeyId": "alias/x", "Plaintext": "eA==", "EncryptionContext": ["a", "b"]}),
        ("Encrypt", {"KeyId": "alias/x", "Plaintext": 12}),
        ("ListKeys", {"Limit": [1]}),
        ("ListKeys", {"Limit": {"value": 1}}),
    ],
)
def test_wrong_json_types(server: KhoaServer, operation: str, params: dict[str, Any]) -> None:
    reply = call(server.endpoint, f"TrentService.{operation}", params)
    assert_error(reply, "SerializationException")


def test_blob_that_is_not_base64(server: KhoaServer) -> None:
    reply = call(server.endpoint, "TrentService.Encrypt", {"KeyId": "alias/x", "Plaintext": "%%%"})
    assert_error(reply, "SerializationException")


def test_lone_surrogate_in_a_string(server: KhoaServer) -> None:
    reply = call(server.endpoint, "TrentService.CreateKey", b'{"Description": "\\ud800"}')
    assert_error(reply, "SerializationException")


def test_escaped_unicode_round_trips(server: KhoaServer) -> None:
    reply = call(server.endpoint, "TrentService.CreateKey", b'{"Description": "\\ud83d\\udd11 kh\\u00f3a"}')
    assert reply.status == 200, reply.body
    assert reply.json["KeyMetadata"]["Description"] == "\U0001f511 khóa"


# -- validation -----------------------------------------------------------------------------------


def test_required_member(lax: Any) -> None:
    response = _client_error(lax.describe_key)
    assert response["Error"] == {
        "Code": "ValidationException",
        "Message": "1 validation error detected: Value null at 'keyId' failed to satisfy constraint: "
        "Member must not be null",
    }
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_two_required_members(lax: Any) -> None:
    response = _client_error(lax.create_alias)
    assert response["Error"]["Code"] == "ValidationException"
    assert response["Error"]["Message"] == (
        "2 validation errors detected: "
        "Value null at 'aliasName' failed to satisfy constraint: Member must not be null; "
        "Value null at 'targetKeyId' failed to satisfy constraint: Member must not be null"
    )


def test_length_range_and_enum_errors_together(lax: Any) -> None:
    response = _client_error(lax.create_key, Description="d" * 8193, KeyUsage="ENCRYPT", Tags=[])
    assert response["Error"]["Code"] == "ValidationException"
    message = response["Error"]["Message"]
    assert message.startswith("2 validation errors detected: ")
    assert (
        "at 'description' failed to satisfy constraint: Member must have length less than or equal to 8192"
        in (message)
    )
    enum = ", ".join(KMS_MODEL["shapes"]["KeyUsageType"]["enum"])
    expected = (
        "Value 'ENCRYPT' at 'keyUsage' failed to satisfy constraint: Member must satisfy enum value set"
    )
    assert f"{expected}: [{enum}]" in message


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"Limit": 0},
            "1 validation error detected: Value '0' at 'limit' failed to satisfy constraint: "
            "Member must have value greater than or equal to 1",
        ),
        (
            {"Limit": 1001},
            "1 validation error detected: Value '1001' at 'limit' failed to satisfy constraint: "
            "Member must have value less than or equal to 1000",
        ),
        (
            {"Marker": ""},
            "1 validation error detected: Value '' at 'marker' failed to satisfy constraint: "
            "Member must have length greater than or equal to 1",
        ),
    ],
)
def test_list_keys_constraints(lax: Any, params: dict[str, Any], message: str) -> None:
    response = _client_error(lax.list_keys, **params)
    assert response["Error"] == {"Code": "ValidationException", "Message": message}


def test_plaintext_is_never_echoed(lax: Any) -> None:
    secret = b"top-secret-value-" * 300  # over the 4096-byte limit
    response = _client_error(lax.encrypt, KeyId="alias/anything", Plaintext=secret)
    assert response["Error"]["Code"] == "ValidationException"
    message = response["Error"]["Message"]
    assert message == (
        "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: "
        "Member must have length less than or equal to 4096"
    )
    assert "top-secret" not in message


def test_validation_comes_before_resource_lookup(lax: Any) -> None:
    response = _client_error(lax.schedule_key_deletion, KeyId="does-not-exist", PendingWindowInDays=400)
    assert response["Error"]["Code"] == "ValidationException"


def test_service_errors_keep_model_status(server: KhoaServer) -> None:
    reply = call(server.endpoint, "TrentService.DescribeKey", {"KeyId": str(uuid.uuid4())})
    assert_error(reply, "NotFoundException")


# -- size limit -----------------------------------------------------------------------------------


def test_body_over_the_limit_is_refused_with_413(server: KhoaServer) -> None:
    body = b"{}" + b" " * (MAX_BODY - 1)
    reply = call(server.endpoint, "TrentService.ListKeys", body)
    assert reply.status == 413
    assert reply.headers["content-type"] == JSON_CONTENT_TYPE
    assert reply.code == "RequestEntityTooLargeException"
    assert reply.request_id and uuid.UUID(reply.request_id)


def test_body_at_the_limit_is_accepted(server: KhoaServer) -> None:
    body = b"{}" + b" " * (MAX_BODY - 2)
    assert len(body) == MAX_BODY
    reply = call(server.endpoint, "TrentService.ListKeys", body)
    assert reply.status == 200, reply.body[:200]


# -- request ids ----------------------------------------------------------------------------------


def test_every_response_carries_a_unique_request_id(server: KhoaServer) -> None:
    replies = [
        call(server.endpoint, "TrentService.ListKeys"),
        call(server.endpoint, "TrentService.ListKeys", sign=False),
        call(server.endpoint, "TrentService.ListKeys", secret_key="wrong"),
        call(server.endpoint, "TrentService.ListKeys", access_key="AKIAUNKNOWNKEY000000"),
        call(server.endpoint, "TrentService.Nope"),
        call(server.endpoint, "TrentService.ListKeys", b"{"),
        call(server.endpoint, "TrentService.DescribeKey", {}),
        call(server.endpoint, "TrentService.DescribeKey", {"KeyId": "alias/none"}),
        call(server.endpoint, "TrentService.ListKeys", b"{}" + b" " * MAX_BODY),
        call(server.endpoint, None, b"", method="GET", sign=False),
    ]
    ids = [reply.request_id for reply in replies]
    for reply, request_id in zip(replies, ids, strict=True):
        assert request_id, (reply.status, reply.body)
        assert str(uuid.UUID(request_id)) == request_id
    assert len(set(ids)) == len(ids)
    assert [r.status for r in replies[:-1]] == [200, 400, 400, 400, 400, 400, 400, 400, 413]
    assert 400 <= replies[-1].status < 500  # no target: the awsQuery services answer


def test_boto3_exposes_the_request_id(server: KhoaServer) -> None:
    client = server.client("kms")
    captured: dict[str, str] = {}

    def remember(http_response: Any, **_: Any) -> None:
        captured["header"] = http_response.headers["x-amzn-RequestId"]

    client.meta.events.register("after-call.kms.ListKeys", remember)
    response = client.list_keys()
    assert response["ResponseMetadata"]["RequestId"] == captured["header"]


# -- fuzzing --------------------------------------------------------------------------------------

WEIRD_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1,
    2**63,
    -(2**70),
    1e308,
    1.5,
    "",
    " ",
    "x",
    "alias/",
    "alias/aws/ebs",
    "arn:aws:kms:us-east-1:111122223333:key/00000000-0000-0000-0000-000000000000",
    "arn:aws:kms:us-east-1:111122223333:alias/none",
    "arn:",
    "00000000-0000-0000-0000-000000000000",
    "a" * 5000,
    "\u0000",
    "\U0001f511",
    "AAAA",
    "!!!",
    "====",
    [],
    [None],
    [[]],
    {},
    {"": ""},
    {"a": None},
]


class Fuzzer:
    def __init__(self, seed: int, key_ids: list[str]) -> None:
        self.rnd = random.Random(seed)
        self.key_ids = key_ids

    def weird(self) -> Any:
        return self.rnd.choice(WEIRD_VALUES)

    def value(self, shape_name: str, depth: int = 0, member: str = "") -> Any:
        if self.rnd.random() < 0.08 or depth > 3:
            return self.weird()
        shape = KMS_MODEL["shapes"][shape_name]
        kind = shape["type"]
        if kind == "structure":
            return self.structure(shape_name, depth + 1)
        if kind == "list":
            return [self.value(shape["member"]["shape"], depth + 1) for _ in range(self.rnd.randint(0, 3))]
        if kind == "map":
            out: dict[str, Any] = {}
            for _ in range(self.rnd.randint(0, 3)):
                key = self.value(shape["key"]["shape"], depth + 1)
                out[key if isinstance(key, str) else json.dumps(key)] = self.value(
                    shape["value"]["shape"], depth + 1
                )
            return out
        if kind == "string":
            if "enum" in shape and self.rnd.random() < 0.9:
                return self.rnd.choice(shape["enum"])
            if self.key_ids and ("Key" in member or "Target" in member) and self.rnd.random() < 0.8:
                return self.rnd.choice(self.key_ids)
            if self.rnd.random() < 0.5:
                size = self.rnd.randint(shape.get("min", 0), min(shape.get("max", 64), 64))
                return "".join(self.rnd.choice("abcXYZ019-_/:") for _ in range(size))
            return self.rnd.choice([v for v in WEIRD_VALUES if isinstance(v, str)])
        if kind in ("integer", "long"):
            if self.rnd.random() < 0.7:
                return self.rnd.randint(shape.get("min", 0), min(shape.get("max", 100), 10_000))
            return self.rnd.choice([0, -5, 10**12])
        if kind == "boolean":
            return self.rnd.random() < 0.5
        if kind == "blob":
            size = self.rnd.choice([0, 1, 16, 32, 100, 4097, 7000])
            return base64.b64encode(self.rnd.randbytes(size)).decode()
        if kind == "timestamp":
            return self.rnd.choice([0, 1.5e9, 4.1e9, 1e19, "2030-01-01T00:00:00Z", "never"])
        return self.weird()

    def structure(self, shape_name: str, depth: int = 0) -> dict[str, Any]:
        shape = KMS_MODEL["shapes"][shape_name]
        members = shape.get("members", {})
        required = set(shape.get("required", []))
        chosen = [m for m in members if self.rnd.random() < (0.9 if m in required else 0.35)]
        out = {name: self.value(members[name]["shape"], depth, name) for name in chosen}
        if self.rnd.random() < 0.1:
            out["Unexpected"] = self.weird()
        return out

    def body(self, operation: str) -> bytes:
        op = KMS_MODEL["operations"][operation]
        roll = self.rnd.random()
        if roll < 0.08:
            return self.rnd.randbytes(self.rnd.randint(0, 64))
        params = self.structure(op["input"]["shape"]) if "input" in op else {}
        raw = json.dumps(params, allow_nan=True).encode()
        if roll < 0.16:
            return raw[: self.rnd.randint(0, len(raw))]
        return raw


@pytest.fixture(scope="module")
def fuzz_keys(server: KhoaServer) -> Iterator[list[str]]:
    client = server.client("kms")
    specs = [
        {},
        {"KeySpec": "RSA_2048", "KeyUsage": "ENCRYPT_DECRYPT"},
        {"KeySpec": "RSA_2048", "KeyUsage": "SIGN_VERIFY"},
        {"KeySpec": "ECC_NIST_P256", "KeyUsage": "SIGN_VERIFY"},
        {"KeySpec": "HMAC_256", "KeyUsage": "GENERATE_VERIFY_MAC"},
        {"Origin": "EXTERNAL"},
    ]
    ids: list[str] = []
    for spec in specs:
        metadata = client.create_key(Description="fuzz target", **spec)["KeyMetadata"]
        ids += [metadata["KeyId"], metadata["Arn"]]
    client.create_alias(AliasName="alias/fuzz", TargetKeyId=ids[0])
    yield [*ids, "alias/fuzz"]


def _check(reply: Reply, context: str) -> None:
    assert reply.status < 500, f"{context}: {reply.status} {reply.body[:300]!r}"
    assert reply.request_id, context
    if reply.status >= 400:
        assert reply.code, f"{context}: error without __type: {reply.body[:300]!r}"


@pytest.mark.parametrize("seed", range(3))
def test_fuzz_operations_never_fail_with_500(server: KhoaServer, fuzz_keys: list[str], seed: int) -> None:
    fuzzer = Fuzzer(seed, fuzz_keys)
    for _ in range(120):
        operation = fuzzer.rnd.choice(OPERATIONS)
        body = fuzzer.body(operation)
        reply = call(server.endpoint, f"TrentService.{operation}", body)
        _check(reply, f"{operation} {body[:200]!r}")


def test_fuzz_every_operation_with_an_empty_and_a_null_body(server: KhoaServer) -> None:
    for operation in OPERATIONS:
        for body in (b"", b"{}", b"null", b'{"KeyId": null}'):
            reply = call(server.endpoint, f"TrentService.{operation}", body)
            _check(reply, f"{operation} {body!r}")


def test_fuzz_requests_outside_the_protocol(server: KhoaServer) -> None:
    rnd = random.Random(7)
    for _ in range(60):
        method = rnd.choice(["GET", "POST", "PUT", "DELETE", "PATCH"])
        path = rnd.choice(["/", "/x", "/TrentService", "//", "/%2e%2e/", "/?Action=ListKeys"])
        target = rnd.choice([None, "", "TrentService", ".", "TrentService.ListKeys", "a.b.c.d", "\u00e9.x"])
        content_type = rnd.choice(["application/x-amz-json-1.1", "application/json", "text/plain", ""])
        body = rnd.choice([b"", b"{}", rnd.randbytes(32), b"Action=ListUsers&Version=2010-05-08"])
        request = build_request(
            server.endpoint,
            target,
            body,
            sign=rnd.random() < 0.5,
            method=method,
            path=path,
            headers={"Content-Type": content_type},
        )
        reply = send(request)
        assert reply.status < 500, (method, path, target, reply.status, reply.body[:200])
        assert reply.request_id


def test_list_retirable_grants_without_a_principal(server: KhoaServer) -> None:
    reply = call(server.endpoint, "TrentService.ListRetirableGrants", {})
    assert reply.status == 400, reply.body
    assert json.loads(reply.body)["__type"] == "ValidationException"
