"""Parameter Store through boto3: PutParameter, GetParameter(s), DeleteParameter(s), selectors, tiers."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.support.errors import caught_code
from tests.support.names import parameter_name
from tests.support.server import ACCOUNT_ID, REGION, KhoaServer


def arn_of(name: str) -> str:
    return f"arn:aws:ssm:{REGION}:{ACCOUNT_ID}:parameter/{name.lstrip('/')}"


# -- PutParameter / GetParameter ---------------------------------------------------------------------


def test_string_round_trip(ssm: Any) -> None:
    name = parameter_name("it") + "/db/host"
    put = ssm.put_parameter(Name=name, Value="db.internal", Type="String", Description="the host")
    assert put["Version"] == 1
    assert put["Tier"] == "Standard"
    parameter = ssm.get_parameter(Name=name)["Parameter"]
    assert parameter["Name"] == name
    assert parameter["Type"] == "String"
    assert parameter["Value"] == "db.internal"
    assert parameter["Version"] == 1
    assert parameter["DataType"] == "text"
    assert parameter["ARN"] == arn_of(name)
    assert "Selector" not in parameter
    assert parameter["LastModifiedDate"].year >= 2024


def test_string_list_round_trip(ssm: Any) -> None:
    name = parameter_name("it")
    ssm.put_parameter(Name=name, Value="a,b,c", Type="StringList")
    parameter = ssm.get_parameter(Name=name)["Parameter"]
    assert parameter["Type"] == "StringList"
    assert parameter["Value"] == "a,b,c"


def test_flat_name(ssm: Any) -> None:
    name = f"flat-{uuid.uuid4().hex[:10]}"
    ssm.put_parameter(Name=name, Value="x", Type="String")
    assert ssm.get_parameter(Name=name)["Parameter"]["ARN"] == arn_of(name)
    assert ssm.get_parameter(Name=arn_of(name))["Parameter"]["Name"] == name


def test_arn_as_name(ssm: Any) -> None:
    name = parameter_name("it") + "/by/arn"
    ssm.put_parameter(Name=name, Value="v1", Type="String")
    ssm.put_parameter(Name=name, Value="v2", Type="String", Overwrite=True)
    assert ssm.get_parameter(Name=arn_of(name))["Parameter"]["Value"] == "v2"
    selected = ssm.get_parameter(Name=arn_of(name) + ":1")["Parameter"]
    assert selected["Value"] == "v1"
    assert selected["Selector"] == ":1"
    with pytest.raises(ClientError) as exc:
        ssm.get_parameter(Name=f"arn:aws:ssm:{REGION}:999999999999:parameter{name}")
    assert caught_code(exc) == "ParameterNotFound"


def test_one_level_hierarchical_name_by_arn(ssm: Any) -> None:
    name = f"/one-{uuid.uuid4().hex[:10]}"
    ssm.put_parameter(Name=name, Value="v", Type="String")
    # "/one-x" and "one-x" are one parameter, stored (and named by its ARN) without the slash, as AWS
    # does (issue 14); asked for by name, its Name echoes the form asked for.
    assert ssm.get_parameter(Name=arn_of(name))["Parameter"]["Name"] == name.lstrip("/")
    assert ssm.get_parameter(Name=name)["Parameter"]["Name"] == name


def test_leading_and_trailing_spaces_are_removed(ssm: Any) -> None:
    name = parameter_name("it")
    ssm.put_parameter(Name=f"  {name} ", Value="v", Type="String")
    assert ssm.get_parameter(Name=name)["Parameter"]["Name"] == name


def test_parameter_not_found(ssm: Any) -> None:
    with pytest.raises(ClientError) as exc:
        ssm.get_parameter(Name=parameter_name("it"))
    assert caught_code(exc) == "ParameterNotFound"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_already_exists_and_overwrite(ssm: Any) -> None:
    name = parameter_name("it")
    ssm.put_parameter(Name=name, Value="one", Type="String", Description="first")
    with pytest.raises(ClientError) as exc:
        ssm.put_parameter(Name=name, Value="two", Type="String")
    assert caught_code(exc) == "ParameterAlreadyExists"
    assert ssm.put_parameter(Name=name, Value="two", Type="String", Overwrite=True)["Version"] == 2
    # Type may be left out on update; the description is kept when not given.
    assert ssm.put_parameter(Name=name, Value="three", Overwrite=True)["Version"] == 3
    parameter = ssm.get_parameter(Name=name)["Parameter"]
    assert (parameter["Value"], parameter["Version"], parameter["Type"]) == ("three", 3, "String")
    described = ssm.describe_parameters(ParameterFilters=[{"Key": "Name", "Values": [name]}])["Parameters"]
    assert described[0]["Description"] == "first"


def test_type_required_on_create(ssm: Any) -> None:
    with pytest.raises(ClientError) as exc:
        ssm.put_parameter(Name=parameter_name("it"), Value="x")
    assert caught_code(exc) == "ValidationException"
    with pytest.raises(ClientError) as exc:
        ssm.put_parameter(Name=parameter_name("it"), Value="x", Overwrite=True)
    assert caught_code(exc) == "ValidationException"


def test_invalid_type_is_refused(ssm: Any) -> None:
    with pytest.raises(ClientError) as exc:
        ssm.put_parameter(Name=parameter_name("it"), Value="x", Type="Strng")
    assert caught_code(exc) == "ValidationException"


def test_empty_value_is_refused(ssm: Any) -> None:
    with pytest.raises(ClientError) as exc:
        ssm.put_parameter(Name=parameter_name("it"), Value="", Type="String")
    assert caught_code(exc) == "ValidationException"


def test_key_id_only_for_secure_string(ssm: Any) -> None:
    with pytest.raises(ClientError) as exc:
        ssm.put_parameter(Name=parameter_name("it"), Value="x", Type="String", KeyId="alias/aws/ssm")
    assert caught_code(exc) == "ValidationException"


def test_arn_refused_as_put_name(ssm: Any) -> None:
    with pytest.raises(ClientError) as exc:
        ssm.put_parameter(Name=arn_of(parameter_name("it")), Value="x", Type="String")
    assert caught_code(exc) == "ValidationException"


# -- AllowedPattern ----------------------------------------------------------------------------------


def test_allowed_pattern(ssm: Any) -> None:
    name = parameter_name("it")
    with pytest.raises(ClientError) as exc:
        ssm.put_parameter(Name=name, Value="abc", Type="String", AllowedPattern=r"^\d+$")
    assert caught_code(exc) == "ParameterPatternMismatchException"
    ssm.put_parameter(Name=name, Value="123", Type="String", AllowedPattern=r"^\d+$")
    # The stored pattern still applies to an update that doesn't repeat it.
    with pytest.raises(ClientError) as exc:
        ssm.put_parameter(Name=name, Value="12a", Overwrite=True)
    assert caught_code(exc) == "ParameterPatternMismatchException"
    assert ssm.put_parameter(Name=name, Value="456", Overwrite=True)["Version"] == 2
    described = ssm.describe_parameters(ParameterFilters=[{"Key": "Name", "Values": [name]}])["Parameters"]
    assert described[0]["AllowedPattern"] == r"^\d+$"


def test_invalid_allowed_pattern(ssm: Any) -> None:
    with pytest.raises(ClientError) as exc:
        ssm.put_parameter(Name=parameter_name("it"), Value="x", Type="String", AllowedPattern="([a-z")
    assert caught_code(exc) == "InvalidAllowedPatternException"


def test_a_pattern_that_backtracks_without_end_is_refused_not_run(ssm: Any) -> None:
    """ "(a+)+$" against "aaa…!" backtracks exponentially; the worker's event loop must not spend
    minutes on it (each further "a" doubles the time), so a value it cannot validate is refused."""
    name = parameter_name("it")
    with pytest.raises(ClientError) as exc:
        ssm.put_parameter(Name=name, Value="a" * 40 + "!", Type="String", AllowedPattern="(a+)+$")
    assert caught_code(exc) == "ParameterPatternMismatchException"
    ssm.put_parameter(Name=name, Value="a" * 40, Type="String", AllowedPattern="(a+)+$")
    assert ssm.get_parameter(Name=name)["Parameter"]["Value"] == "a" * 40


def test_a_pattern_that_would_expand_without_end_is_refused_not_compiled(ssm: Any) -> None:
    """Counted repeats multiply when compiled: 33 characters would build gigabytes on the event loop."""
    name = parameter_name("it")
    for bomb in ("(?:(?:(?:a{1000}){1000}){1000})", "(?:(?:[ab]{1000}){1000})"):
        with pytest.raises(ClientError) as exc:
            ssm.put_parameter(Name=name, Value="a", Type="String", AllowedPattern=bomb)
        assert caught_code(exc) == "InvalidAllowedPatternException"
    # What AllowedPattern is for still works: lookaheads, Unicode classes, a whole value spelt out.
    for pattern, value in (
        (r"^(?=.*[A-Z])(?=.*\d).{8,64}$", "Passw0rdX"),
        (r"^\p{L}+$", "Ünïcode"),
        (r"^.{8192}$", "x" * 8192),
        (r"^[a-z]{2}-\d{4}$", "ab-1234"),
    ):
        ssm.put_parameter(
            Name=parameter_name("it"), Value=value, Type="String", AllowedPattern=pattern, Tier="Advanced"
        )


# -- tags at creation --------------------------------------------------------------------------------


def test_tags_at_creation_and_with_overwrite(ssm: Any) -> None:
    name = parameter_name("it")
    ssm.put_parameter(Name=name, Value="x", Type="String", Tags=[{"Key": "team", "Value": "core"}])
    tags = ssm.list_tags_for_resource(ResourceType="Parameter", ResourceId=name)["TagList"]
    assert tags == [{"Key": "team", "Value": "core"}]
    with pytest.raises(ClientError) as exc:
        ssm.put_parameter(
            Name=name, Value="y", Type="String", Overwrite=True, Tags=[{"Key": "a", "Value": "b"}]
        )
    assert caught_code(exc) == "ValidationException"
    assert "tags and overwrite can't be used together" in exc.value.response["Error"]["Message"]


# -- tiers -------------------------------------------------------------------------------------------


def test_standard_tier_limit(ssm: Any) -> None:
    name = parameter_name("it")
    assert ssm.put_parameter(Name=name, Value="x" * 4096, Type="String")["Tier"] == "Standard"
    with pytest.raises(ClientError) as exc:
        ssm.put_parameter(Name=parameter_name("it"), Value="x" * 4097, Type="String")
    assert caught_code(exc) == "ValidationException"


def test_advanced_tier_limit(ssm: Any) -> None:
    name = parameter_name("it")
    put = ssm.put_parameter(Name=name, Value="x" * 8192, Type="String", Tier="Advanced")
    assert put["Tier"] == "Advanced"
    assert len(ssm.get_parameter(Name=name)["Parameter"]["Value"]) == 8192
    with pytest.raises(ClientError) as exc:
        ssm.put_parameter(Name=parameter_name("it"), Value="x" * 8193, Type="String", Tier="Advanced")
    assert caught_code(exc) == "ValidationException"


def test_advanced_secure_string(ssm: Any) -> None:
    name = parameter_name("it")
    value = "s" * 6000
    ssm.put_parameter(Name=name, Value=value, Type="SecureString", Tier="Advanced")
    assert ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"] == value


def test_intelligent_tiering(ssm: Any) -> None:
    small, large = parameter_name("it"), parameter_name("it")
    assert ssm.put_parameter(Name=small, Value="x", Type="String", Tier="Intelligent-Tiering")["Tier"] == (
        "Standard"
    )
    put = ssm.put_parameter(Name=large, Value="x" * 5000, Type="String", Tier="Intelligent-Tiering")
    assert put["Tier"] == "Advanced"
    described = ssm.describe_parameters(ParameterFilters=[{"Key": "Name", "Values": [small, large]}])
    tiers = {p["Name"]: p["Tier"] for p in described["Parameters"]}
    # One-level names are listed without their leading slash, as AWS lists them (issue 14).
    assert tiers == {small.lstrip("/"): "Standard", large.lstrip("/"): "Advanced"}


def test_no_downgrade_from_advanced(ssm: Any) -> None:
    name = parameter_name("it")
    ssm.put_parameter(Name=name, Value="x", Type="String", Tier="Advanced")
    with pytest.raises(ClientError) as exc:
        ssm.put_parameter(Name=name, Value="y", Type="String", Tier="Standard", Overwrite=True)
    assert caught_code(exc) == "ValidationException"
    assert "downgrade" in exc.value.response["Error"]["Message"]
    # Without a tier, or with Intelligent-Tiering, an advanced parameter stays advanced.
    assert ssm.put_parameter(Name=name, Value="y", Overwrite=True)["Tier"] == "Advanced"
    put = ssm.put_parameter(Name=name, Value="z", Overwrite=True, Tier="Intelligent-Tiering")
    assert put["Tier"] == "Advanced"


def test_upgrade_to_advanced(ssm: Any) -> None:
    name = parameter_name("it")
    ssm.put_parameter(Name=name, Value="x", Type="String")
    assert ssm.put_parameter(Name=name, Value="y", Overwrite=True, Tier="Advanced")["Tier"] == "Advanced"


# -- data types --------------------------------------------------------------------------------------


def test_data_types(ssm: Any) -> None:
    text, image = parameter_name("it"), parameter_name("it")
    ssm.put_parameter(Name=text, Value="hello", Type="String", DataType="text")
    ssm.put_parameter(Name=image, Value="ami-0123456789abcdef0", Type="String", DataType="aws:ec2:image")
    assert ssm.get_parameter(Name=image)["Parameter"]["DataType"] == "aws:ec2:image"
    assert ssm.get_parameter(Name=text)["Parameter"]["DataType"] == "text"
    # As in AWS, an aws:ec2:image value is validated after the call answers: PutParameter succeeds but
    # a value that isn't an AMI ID is neither created nor stored as a new version.
    bad = parameter_name("it")
    assert (
        ssm.put_parameter(Name=bad, Value="not-an-ami", Type="String", DataType="aws:ec2:image")["Version"]
        == 1
    )
    assert ssm.get_parameters(Names=[bad])["InvalidParameters"] == [bad]
    assert ssm.put_parameter(Name=image, Value="ami-bad", Overwrite=True)["Version"] == 2
    assert ssm.get_parameter(Name=image)["Parameter"]["Value"] == "ami-0123456789abcdef0"
    with pytest.raises(ClientError) as exc:
        ssm.put_parameter(
            Name=parameter_name("it"), Value="ami-12345678", Type="StringList", DataType="aws:ec2:image"
        )
    assert caught_code(exc) == "ValidationException"
    with pytest.raises(ClientError) as exc:
        ssm.put_parameter(Name=parameter_name("it"), Value="x", Type="String", DataType="Text")
    assert caught_code(exc) == "ValidationException"
    # The data type is kept on update.
    ssm.put_parameter(Name=image, Value="ami-12345678", Overwrite=True)
    assert ssm.get_parameter(Name=image)["Parameter"]["DataType"] == "aws:ec2:image"


# -- selectors ---------------------------------------------------------------------------------------


def test_version_and_label_selectors(ssm: Any) -> None:
    name = parameter_name("it")
    for value in ("v1", "v2", "v3"):
        ssm.put_parameter(Name=name, Value=value, Type="String", Overwrite=True)
    ssm.label_parameter_version(Name=name, ParameterVersion=2, Labels=["stable"])
    by_version = ssm.get_parameter(Name=f"{name}:1")["Parameter"]
    assert (by_version["Value"], by_version["Version"], by_version["Selector"]) == ("v1", 1, ":1")
    by_label = ssm.get_parameter(Name=f"{name}:stable")["Parameter"]
    assert (by_label["Value"], by_label["Version"], by_label["Selector"]) == ("v2", 2, ":stable")
    with pytest.raises(ClientError) as exc:
        ssm.get_parameter(Name=f"{name}:9")
    assert caught_code(exc) == "ParameterVersionNotFound"
    with pytest.raises(ClientError) as exc:
        ssm.get_parameter(Name=f"{name}:nolabel")
    assert caught_code(exc) == "ParameterVersionNotFound"


# -- GetParameters -----------------------------------------------------------------------------------


def test_get_parameters(ssm: Any) -> None:
    base = parameter_name("it")
    ssm.put_parameter(Name=f"{base}/b", Value="B", Type="String")
    ssm.put_parameter(Name=f"{base}/a", Value="A", Type="String")
    ssm.put_parameter(Name=f"{base}/s", Value="S3cr3t", Type="SecureString")
    result = ssm.get_parameters(
        Names=[f"{base}/b", f"{base}/a", f"{base}/missing", f"{base}/a:7", f"{base}/s", f"{base}/b"],
        WithDecryption=True,
    )
    assert [p["Name"] for p in result["Parameters"]] == [f"{base}/a", f"{base}/b", f"{base}/s"]
    assert [p["Value"] for p in result["Parameters"]] == ["A", "B", "S3cr3t"]
    assert sorted(result["InvalidParameters"]) == sorted([f"{base}/missing", f"{base}/a:7"])
    encrypted = ssm.get_parameters(Names=[f"{base}/s"])["Parameters"][0]["Value"]
    assert encrypted != "S3cr3t"


def test_get_parameters_limit(ssm: Any) -> None:
    with pytest.raises(ClientError) as exc:
        ssm.get_parameters(Names=[f"/n{i}" for i in range(11)])
    assert caught_code(exc) == "ValidationException"


# -- DeleteParameter(s) ------------------------------------------------------------------------------


def test_delete_parameter(ssm: Any) -> None:
    name = parameter_name("it")
    ssm.put_parameter(Name=name, Value="x", Type="String", Tags=[{"Key": "k", "Value": "v"}])
    ssm.delete_parameter(Name=name)
    with pytest.raises(ClientError) as exc:
        ssm.get_parameter(Name=name)
    assert caught_code(exc) == "ParameterNotFound"
    with pytest.raises(ClientError) as exc:
        ssm.delete_parameter(Name=name)
    assert caught_code(exc) == "ParameterNotFound"
    # A re-created parameter starts again at version 1 with no tags.
    assert ssm.put_parameter(Name=name, Value="y", Type="String")["Version"] == 1
    assert ssm.list_tags_for_resource(ResourceType="Parameter", ResourceId=name)["TagList"] == []


def test_delete_parameters(ssm: Any) -> None:
    base = parameter_name("it")
    ssm.put_parameter(Name=f"{base}/1", Value="x", Type="String")
    ssm.put_parameter(Name=f"{base}/2", Value="x", Type="String")
    result = ssm.delete_parameters(Names=[f"{base}/1", f"{base}/2", f"{base}/3"])
    assert sorted(result["DeletedParameters"]) == [f"{base}/1", f"{base}/2"]
    assert result["InvalidParameters"] == [f"{base}/3"]
    assert ssm.get_parameters(Names=[f"{base}/1"])["InvalidParameters"] == [f"{base}/1"]


# -- SecureString ------------------------------------------------------------------------------------


def test_secure_string_default_key(server: KhoaServer, ssm: Any) -> None:
    kms = server.client("kms")
    name = parameter_name("it") + "/password"
    ssm.put_parameter(Name=name, Value="hunter2-marker", Type="SecureString")
    plain = ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]
    assert plain["Value"] == "hunter2-marker"
    assert plain["Type"] == "SecureString"
    raw = ssm.get_parameter(Name=name)["Parameter"]["Value"]
    assert raw != "hunter2-marker"
    blob = base64.b64decode(raw)
    # The AWS-managed alias/aws/ssm key was created on first use; its key policy lets principals use
    # it only through Parameter Store (kms:ViaService), so a direct Decrypt is refused, as in AWS.
    managed = kms.describe_key(KeyId="alias/aws/ssm")["KeyMetadata"]
    assert managed["KeyManager"] == "AWS"
    assert (
        managed["Description"] == "Default key that protects my SSM parameters when no other key is defined"
    )
    with pytest.raises(ClientError) as exc:
        kms.decrypt(CiphertextBlob=blob, EncryptionContext={"PARAMETER_ARN": arn_of(name)})
    assert caught_code(exc) == "AccessDeniedException"
    described = ssm.describe_parameters(ParameterFilters=[{"Key": "Name", "Values": [name]}])["Parameters"]
    assert described[0]["KeyId"] == "alias/aws/ssm"


def test_secure_string_customer_key(server: KhoaServer, ssm: Any) -> None:
    kms = server.client("kms")
    key = kms.create_key(Description="ssm test key")["KeyMetadata"]
    name = parameter_name("it")
    ssm.put_parameter(Name=name, Value="customer-secret", Type="SecureString", KeyId=key["KeyId"])
    blob = base64.b64decode(ssm.get_parameter(Name=name)["Parameter"]["Value"])
    decrypted = kms.decrypt(CiphertextBlob=blob, EncryptionContext={"PARAMETER_ARN": arn_of(name)})
    assert decrypted["KeyId"] == key["Arn"]
    assert decrypted["Plaintext"] == b"customer-secret"
    with pytest.raises(ClientError) as exc:
        kms.decrypt(CiphertextBlob=blob, EncryptionContext={"PARAMETER_ARN": arn_of(name + "x")})
    assert caught_code(exc) == "InvalidCiphertextException"
    with pytest.raises(ClientError) as exc:
        kms.decrypt(CiphertextBlob=blob)
    assert caught_code(exc) == "InvalidCiphertextException"
    described = ssm.describe_parameters(ParameterFilters=[{"Key": "Name", "Values": [name]}])["Parameters"]
    assert described[0]["KeyId"] == key["KeyId"]
    # An update without KeyId keeps the key.
    ssm.put_parameter(Name=name, Value="customer-secret-2", Overwrite=True)
    blob = base64.b64decode(ssm.get_parameter(Name=name)["Parameter"]["Value"])
    decrypted = kms.decrypt(CiphertextBlob=blob, EncryptionContext={"PARAMETER_ARN": arn_of(name)})
    assert decrypted["KeyId"] == key["Arn"]
    # By alias too.
    alias = f"alias/ssm-{uuid.uuid4().hex[:8]}"
    kms.create_alias(AliasName=alias, TargetKeyId=key["KeyId"])
    other = parameter_name("it")
    ssm.put_parameter(Name=other, Value="by-alias", Type="SecureString", KeyId=alias)
    assert ssm.get_parameter(Name=other, WithDecryption=True)["Parameter"]["Value"] == "by-alias"


def test_secure_string_unknown_key(ssm: Any) -> None:
    with pytest.raises(ClientError) as exc:
        ssm.put_parameter(Name=parameter_name("it"), Value="x", Type="SecureString", KeyId=str(uuid.uuid4()))
    assert caught_code(exc) == "InvalidKeyId"
    with pytest.raises(ClientError) as exc:
        ssm.put_parameter(
            Name=parameter_name("it"), Value="x", Type="SecureString", KeyId="alias/no-such-alias"
        )
    assert caught_code(exc) == "InvalidKeyId"


def test_secure_string_asymmetric_key_refused(server: KhoaServer, ssm: Any) -> None:
    kms = server.client("kms")
    key = kms.create_key(KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]
    with pytest.raises(ClientError) as exc:
        ssm.put_parameter(Name=parameter_name("it"), Value="x", Type="SecureString", KeyId=key["KeyId"])
    assert caught_code(exc) == "InvalidKeyId"


def test_disabled_key_makes_value_unreadable(server: KhoaServer, ssm: Any) -> None:
    kms = server.client("kms")
    key = kms.create_key(Description="to disable")["KeyMetadata"]
    name = parameter_name("it")
    ssm.put_parameter(Name=name, Value="guarded", Type="SecureString", KeyId=key["KeyId"])
    kms.disable_key(KeyId=key["KeyId"])
    try:
        with pytest.raises(ClientError) as exc:
            ssm.get_parameter(Name=name, WithDecryption=True)
        assert caught_code(exc) == "InvalidKeyId"
        assert "DisabledException" in exc.value.response["Error"]["Message"]
        with pytest.raises(ClientError) as exc:
            ssm.get_parameters(Names=[name], WithDecryption=True)
        assert caught_code(exc) == "InvalidKeyId"
        with pytest.raises(ClientError) as exc:
            ssm.put_parameter(Name=name, Value="new", Overwrite=True)
        assert caught_code(exc) == "InvalidKeyId"
        # Without decryption the ciphertext is still there to read.
        assert ssm.get_parameter(Name=name)["Parameter"]["Value"] != "guarded"
    finally:
        kms.enable_key(KeyId=key["KeyId"])
    assert ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"] == "guarded"


def test_key_pending_deletion_makes_value_unreadable(server: KhoaServer, ssm: Any) -> None:
    kms = server.client("kms")
    key = kms.create_key()["KeyMetadata"]
    name = parameter_name("it")
    ssm.put_parameter(Name=name, Value="guarded", Type="SecureString", KeyId=key["KeyId"])
    kms.schedule_key_deletion(KeyId=key["KeyId"], PendingWindowInDays=7)
    with pytest.raises(ClientError) as exc:
        ssm.get_parameter(Name=name, WithDecryption=True)
    assert caught_code(exc) == "InvalidKeyId"
    kms.cancel_key_deletion(KeyId=key["KeyId"])
    kms.enable_key(KeyId=key["KeyId"])
    assert ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"] == "guarded"


def test_with_decryption_ignored_for_plain_types(ssm: Any) -> None:
    name = parameter_name("it")
    ssm.put_parameter(Name=name, Value="plain", Type="String")
    assert ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"] == "plain"


def test_type_change_on_overwrite(ssm: Any) -> None:
    name = parameter_name("it")
    ssm.put_parameter(Name=name, Value="was-plain", Type="String")
    ssm.put_parameter(Name=name, Value="now-secret", Type="SecureString", Overwrite=True)
    assert ssm.get_parameter(Name=name)["Parameter"]["Value"] != "now-secret"
    assert ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"] == "now-secret"
    history = ssm.get_parameter_history(Name=name, WithDecryption=True)["Parameters"]
    assert [(h["Type"], h["Value"]) for h in history] == [
        ("String", "was-plain"),
        ("SecureString", "now-secret"),
    ]
