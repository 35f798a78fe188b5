"""The protocol layer's limits on what reaches handlers: nesting depth, strict UTF-8, JSON numbers,
integer ranges, U+0000, query list indexes and XML-safe output (see tests/fuzz for the wire view)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from khoa.protocol import awsjson
from khoa.protocol.awsquery import QueryDecoder, QueryEncoder, QueryServiceModel, xml_text
from khoa.protocol.errors import AWSError
from khoa.protocol.model import ServiceModel
from tests.support.errors import raised_code


@pytest.mark.parametrize("depth", [65, 100, 900, 1_000, 5_000])
def test_bodies_nested_deeper_than_the_limit_are_refused(depth: int) -> None:
    for body in ("[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth):
        assert raised_code(lambda b=body: awsjson.decode_body(b.encode())) == "SerializationException"


def test_a_body_at_the_limit_is_parsed() -> None:
    depth = awsjson.MAX_DEPTH
    assert awsjson.decode_body(('{"a":' * depth + "1" + "}" * depth).encode())["a"]


@pytest.mark.parametrize("raw", [b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xc3\x28", b"\xff"])
def test_bodies_that_are_not_strict_utf8_are_refused(raw: bytes) -> None:
    assert (
        raised_code(lambda: awsjson.decode_body(b'{"Description":"' + raw + b'"}'))
        == "SerializationException"
    )


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_json_number_literals_are_refused(literal: str) -> None:
    assert (
        raised_code(lambda: awsjson.decode_body(('{"Limit":' + literal + "}").encode()))
        == "SerializationException"
    )


@pytest.mark.parametrize("value", [2**31, -(2**31) - 1, 2**64, 1e300])
def test_integers_outside_their_java_type_are_refused(value: int | float) -> None:
    kms = ServiceModel("kms")
    assert raised_code(lambda: kms.validate("ListKeys", {"Limit": value})) == "SerializationException"


def test_longs_take_64_bits_and_no_more() -> None:
    sts = QueryServiceModel("sts")
    decoder = QueryDecoder(sts)
    flat = {
        "RoleArn": "arn:aws:iam::111122223333:role/r",
        "RoleSessionName": "s",
        "DurationSeconds": str(2**63),
    }
    assert (
        raised_code(lambda: sts.validate("AssumeRole", decoder.decode("AssumeRole", flat)))
        == "ValidationError"
    )
    flat["DurationSeconds"] = "inf"
    assert (
        raised_code(lambda: sts.validate("AssumeRole", decoder.decode("AssumeRole", flat)))
        == "ValidationError"
    )


def test_nul_is_refused_except_in_a_secret_value() -> None:
    kms = ServiceModel("kms")
    assert raised_code(lambda: kms.validate("CreateKey", {"Description": "a\x00"})) == "ValidationException"
    secrets = ServiceModel("secretsmanager")
    assert (
        secrets.validate("CreateSecret", {"Name": "n", "SecretString": "a\x00b"})["SecretString"] == "a\x00b"
    )
    assert raised_code(lambda: secrets.validate("CreateSecret", {"Name": "n", "Description": "\x00"})) == (
        "ValidationException"
    )


@pytest.mark.parametrize("index", ["9" * 10, "9" * 5000])
def test_query_list_indexes_with_more_than_nine_digits_are_refused(index: str) -> None:
    decoder = QueryDecoder(QueryServiceModel("iam"))
    flat = {"UserName": "u", f"Tags.member.{index}.Key": "k", f"Tags.member.{index}.Value": "v"}
    assert raised_code(lambda: decoder.decode("CreateUser", flat)) == "ValidationError"


@pytest.mark.parametrize("index", ["0", "00"])
def test_query_list_members_are_numbered_from_one(index: str) -> None:
    """awsQuery lists are 1-based: a member 0 is refused as a malformed index, not taken as a member."""
    decoder = QueryDecoder(QueryServiceModel("iam"))
    flat = {"UserName": "u", f"Tags.member.{index}.Key": "zero", f"Tags.member.{index}.Value": "v"}
    assert raised_code(lambda: decoder.decode("TagUser", flat)) == "ValidationError"
    flat = {"UserName": "u", "Tags.member.1.Key": "one", "Tags.member.1.Value": "v", **flat}
    assert raised_code(lambda: decoder.decode("TagUser", flat)) == "ValidationError"


def test_query_integers_are_ascii_digits_and_nothing_else() -> None:
    """Python's int() reads all of the refused ones; AWS's parsers do not (refused as "many" is)."""
    decoder = QueryDecoder(QueryServiceModel("iam"))
    for raw in ("1_0", " 3", "3 ", "3\n", "+2", "\u0663", "1\u0660", "1" * 40):
        with pytest.raises(AWSError) as excinfo:
            decoder.decode("ListUsers", {"MaxItems": raw})
        assert (excinfo.value.code, excinfo.value.message) == (
            "ValidationError",
            f"Invalid integer for MaxItems: {raw}",
        ), raw
    assert [decoder.decode("ListUsers", {"MaxItems": raw})["MaxItems"] for raw in ("10", "007", "-5")] == [
        10,
        7,
        -5,
    ]


def test_xml_output_never_carries_what_xml_cannot() -> None:
    assert xml_text("a\x00b\x1b<&\ud800\uffff") == "a\ufffdb\ufffd&lt;&amp;\ufffd\ufffd"
    encoder = QueryEncoder(QueryServiceModel("iam"))
    body = encoder.encode_error(AWSError("ValidationError", "Value '\x00\x01' at 'userName'"), "r-1")
    assert ET.fromstring(body).find("./{*}Error/{*}Code").text == "ValidationError"  # type: ignore[union-attr]
    result = encoder.encode(
        "GetUser",
        {"User": {"UserName": "u\x02", "Path": "/", "UserId": "AIDA", "Arn": "arn", "CreateDate": 0}},
        "r-2",
    )
    ET.fromstring(result)
