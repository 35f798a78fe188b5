"""Request validation driven by botocore's KMS model: AWS's codes and Coral-style messages."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import pytest

from khoa.protocol import awsjson
from khoa.protocol.errors import AWSError
from khoa.protocol.model import ServiceModel


@pytest.fixture(scope="module")
def kms() -> ServiceModel:
    return ServiceModel("kms")


def _refused(model: ServiceModel, operation: str, params: dict[str, Any]) -> tuple[str, str | None]:
    with pytest.raises(AWSError) as excinfo:
        model.validate(operation, params)
    assert excinfo.value.status == 400
    return excinfo.value.code, excinfo.value.message


def test_valid_request_is_returned_with_blobs_decoded(kms: ServiceModel) -> None:
    params = kms.validate(
        "Encrypt",
        {
            "KeyId": "alias/app",
            "Plaintext": base64.b64encode(b"secret").decode(),
            "EncryptionContext": {"purpose": "test"},
            "GrantTokens": ["token"],
        },
    )
    assert params == {
        "KeyId": "alias/app",
        "Plaintext": b"secret",
        "EncryptionContext": {"purpose": "test"},
        "GrantTokens": ["token"],
    }


def test_operation_without_input_members(kms: ServiceModel) -> None:
    assert kms.validate("ListKeys", {}) == {}


def test_unknown_members_and_explicit_nulls_are_ignored(kms: ServiceModel) -> None:
    params = kms.validate("DescribeKey", {"KeyId": "k", "NotAMember": {"x": 1}, "GrantTokens": None})
    assert params == {"KeyId": "k"}


def test_required_member_missing(kms: ServiceModel) -> None:
    assert _refused(kms, "DescribeKey", {}) == (
        "ValidationException",
        "1 validation error detected: Value null at 'keyId' failed to satisfy constraint: "
        "Member must not be null",
    )


def test_required_member_explicitly_null(kms: ServiceModel) -> None:
    assert _refused(kms, "DescribeKey", {"KeyId": None}) == (
        "ValidationException",
        "1 validation error detected: Value null at 'keyId' failed to satisfy constraint: "
        "Member must not be null",
    )


def test_several_errors_at_once(kms: ServiceModel) -> None:
    assert _refused(kms, "CreateAlias", {}) == (
        "ValidationException",
        "2 validation errors detected: "
        "Value null at 'aliasName' failed to satisfy constraint: Member must not be null; "
        "Value null at 'targetKeyId' failed to satisfy constraint: Member must not be null",
    )


def test_string_length_bounds(kms: ServiceModel) -> None:
    assert _refused(kms, "DescribeKey", {"KeyId": ""}) == (
        "ValidationException",
        "1 validation error detected: Value '' at 'keyId' failed to satisfy constraint: "
        "Member must have length greater than or equal to 1",
    )
    long_name = "alias/" + "a" * 251
    assert _refused(kms, "CreateAlias", {"AliasName": long_name, "TargetKeyId": "k"}) == (
        "ValidationException",
        f"1 validation error detected: Value '{long_name}' at 'aliasName' failed to satisfy constraint: "
        "Member must have length less than or equal to 256",
    )


def test_numeric_ranges(kms: ServiceModel) -> None:
    assert _refused(kms, "ListKeys", {"Limit": 0}) == (
        "ValidationException",
        "1 validation error detected: Value '0' at 'limit' failed to satisfy constraint: "
        "Member must have value greater than or equal to 1",
    )
    assert _refused(kms, "ListKeys", {"Limit": 1001}) == (
        "ValidationException",
        "1 validation error detected: Value '1001' at 'limit' failed to satisfy constraint: "
        "Member must have value less than or equal to 1000",
    )
    assert _refused(kms, "GenerateDataKey", {"KeyId": "k", "NumberOfBytes": 1025})[1] == (
        "1 validation error detected: Value '1025' at 'numberOfBytes' failed to satisfy constraint: "
        "Member must have value less than or equal to 1024"
    )
    assert kms.validate("ListKeys", {"Limit": 1000}) == {"Limit": 1000}


def test_enum_values(kms: ServiceModel) -> None:
    code, message = _refused(kms, "CreateKey", {"KeyUsage": "ENCRYPT"})
    assert code == "ValidationException"
    enum = kms.shapes["KeyUsageType"]["enum"]
    assert message == (
        "1 validation error detected: Value 'ENCRYPT' at 'keyUsage' failed to satisfy constraint: "
        f"Member must satisfy enum value set: [{', '.join(enum)}]"
    )
    assert "ENCRYPT_DECRYPT" in enum


def test_nested_paths_in_lists_of_structures(kms: ServiceModel) -> None:
    code, message = _refused(kms, "CreateKey", {"Tags": [{"TagKey": "ok", "TagValue": "v"}, {"TagKey": ""}]})
    assert code == "ValidationException"
    assert message is not None
    assert message.startswith("2 validation errors detected: ")
    assert set(message.removeprefix("2 validation errors detected: ").split("; ")) == {
        "Value '' at 'tags.2.member.tagKey' failed to satisfy constraint: "
        "Member must have length greater than or equal to 1",
        "Value null at 'tags.2.member.tagValue' failed to satisfy constraint: Member must not be null",
    }


def test_list_length_is_rendered_like_java(kms: ServiceModel) -> None:
    tokens = [f"t{i}" for i in range(11)]
    assert _refused(kms, "DescribeKey", {"KeyId": "k", "GrantTokens": tokens})[1] == (
        f"1 validation error detected: Value '[{', '.join(tokens)}]' at 'grantTokens' failed to "
        "satisfy constraint: Member must have length less than or equal to 10"
    )


def test_sensitive_values_are_not_echoed(kms: ServiceModel) -> None:
    code, message = _refused(kms, "Encrypt", {"KeyId": "k", "Plaintext": ""})
    assert code == "ValidationException"
    assert message == (
        "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: "
        "Member must have length greater than or equal to 1"
    )
    too_long = base64.b64encode(b"s3cr3t-" * 600).decode()
    message = _refused(kms, "Encrypt", {"KeyId": "k", "Plaintext": too_long})[1]
    assert message is not None
    assert "s3cr3t" not in message
    assert too_long not in message
    assert "Member must have length less than or equal to 4096" in message


def test_pattern_constraint(kms: ServiceModel) -> None:
    code, message = _refused(kms, "CreateKey", {"Policy": "\x01"})
    assert code == "ValidationException"
    assert message is not None
    assert (
        "at 'policy' failed to satisfy constraint: Member must satisfy regular expression pattern" in message
    )


def test_error_count_covers_every_problem(kms: ServiceModel) -> None:
    tags = [{"TagKey": "", "TagValue": "v"} for _ in range(12)]
    code, message = _refused(kms, "CreateKey", {"Tags": tags})
    assert code == "ValidationException"
    assert message is not None
    assert message.startswith("12 validation errors detected: ")
    assert message.count("failed to satisfy constraint") == 10  # AWS lists at most ten


@pytest.mark.parametrize(
    ("operation", "params"),
    [
        ("DescribeKey", {"KeyId": 5}),
        ("DescribeKey", {"KeyId": ["k"]}),
        ("DescribeKey", {"KeyId": {"k": 1}}),
        ("DescribeKey", {"KeyId": True}),
        ("ListKeys", {"Limit": "10"}),
        ("ListKeys", {"Limit": 1.5}),
        ("ListKeys", {"Limit": True}),
        ("ListKeys", {"Limit": None, "Marker": 7}),
        ("CreateKey", {"BypassPolicyLockoutSafetyCheck": "true"}),
        ("CreateKey", {"Tags": {"TagKey": "a", "TagValue": "b"}}),
        ("CreateKey", {"Tags": "a"}),
        ("CreateKey", {"Tags": ["a"]}),
        ("Encrypt", {"KeyId": "k", "Plaintext": 5}),
        ("Encrypt", {"KeyId": "k", "Plaintext": "not base64!"}),
        ("Encrypt", {"KeyId": "k", "Plaintext": "aGk=", "EncryptionContext": ["a"]}),
        ("Encrypt", {"KeyId": "k", "Plaintext": "aGk=", "EncryptionContext": {"a": 1}}),
        ("ImportKeyMaterial", {"ValidTo": "yesterday"}),
        ("ImportKeyMaterial", {"ValidTo": 1e20}),
        ("ImportKeyMaterial", {"ValidTo": float("nan")}),
        ("ImportKeyMaterial", {"ValidTo": True}),
    ],
)
def test_wrong_json_types_are_serialization_errors(
    kms: ServiceModel, operation: str, params: dict[str, Any]
) -> None:
    code, _ = _refused(kms, operation, params)
    assert code == "SerializationException"


def test_top_level_must_be_an_object(kms: ServiceModel) -> None:
    code, _ = _refused(kms, "ListKeys", [])  # type: ignore[arg-type]
    assert code == "SerializationException"


def test_timestamps_accept_epoch_seconds_and_iso(kms: ServiceModel) -> None:
    base = {"KeyId": "k", "ImportToken": "AA==", "EncryptedKeyMaterial": "AA=="}
    expected = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    for value in (1893456000, 1893456000.0, "2030-01-01T00:00:00Z"):
        assert kms.validate("ImportKeyMaterial", {**base, "ValidTo": value})["ValidTo"] == expected


def test_error_status_comes_from_the_model(kms: ServiceModel) -> None:
    assert kms.error_status("NotFoundException") == 400
    assert kms.error_status("KMSInternalException") == 500
    assert kms.error_status("DependencyTimeoutException") == 500  # a fault without an explicit status
    assert kms.error_status("SomethingUnknown") == 400


# -- the awsJson body decoder ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b"{not json}",
        b"[]",
        b"null",
        b'"a string"',
        b"42",
        b"\xff\xfe\x00",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"KeyId": "\\ud800"}',
        b'{"\\udfff": 1}',
    ],
    ids=[
        "truncated",
        "not-json",
        "array",
        "null",
        "string",
        "number",
        "not-utf8",
        "deeply-nested-array",
        "deeply-nested-member",
        "lone-surrogate-value",
        "lone-surrogate-key",
    ],
)
def test_decode_body_refuses_malformed_bodies(body: bytes) -> None:
    with pytest.raises(AWSError) as excinfo:
        awsjson.decode_body(body)
    assert excinfo.value.code == "SerializationException"
    assert excinfo.value.status == 400


def test_decode_body_accepts_empty_and_escaped_unicode() -> None:
    assert awsjson.decode_body(b"") == {}
    assert awsjson.decode_body(b"  \n") == {}
    assert awsjson.decode_body(b'{"Description": "\\ud83d\\ude00 \\u00e9"}') == {
        "Description": "\U0001f600 é"
    }


def test_encode_error_shape() -> None:
    body = awsjson.encode_error(AWSError("NotFoundException", "Key 'x' does not exist"))
    assert body == b'{"__type": "NotFoundException", "message": "Key \'x\' does not exist"}'


@pytest.mark.parametrize(
    ("operation", "params", "message"),
    [
        ("ListKeys", {"Limit": "10"}, "STRING_VALUE can not be converted to an Integer"),
        ("ListKeys", {"Limit": True}, "TRUE_VALUE can not be converted to an Integer"),
        ("ListKeys", {"Limit": False}, "FALSE_VALUE can not be converted to an Integer"),
        ("DescribeKey", {"KeyId": 5}, "NUMBER_VALUE can not be converted to a String"),
        ("DescribeKey", {"KeyId": 5.5}, "NUMBER_VALUE can not be converted to a String"),
        ("DescribeKey", {"KeyId": True}, "TRUE_VALUE can not be converted to a String"),
        (
            "CreateKey",
            {"BypassPolicyLockoutSafetyCheck": "true"},
            "STRING_VALUE can not be converted to a Boolean",
        ),
        (
            "CreateKey",
            {"BypassPolicyLockoutSafetyCheck": 1},
            "NUMBER_VALUE can not be converted to a Boolean",
        ),
        ("DescribeKey", {"KeyId": ["k"]}, "Start of list found where not expected"),
        ("DescribeKey", {"KeyId": {"k": "v"}}, "Start of structure or map found where not expected."),
        ("CreateKey", {"Tags": {"TagKey": "a"}}, "Start of structure or map found where not expected."),
        ("CreateKey", {"Tags": [["a"]]}, "Start of list found where not expected"),
        (
            "Encrypt",
            {"KeyId": "k", "Plaintext": "aGk=", "EncryptionContext": ["a"]},
            ("Start of list found where not expected"),
        ),
    ],
)
def test_type_mismatch_messages_match_aws(
    kms: ServiceModel, operation: str, params: dict[str, Any], message: str
) -> None:
    assert _refused(kms, operation, params) == ("SerializationException", message)


def test_body_that_is_not_json_has_no_message() -> None:
    with pytest.raises(AWSError) as excinfo:
        awsjson.decode_body(b"{not json")
    assert excinfo.value.code == "SerializationException"
    assert excinfo.value.message is None
    assert awsjson.encode_error(excinfo.value) == b'{"__type": "SerializationException"}'
