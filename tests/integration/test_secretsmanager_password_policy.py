"""GetRandomPassword and resource policies (Put/Get/Delete/List/ValidateResourcePolicy) through boto3
against a real server."""

from __future__ import annotations

import contextlib
import json
import string
from typing import Any

import pytest

from tests.support.errors import error_code
from tests.support.iam import trust
from tests.support.names import secret_name
from tests.support.server import ACCOUNT_ID

PUNCTUATION = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"


def password(sm: Any, **kwargs: Any) -> str:
    return str(sm.get_random_password(**kwargs)["RandomPassword"])


# -- GetRandomPassword ----------------------------------------------------------------------------


def test_default_password(sm: Any) -> None:
    for _ in range(20):
        value = password(sm)
        assert len(value) == 32
        assert set(value) <= set(string.ascii_letters + string.digits + PUNCTUATION)
        # RequireEachIncludedType defaults to true
        assert any(c in string.ascii_lowercase for c in value)
        assert any(c in string.ascii_uppercase for c in value)
        assert any(c in string.digits for c in value)
        assert any(c in PUNCTUATION for c in value)
        assert " " not in value


@pytest.mark.parametrize("length", [4, 17, 4096])
def test_length(sm: Any, length: int) -> None:
    assert len(password(sm, PasswordLength=length)) == length


def test_length_bounds(sm: Any) -> None:
    assert len(password(sm, PasswordLength=1, RequireEachIncludedType=False)) == 1
    assert error_code(sm.get_random_password, PasswordLength=3) == "InvalidParameterException"
    assert error_code(sm.get_random_password, PasswordLength=4097) == "ValidationException"


@pytest.mark.parametrize(
    ("option", "forbidden"),
    [
        ("ExcludeLowercase", string.ascii_lowercase),
        ("ExcludeUppercase", string.ascii_uppercase),
        ("ExcludeNumbers", string.digits),
        ("ExcludePunctuation", PUNCTUATION),
    ],
)
def test_exclude_classes(sm: Any, option: str, forbidden: str) -> None:
    for _ in range(10):
        value = password(sm, PasswordLength=64, **{option: True})
        assert not set(value) & set(forbidden)


def test_exclude_characters(sm: Any) -> None:
    excluded = "aeiouAEIOU0123456789!@#$%"
    for _ in range(10):
        value = password(sm, PasswordLength=100, ExcludeCharacters=excluded)
        assert not set(value) & set(excluded)


def test_include_space(sm: Any) -> None:
    values = [password(sm, PasswordLength=50, IncludeSpace=True) for _ in range(5)]
    assert all(" " in v for v in values)  # required as one of the included types


def test_only_one_class(sm: Any) -> None:
    value = password(
        sm, PasswordLength=40, ExcludeLowercase=True, ExcludeUppercase=True, ExcludePunctuation=True
    )
    assert value.isdigit()


def test_without_require_each_type(sm: Any) -> None:
    value = password(sm, PasswordLength=2, RequireEachIncludedType=False)
    assert len(value) == 2


def test_every_required_type_even_when_one_is_nearly_excluded(sm: Any) -> None:
    """One lowercase, one uppercase and one digit left, beside all of punctuation and the space, in
    six characters: about one uniform draw in 15,000 holds each type. Every answer still does, and
    comes from a bounded number of draws."""
    keep = {"a", "B", "7"}
    excluded = "".join(c for c in string.ascii_letters + string.digits if c not in keep)
    for _ in range(20):
        password = sm.get_random_password(PasswordLength=6, ExcludeCharacters=excluded, IncludeSpace=True)[
            "RandomPassword"
        ]
        assert len(password) == 6 and not set(password) & set(excluded)
        assert {"a", "B", "7", " "} <= set(password)
        assert any(c in string.punctuation for c in password)


def test_nothing_left_to_choose_from(sm: Any) -> None:
    code = error_code(
        sm.get_random_password,
        ExcludeLowercase=True,
        ExcludeUppercase=True,
        ExcludeNumbers=True,
        ExcludePunctuation=True,
    )
    assert code == "InvalidParameterException"
    code = error_code(
        sm.get_random_password,
        ExcludeLowercase=True,
        ExcludeUppercase=True,
        ExcludePunctuation=True,
        ExcludeCharacters=string.digits,
    )
    assert code == "InvalidParameterException"


# -- resource policies ----------------------------------------------------------------------------


def policy(principal: Any = None, condition: dict[str, Any] | None = None, **extra: Any) -> str:
    statement: dict[str, Any] = {
        "Effect": "Allow",
        "Principal": principal or {"AWS": f"arn:aws:iam::{ACCOUNT_ID}:root"},
        "Action": "secretsmanager:GetSecretValue",
        "Resource": "*",
        **extra,
    }
    if condition:
        statement["Condition"] = condition
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


def test_put_get_list_delete(sm: Any) -> None:
    name = secret_name("policy")
    arn = sm.create_secret(Name=name, SecretString="v")["ARN"]
    got = sm.get_resource_policy(SecretId=name)
    assert (got["ARN"], got["Name"]) == (arn, name)
    assert "ResourcePolicy" not in got
    assert sm.list_resource_policies(SecretId=name)["ResourcePolicies"] == []

    document = policy()
    put = sm.put_resource_policy(SecretId=name, ResourcePolicy=document)
    assert (put["ARN"], put["Name"], put["PolicyName"]) == (arn, name, "default")
    got = sm.get_resource_policy(SecretId=name)
    assert json.loads(got["ResourcePolicy"]) == json.loads(document)
    assert got["PolicyName"] == "default"
    assert sm.list_resource_policies(SecretId=name)["ResourcePolicies"] == [{"PolicyName": "default"}]

    deleted = sm.delete_resource_policy(SecretId=name)
    assert (deleted["ARN"], deleted["Name"], deleted["PolicyName"]) == (arn, name, "default")
    assert "ResourcePolicy" not in sm.get_resource_policy(SecretId=name)
    # deleting again is fine
    sm.delete_resource_policy(SecretId=name)


def test_only_the_default_policy_can_be_written(sm: Any) -> None:
    name = secret_name("policy")
    sm.create_secret(Name=name, SecretString="v")
    assert error_code(sm.put_resource_policy, SecretId=name, ResourcePolicy=policy(), PolicyName="other") == (
        "InvalidParameterException"
    )
    assert error_code(sm.delete_resource_policy, SecretId=name, PolicyName="other") == (
        "InvalidParameterException"
    )
    assert (
        error_code(sm.get_resource_policy, SecretId=name, PolicyName="other") == "ResourceNotFoundException"
    )
    sm.put_resource_policy(SecretId=name, ResourcePolicy=policy(), PolicyName="default")
    assert sm.get_resource_policy(SecretId=name, PolicyName="default")["PolicyName"] == "default"


@pytest.mark.parametrize(
    "document",
    [
        "not json",
        "[]",
        json.dumps({"Version": "2012-10-17"}),
        json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Maybe", "Principal": "*", "Action": "x"}]}
        ),
        json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "x", "Resource": "*"}]}
        ),
        json.dumps(
            {"Version": "1999-01-01", "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "x"}]}
        ),
        json.dumps({"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "x", "Surprise": 1}]}),
    ],
)
def test_malformed_policies(sm: Any, document: str) -> None:
    name = secret_name("policy")
    sm.create_secret(Name=name, SecretString="v")
    code = error_code(sm.put_resource_policy, SecretId=name, ResourcePolicy=document)
    assert code == "MalformedPolicyDocumentException"
    assert "ResourcePolicy" not in sm.get_resource_policy(SecretId=name)
    if document.startswith("{"):
        validated = sm.validate_resource_policy(ResourcePolicy=document)
        assert validated["PolicyValidationPassed"] is False
        assert validated["ValidationErrors"]
        assert all(e["CheckName"] and e["ErrorMessage"] for e in validated["ValidationErrors"])
    else:
        code = error_code(sm.validate_resource_policy, ResourcePolicy=document)
        assert code == "MalformedPolicyDocumentException"


@pytest.mark.parametrize(
    ("principal", "condition"),
    [
        ("*", None),
        ({"AWS": "*"}, None),
        ({"AWS": ["arn:aws:iam::111122223333:root", "*"]}, None),
        ("*", {"StringEquals": {"aws:RequestedRegion": "us-east-1"}}),
    ],
)
def test_block_public_policy_refuses_public_policies(sm: Any, principal: Any, condition: Any) -> None:
    name = secret_name("policy")
    sm.create_secret(Name=name, SecretString="v")
    document = policy(principal, condition)
    code = error_code(sm.put_resource_policy, SecretId=name, ResourcePolicy=document, BlockPublicPolicy=True)
    assert code == "PublicPolicyException"
    assert "ResourcePolicy" not in sm.get_resource_policy(SecretId=name)
    # without BlockPublicPolicy the same policy is accepted
    sm.put_resource_policy(SecretId=name, ResourcePolicy=document)
    assert "ResourcePolicy" in sm.get_resource_policy(SecretId=name)


@pytest.mark.parametrize(
    ("principal", "condition"),
    [
        ({"AWS": f"arn:aws:iam::{ACCOUNT_ID}:root"}, None),
        ({"AWS": f"arn:aws:iam::{ACCOUNT_ID}:role/app"}, None),
        ("*", {"StringEquals": {"aws:PrincipalAccount": ACCOUNT_ID}}),
        ("*", {"StringEquals": {"aws:SourceVpce": "vpce-1234"}}),
        ({"Service": "lambda.amazonaws.com"}, {"ArnLike": {"aws:SourceArn": "arn:aws:lambda:*:*:*"}}),
    ],
)
def test_block_public_policy_accepts_restricted_policies(
    sm: Any, iam: Any, principal: Any, condition: Any
) -> None:
    with contextlib.suppress(
        iam.exceptions.EntityAlreadyExistsException
    ):  # a policy names only roles that exist
        iam.create_role(RoleName="app", AssumeRolePolicyDocument=trust({"AWS": ACCOUNT_ID}))
    name = secret_name("policy")
    sm.create_secret(Name=name, SecretString="v")
    sm.put_resource_policy(SecretId=name, ResourcePolicy=policy(principal, condition), BlockPublicPolicy=True)
    assert "ResourcePolicy" in sm.get_resource_policy(SecretId=name)


def test_deny_statements_are_not_public(sm: Any) -> None:
    name = secret_name("policy")
    sm.create_secret(Name=name, SecretString="v")
    document = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Deny", "Principal": "*", "Action": "*", "Resource": "*"}],
        }
    )
    sm.put_resource_policy(SecretId=name, ResourcePolicy=document, BlockPublicPolicy=True)


def test_validate_resource_policy(sm: Any) -> None:
    name = secret_name("policy")
    sm.create_secret(Name=name, SecretString="v")
    for secret_id in (None, name):
        kwargs = {"SecretId": secret_id} if secret_id else {}
        result = sm.validate_resource_policy(ResourcePolicy=policy(), **kwargs)
        assert result["PolicyValidationPassed"] is True
        assert result["ValidationErrors"] == []
    code = error_code(sm.validate_resource_policy, SecretId=secret_name("missing"), ResourcePolicy=policy())
    assert code == "ResourceNotFoundException"


def test_policy_operations_on_missing_secrets(sm: Any) -> None:
    missing = secret_name("missing")
    for call, kwargs in (
        (sm.put_resource_policy, {"ResourcePolicy": policy()}),
        (sm.get_resource_policy, {}),
        (sm.delete_resource_policy, {}),
        (sm.list_resource_policies, {}),
    ):
        assert error_code(call, SecretId=missing, **kwargs) == "ResourceNotFoundException"
