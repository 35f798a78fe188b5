"""One focused test per bad-input bug the fuzz run found or issue 11 listed: each was a 500, a silently
accepted garbage value or an unparseable response; each now gets AWS's error, through the wire."""

from __future__ import annotations

import json
import uuid
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from botocore.exceptions import ClientError

from khoa.protocol import model
from tests.fuzz.generate import FORM_CONTENT_TYPE, JSON_CONTENT_TYPE, Case, encode_form
from tests.fuzz.harness import Answer, Wire, error_code
from tests.support.iam import unvalidated
from tests.support.server import ACCESS_KEY_ID, SECRET_ACCESS_KEY, KhoaServer

_PREFIXES = {
    "kms": "TrentService",
    "secretsmanager": "secretsmanager",
    "ssm": "AmazonSSM",
    "cloudtrail": "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101",
}


def _unvalidated(server: KhoaServer, service: str) -> Any:
    """A boto3 client that sends what it is given, so the server's own checks answer."""
    return unvalidated(server, service)


def _json(server: KhoaServer, service: str, operation: str, body: bytes | str) -> tuple[Answer, str | None]:
    """A signed awsJson1_1 request with exactly this body; the answer and its AWS error code."""
    raw = body.encode() if isinstance(body, str) else body
    case = Case(
        index=0,
        service=service,
        operation=operation,
        kind="regression",
        body=raw,
        headers={"X-Amz-Target": f"{_PREFIXES[service]}.{operation}", "Content-Type": JSON_CONTENT_TYPE},
        protocol="json",
        implemented=True,
        mutating=True,
    )
    wire = Wire(server, ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    try:
        answer = wire.send(case)
    finally:
        wire.close()
    return answer, error_code(case, answer)


def _query(
    server: KhoaServer, service: str, params: list[tuple[str, str]] | bytes
) -> tuple[Answer, str | None]:
    body = params if isinstance(params, bytes) else encode_form(params)
    case = Case(
        index=0,
        service=service,
        operation="",
        kind="regression",
        body=body,
        headers={"Content-Type": FORM_CONTENT_TYPE},
        protocol="query",
        implemented=True,
        mutating=True,
    )
    wire = Wire(server, ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    try:
        answer = wire.send(case)
    finally:
        wire.close()
    return answer, error_code(case, answer)


def _code(excinfo: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    response = excinfo.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


# -- Secrets Manager -------------------------------------------------------------------------------------
def test_list_secrets_filter_without_key_is_invalid_parameter(server: KhoaServer) -> None:
    sm = _unvalidated(server, "secretsmanager")
    with pytest.raises(ClientError) as excinfo:
        sm.list_secrets(Filters=[{"Values": ["x"]}])
    assert _code(excinfo) == ("InvalidParameterException", 400)
    with pytest.raises(ClientError) as excinfo:
        sm.batch_get_secret_value(Filters=[{"Values": ["x"]}])
    assert _code(excinfo) == ("InvalidParameterException", 400)


@pytest.mark.parametrize(
    "token",
    [
        "W1tbXV1dLCAieCJd",  # [[[]]], "x"
        "WzE4NDQ2NzQ0MDczNzA5NTUxNjE2LCAieCJd",  # [18446744073709551616, "x"]
        "WyJcdTAwMDAiLCAieCJd",  # ["\u0000", "x"]
        "WzEuNWUzMDksICJ4Il0=",  # [1.5e309, "x"]
        "ключ",
        "-1",
    ],
)
def test_list_secrets_garbage_next_token_is_refused(server: KhoaServer, token: str) -> None:
    sm = _unvalidated(server, "secretsmanager")
    with pytest.raises(ClientError) as excinfo:
        sm.list_secrets(NextToken=token)
    assert _code(excinfo) == ("InvalidNextTokenException", 400)
    with pytest.raises(ClientError) as excinfo:
        sm.batch_get_secret_value(SecretIdList=["anything"], NextToken=token)
    assert _code(excinfo) == ("InvalidNextTokenException", 400)


def test_replica_region_without_region_is_invalid_parameter(server: KhoaServer) -> None:
    sm = _unvalidated(server, "secretsmanager")
    name = f"fz-replica-{uuid.uuid4().hex[:8]}"
    sm.create_secret(Name=name, SecretString="v")
    with pytest.raises(ClientError) as excinfo:
        sm.replicate_secret_to_regions(
            SecretId=name, AddReplicaRegions=[{"KmsKeyId": "alias/aws/secretsmanager"}]
        )
    assert _code(excinfo) == ("InvalidParameterException", 400)
    with pytest.raises(ClientError) as excinfo:
        sm.create_secret(Name=name + "-2", SecretString="v", AddReplicaRegions=[{}])
    assert _code(excinfo) == ("InvalidParameterException", 400)
    assert sm.list_secrets(Filters=[{"Key": "name", "Values": [name + "-2"]}])["SecretList"] == []


def test_secret_tag_without_key_is_invalid_parameter(server: KhoaServer) -> None:
    sm = _unvalidated(server, "secretsmanager")
    name = f"fz-tags-{uuid.uuid4().hex[:8]}"
    with pytest.raises(ClientError) as excinfo:
        sm.create_secret(Name=name, SecretString="v", Tags=[{"Value": "no key"}])
    assert _code(excinfo) == ("InvalidParameterException", 400)
    with pytest.raises(ClientError):
        sm.describe_secret(SecretId=name)


# -- SSM -----------------------------------------------------------------------------------------------------
def test_describe_parameters_garbage_next_token_is_invalid_next_token(server: KhoaServer) -> None:
    ssm = _unvalidated(server, "ssm")
    prefix = f"/fz-token-{uuid.uuid4().hex[:8]}"
    for i in range(3):
        ssm.put_parameter(Name=f"{prefix}/p{i}", Value="v", Type="String")
    # A real token still pages.
    filters = [{"Key": "Name", "Option": "BeginsWith", "Values": [prefix]}]
    first = ssm.describe_parameters(ParameterFilters=filters, MaxResults=2)
    second = ssm.describe_parameters(ParameterFilters=filters, MaxResults=2, NextToken=first["NextToken"])
    assert [p["Name"] for p in first["Parameters"] + second["Parameters"]] == [
        f"{prefix}/p{i}" for i in range(3)
    ]
    by_path = ssm.get_parameters_by_path(Path=prefix, MaxResults=2)
    assert len(ssm.get_parameters_by_path(Path=prefix, NextToken=by_path["NextToken"])["Parameters"]) == 1
    for token in ("garbage", "AAAA", "L2Z6", "bnVsbA==", "WyJ4Il0=", "9" * 40, "ключ"):
        for call in (
            lambda t: ssm.describe_parameters(NextToken=t),
            lambda t: ssm.describe_parameters(NextToken=t, Shared=True),
            lambda t: ssm.get_parameters_by_path(Path=prefix, NextToken=t),
        ):
            with pytest.raises(ClientError) as excinfo:
                call(token)
            assert _code(excinfo) == ("InvalidNextToken", 400), token


@pytest.mark.parametrize("option", ["Contains", "BeginsWith", "Equals"])
def test_nul_in_a_name_filter_is_refused_not_matched(server: KhoaServer, option: str) -> None:
    """A NUL in a ParameterFilters value used to match every parameter (SQLite's LIKE stops at it)."""
    ssm = _unvalidated(server, "ssm")
    prefix = f"/fz-nul-{uuid.uuid4().hex[:8]}"
    ssm.put_parameter(Name=f"{prefix}/a", Value="v", Type="String")
    ssm.add_tags_to_resource(
        ResourceType="Parameter", ResourceId=f"{prefix}/a", Tags=[{"Key": "k", "Value": "v"}]
    )
    found = ssm.describe_parameters(
        ParameterFilters=[{"Key": "Name", "Option": "Contains", "Values": [prefix]}]
    )
    assert [p["Name"] for p in found["Parameters"]] == [f"{prefix}/a"]
    filters: list[list[dict[str, Any]]] = [
        [{"Key": "Name", "Option": option, "Values": values}]
        for values in (["\x00"], ["%\x00%"], [prefix + "\x00"])
    ]
    filters.append(
        [{"Key": "tag:k", "Option": "Equals" if option == "Contains" else option, "Values": ["\x00"]}]
    )
    filters.append([{"Key": "tag:k\x00", "Values": ["v"]}])
    for parameter_filters in filters:
        with pytest.raises(ClientError) as excinfo:
            ssm.describe_parameters(ParameterFilters=parameter_filters)
        assert _code(excinfo) == ("ValidationException", 400), parameter_filters
    with pytest.raises(ClientError) as excinfo:
        ssm.get_parameters_by_path(Path=prefix, ParameterFilters=[{"Key": "Label", "Values": ["\x00"]}])
    assert _code(excinfo) == ("ValidationException", 400)


def test_nul_is_refused_in_every_string_but_a_secret_value(server: KhoaServer) -> None:
    """PostgreSQL cannot store U+0000 (a 500, or a 503 from the audit trail); it is refused up front,
    the same on every backend, except in a secret's value (encrypted, never in the audit record)."""
    kms = _unvalidated(server, "kms")
    for call in (
        lambda: kms.create_key(Description="a\x00b"),
        lambda: kms.describe_key(KeyId="alias/x\x00"),
        lambda: kms.create_key(Tags=[{"TagKey": "k", "TagValue": "\x00"}]),
    ):
        with pytest.raises(ClientError) as excinfo:
            call()
        assert _code(excinfo) == ("ValidationException", 400)
    sm = _unvalidated(server, "secretsmanager")
    name = f"fz-nul-value-{uuid.uuid4().hex[:8]}"
    sm.create_secret(Name=name, SecretString="before\x00after")
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "before\x00after"
    with pytest.raises(ClientError) as excinfo:
        sm.update_secret(SecretId=name, Description="\x00")
    assert _code(excinfo) == ("ValidationException", 400)


# -- the JSON protocol -----------------------------------------------------------------------------------
@pytest.mark.parametrize("depth", [900, 1_000, 1_500, 5_000])
@pytest.mark.parametrize("shape", ["list", "map"])
def test_deeply_nested_json_is_a_400(server: KhoaServer, depth: int, shape: str) -> None:
    nested = "[" * depth + "]" * depth if shape == "list" else '{"a":' * depth + "1" + "}" * depth
    for body in (nested, '{"Description":"x","Tags":' + nested + "}", '{"Description":' + nested + "}"):
        answer, code = _json(server, "kms", "CreateKey", body)
        assert answer.status == 400, answer.body[:200]
        assert code in ("SerializationException", "ValidationException"), answer.body[:200]
    answer, code = _json(
        server, "secretsmanager", "ListSecrets", '{"Filters":[{"Key":"name","Values":' + nested + "}]}"
    )
    assert (answer.status, code) == (400, "SerializationException")


def test_lone_surrogates_are_a_serialization_exception(server: KhoaServer) -> None:
    name = f"fz-surrogate-{uuid.uuid4().hex[:8]}"
    for raw in (b"\xed\xa0\x80", b"a\xed\xbf\xbfb", b"\xed\xa0\xbd"):
        answer, code = _json(server, "kms", "CreateKey", b'{"Description":"' + raw + b'"}')
        assert (answer.status, code) == (400, "SerializationException")
        answer, code = _json(server, "ssm", "GetParameters", b'{"Names":["' + raw + b'"]}')
        assert (answer.status, code) == (400, "SerializationException")
        body = b'{"Name":"' + name.encode() + b'","SecretString":"' + raw + b'"}'
        answer, code = _json(server, "secretsmanager", "CreateSecret", body)
        assert (answer.status, code) == (400, "SerializationException")
    answer, code = _json(server, "kms", "CreateKey", '{"Description":"\\ud800"}')
    assert (answer.status, code) == (400, "SerializationException")
    with pytest.raises(ClientError):
        server.client("secretsmanager").describe_secret(SecretId=name)


@pytest.mark.parametrize(
    "number", [str(2**31), str(2**63), str(2**64), "-1e309", "1e309", "NaN", "Infinity", "1" + "0" * 5000]
)
def test_overflowing_numbers_are_a_400(server: KhoaServer, number: str) -> None:
    answer, code = _json(server, "kms", "ListKeys", '{"Limit":' + number + "}")
    assert answer.status == 400, answer.body[:200]
    assert code in ("SerializationException", "ValidationException")
    answer, code = _json(server, "ssm", "DescribeParameters", '{"MaxResults":' + number + "}")
    assert answer.status == 400, answer.body[:200]


def test_a_bom_before_the_json_is_still_accepted(server: KhoaServer) -> None:
    answer, _ = _json(server, "kms", "ListKeys", b"\xef\xbb\xbf{}")
    assert answer.status == 200


def test_kms_listings_without_pages_refuse_a_marker(server: KhoaServer) -> None:
    kms = _unvalidated(server, "kms")
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    assert kms.list_key_policies(KeyId=key_id)["PolicyNames"] == ["default"]
    for call in (
        lambda: kms.list_key_policies(KeyId=key_id, Marker="-1"),
        lambda: kms.describe_custom_key_stores(Marker="18446744073709551616"),
    ):
        with pytest.raises(ClientError) as excinfo:
            call()
        assert _code(excinfo) == ("InvalidMarkerException", 400)


# -- the query protocol (IAM, STS) -----------------------------------------------------------------------
def _parses(answer: Answer) -> ET.Element:
    return ET.fromstring(answer.body)  # raises on anything an SDK could not parse


@pytest.mark.parametrize("index", ["9" * 5000, "9" * 40, "18446744073709551616"])
def test_huge_query_list_indexes_are_a_validation_error(server: KhoaServer, index: str) -> None:
    name = f"fz-index-{uuid.uuid4().hex[:8]}"
    params = [("Action", "CreateUser"), ("Version", "2010-05-08"), ("UserName", name)]
    answer, code = _query(
        server, "iam", [*params, (f"Tags.member.{index}.Key", "k"), (f"Tags.member.{index}.Value", "v")]
    )
    assert (answer.status, code) == (400, "ValidationError")
    _parses(answer)
    with pytest.raises(ClientError):
        server.client("iam").get_user(UserName=name)
    # An ordinary large index still names one member, as before.
    answer, code = _query(
        server, "iam", [*params, ("Tags.member.999999999.Key", "k"), ("Tags.member.999999999.Value", "v")]
    )
    assert answer.status == 200, answer.body[:300]
    assert server.client("iam").list_user_tags(UserName=name)["Tags"] == [{"Key": "k", "Value": "v"}]


def test_control_characters_are_refused_by_the_unicode_patterns_and_errors_still_parse(
    server: KhoaServer,
) -> None:
    iam = _unvalidated(server, "iam")
    name = f"fz-tag-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=name)
    # \p{L}\p{Z}\p{N} patterns are enforced: letters of any script pass, NUL and controls do not.
    iam.tag_user(UserName=name, Tags=[{"Key": "clé-ключ", "Value": "値 1"}])
    for key in ("a\x00", "\x01\x02", "tab\t"):
        with pytest.raises(ClientError) as excinfo:
            iam.tag_user(UserName=name, Tags=[{"Key": key, "Value": "v"}])
        assert _code(excinfo) == ("ValidationError", 400)
    assert iam.list_user_tags(UserName=name)["Tags"] == [{"Key": "clé-ключ", "Value": "値 1"}]
    # An error that quotes the bad value is still XML an SDK can parse.
    answer, code = _query(
        server, "iam", [("Action", "GetUser"), ("Version", "2010-05-08"), ("UserName", "\x00\x01")]
    )
    assert (answer.status, code) == (400, "ValidationError")
    _parses(answer)
    answer, code = _query(server, "iam", [("Action", "No\x00Such"), ("Version", "2010-05-08")])
    assert (answer.status, code) == (400, "InvalidAction")
    _parses(answer)


def test_oversized_query_request_is_an_xml_error(server: KhoaServer) -> None:
    # Just over the limit: the client has sent everything by the time the server answers.
    body = encode_form([("Action", "ListUsers"), ("Version", "2010-05-08"), ("Marker", "A" * (1024 * 1024))])
    answer, code = _query(server, "iam", body)
    assert answer.status == 413
    assert (code, "xml" in answer.content_type) == ("RequestEntityTooLargeException", True), answer
    answer, code = _json(server, "kms", "CreateKey", json.dumps({"Description": "A" * (1024 * 1024)}))
    assert (answer.status, code) == (413, "RequestEntityTooLargeException"), answer


def test_query_request_scoped_to_another_service_gets_an_xml_error(server: KhoaServer) -> None:
    case = Case(
        index=0,
        service="sts",
        operation="GetCallerIdentity",
        kind="regression",
        body=encode_form([("Action", "GetCallerIdentity"), ("Version", "2011-06-15")]),
        headers={"Content-Type": FORM_CONTENT_TYPE},
        protocol="query",
        implemented=True,
        mutating=False,
        auth="wrong-service",
    )
    wire = Wire(server, ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    try:
        answer = wire.send(case)
    finally:
        wire.close()
    assert answer.status == 403
    assert "xml" in answer.content_type
    assert error_code(case, answer) == "SignatureDoesNotMatch"


# -- the model's patterns ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pattern", "accepted", "refused"),
    [
        (
            "[\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]+",
            ["clé ключ 値 ٣", "a_b.c:d/e=f+g-h@i"],
            ["a\x00", "tab\t", "😀", "a*b"],
        ),
        ("^([\\p{L}\\p{Z}\\p{N}\\p{P}\\p{M}]*)$", ["e\u0301!", "«a»"], ["\x7f", "$"]),
        (
            "^arn:aws[a-z0-9-]*:iam::\\d{12}:role\\/[\\w-\\/.@+=,]{1,1017}$",
            ["arn:aws:iam::111122223333:role/a-b/c.d"],
            ["arn:aws:iam::111122223333:role/é", "arn:aws:iam::١١١١٢٢٢٢٣٣٣٣:role/x"],
        ),
        (
            "[\\u0020-\\uD7FF\\uE000-\\uFFFD\\uD800\\uDC00-\\uDBFF\\uDFFF\\t]*",
            ["plain\ttext 😀"],
            ["nul\x00", "\x1b[31m"],
        ),
    ],
)
def test_java_patterns_are_enforced(pattern: str, accepted: list[str], refused: list[str]) -> None:
    """The models' Java-dialect patterns compile (Unicode categories, ``[\\w-\\/]``, surrogate pairs)
    and match as Java does (``\\w``/``\\d`` ASCII-only): before, these were not checked at all."""
    compiled = model._compile(pattern)
    assert compiled is not None
    for value in accepted:
        assert compiled.fullmatch(value), value
    for value in refused:
        assert compiled.fullmatch(value) is None, value


def test_list_resource_policies_refuses_tokens_it_did_not_issue(server: KhoaServer) -> None:
    sm = _unvalidated(server, "secretsmanager")
    name = f"fz-policies-{uuid.uuid4().hex[:8]}"
    sm.create_secret(Name=name, SecretString="v")
    document = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::111122223333:root"},
                "Action": "*",
                "Resource": "*",
            }
        ],
    }
    sm.put_resource_policy(SecretId=name, ResourcePolicy=json.dumps(document))
    page = sm.list_resource_policies(SecretId=name, MaxResults=1)
    assert page["ResourcePolicies"] == [{"PolicyName": "default"}]
    assert "NextToken" not in page
    for token in ("9" * 40, "1", "0", "-1", "\uff11", "1e3", "x"):  # \uff11: a fullwidth 1
        with pytest.raises(ClientError) as excinfo:
            sm.list_resource_policies(SecretId=name, NextToken=token)
        assert _code(excinfo) == ("InvalidNextTokenException", 400), token


def test_a_refused_update_secret_changes_nothing(server: KhoaServer) -> None:
    """UpdateSecret stored the new description (and type) before the new value failed to encrypt
    under a disabled key; found by the fuzz run's stored-state digest."""
    kms = server.client("kms")
    sm = _unvalidated(server, "secretsmanager")
    old_key = kms.create_key()["KeyMetadata"]["KeyId"]
    new_key = kms.create_key()["KeyMetadata"]["KeyId"]
    name = f"fz-update-{uuid.uuid4().hex[:8]}"
    sm.create_secret(Name=name, SecretString="v1", KmsKeyId=old_key, Description="before")
    kms.disable_key(KeyId=old_key)
    before = sm.describe_secret(SecretId=name)
    for kwargs in (
        {"Description": "after", "SecretString": "v2"},
        {"Description": "after", "Type": "", "SecretBinary": b"\x01"},
        {"Description": "after", "KmsKeyId": new_key},
    ):
        with pytest.raises(ClientError) as excinfo:
            sm.update_secret(SecretId=name, **kwargs)
        assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400, kwargs
        after = sm.describe_secret(SecretId=name)
        assert after["Description"] == "before", kwargs
        assert after.get("KmsKeyId") == before.get("KmsKeyId")
        assert after["VersionIdsToStages"] == before["VersionIdsToStages"]
    kms.enable_key(KeyId=old_key)
    sm.update_secret(SecretId=name, Description="after", KmsKeyId=new_key)
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "v1"
    assert sm.describe_secret(SecretId=name)["Description"] == "after"
