"""BlockPublicPolicy's question, "does this policy grant broad access?" (khoa.access.public).

Decided by what a policy grants: an Allow to an unbounded principal is public unless a condition pins
the caller to a bounded set. The three bypasses of finding 4 restricted nothing and must be public;
genuine restrictions must not be.
"""

from __future__ import annotations

from typing import Any

import pytest

from khoa.access.policy import Policy
from khoa.access.public import is_public, public_statements

A = "111122223333"
B = "444455556666"


def policy(*statements: dict[str, Any]) -> Policy:
    return Policy.parse({"Version": "2012-10-17", "Statement": list(statements)}, "resource")


def allow(principal: Any = "*", condition: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    statement: dict[str, Any] = {
        "Effect": "Allow",
        "Principal": principal,
        "Action": "secretsmanager:GetSecretValue",
        "Resource": "*",
        **extra,
    }
    if condition is not None:
        statement["Condition"] = condition
    return statement


FINDING_4_BYPASSES = [
    {"StringLike": {"aws:PrincipalAccount": "*"}},
    {"StringNotEquals": {"aws:PrincipalAccount": "000000000000"}},
    {"StringEqualsIfExists": {"aws:SourceVpc": "vpc-1234"}},
]

PUBLIC_CONDITIONS = [
    *FINDING_4_BYPASSES,
    None,
    {},
    {"Bool": {"aws:SecureTransport": "true"}},
    {"StringEquals": {"aws:RequestedRegion": "us-east-1"}},
    {"StringEquals": {"secretsmanager:VersionStage": "AWSCURRENT"}},
    {"StringLike": {"aws:PrincipalAccount": "1111*"}},
    {"StringLike": {"aws:PrincipalAccount": ["111122223333", "?"]}},
    {"StringEquals": {"aws:PrincipalAccount": "${aws:PrincipalAccount}"}},
    {"StringLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/Admin"}},
    {"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::11112222333?:root"}},
    {"ArnLike": {"aws:SourceArn": "arn:aws:lambda:*:*:*"}},
    {"ArnEquals": {"aws:PrincipalArn": "not-an-arn"}},
    {"StringNotLike": {"aws:PrincipalOrgID": "o-abc"}},
    {"StringEqualsIfExists": {"aws:PrincipalAccount": A}},
    {"ForAnyValue:StringEquals": {"aws:PrincipalAccount": A}},
    {"ForAllValues:StringEquals": {"aws:PrincipalAccount": A}},
    {"Null": {"aws:PrincipalAccount": "false"}},
    {"IpAddress": {"aws:SourceIp": "0.0.0.0/0"}},
    {"IpAddress": {"aws:SourceIp": "::/0"}},
    {"IpAddress": {"aws:SourceIp": "0.0.0.0/1"}},
    {"IpAddress": {"aws:SourceIp": ["10.0.0.0/8", "0.0.0.0/0"]}},
    {"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}},
    {"StringEquals": {"aws:SourceIp": "10.0.0.1"}},
    {"StringLike": {"aws:PrincipalOrgPaths": "o-*/r-ab12/*"}},
    {"StringLike": {"aws:userid": "*:alice"}},
    {"StringEquals": {"aws:PrincipalOrgID": ""}},
    {"Bool": {"aws:PrincipalIsAWSService": "false"}},
]


@pytest.mark.parametrize("condition", PUBLIC_CONDITIONS)
@pytest.mark.parametrize("principal", ["*", {"AWS": "*"}, {"AWS": [f"arn:aws:iam::{A}:root", "*"]}])
def test_unbounded_principals_without_a_pinning_condition_are_public(principal: Any, condition: Any) -> None:
    assert is_public(policy(allow(principal, condition)))


RESTRICTING_CONDITIONS = [
    {"StringEquals": {"aws:PrincipalAccount": A}},
    {"StringEquals": {"aws:PrincipalAccount": 111122223333}},
    {"StringEquals": {"aws:PrincipalAccount": [A, B]}},
    {"StringEqualsIgnoreCase": {"aws:PrincipalOrgID": "o-abc123"}},
    {"StringLike": {"aws:PrincipalAccount": A}},
    {"StringEquals": {"aws:SourceAccount": A}},
    {"StringEquals": {"aws:SourceOwner": A}},
    {"StringEquals": {"aws:SourceVpc": "vpc-1234"}},
    {"StringEquals": {"aws:SourceVpce": "vpce-1234"}},
    {"ArnLike": {"aws:PrincipalArn": f"arn:aws:iam::{A}:role/*"}},
    {"ArnEquals": {"aws:PrincipalArn": f"arn:aws:iam::{A}:user/alice"}},
    {"StringLike": {"aws:PrincipalArn": f"arn:aws:iam::{A}:*"}},
    {"ArnEquals": {"aws:SourceArn": "arn:aws:s3:::my-bucket"}},
    {"StringLike": {"aws:PrincipalOrgPaths": "o-abc/r-ab12/*"}},
    {"StringLike": {"aws:userid": "AROAEXAMPLEID:*"}},
    {"StringEquals": {"aws:userid": "AIDAEXAMPLEID"}},
    {"IpAddress": {"aws:SourceIp": "203.0.113.0/24"}},
    {"IpAddress": {"aws:VpcSourceIp": ["10.0.0.0/8", "2001:db8::/32"]}},
    # One pinning condition is enough: conditions are ANDed.
    {
        "StringEquals": {"aws:PrincipalAccount": A},
        "Bool": {"aws:SecureTransport": "true"},
        "StringNotEquals": {"aws:PrincipalArn": "x"},
    },
]


@pytest.mark.parametrize("condition", RESTRICTING_CONDITIONS)
def test_conditions_that_pin_the_caller_are_not_public(condition: dict[str, Any]) -> None:
    assert not is_public(policy(allow("*", condition)))


@pytest.mark.parametrize(
    "principal",
    [
        {"AWS": A},
        {"AWS": f"arn:aws:iam::{A}:root"},
        {"AWS": f"arn:aws:iam::{B}:role/Reader"},  # a named other account is allowed by AWS too
        {"AWS": [A, B]},
        {"Service": "lambda.amazonaws.com"},
    ],
)
def test_named_principals_are_not_public(principal: Any) -> None:
    assert not is_public(policy(allow(principal)))


def test_deny_statements_are_never_public() -> None:
    assert not is_public(policy({"Effect": "Deny", "Principal": "*", "Action": "*", "Resource": "*"}))


def test_not_principal_with_allow_is_public() -> None:
    assert is_public(
        policy(
            {
                "Effect": "Allow",
                "NotPrincipal": {"AWS": f"arn:aws:iam::{A}:root"},
                "Action": "secretsmanager:GetSecretValue",
                "Resource": "*",
            }
        )
    )


def test_one_public_statement_makes_the_policy_public() -> None:
    named = allow({"AWS": A})
    broad = allow("*", {"StringLike": {"aws:PrincipalAccount": "*"}}, Sid="Broad")
    found = public_statements(policy(named, broad))
    assert [s.sid for s in found] == ["Broad"]


FENCE = {
    "Effect": "Deny",
    "Principal": "*",
    "Action": "*",
    "Resource": "*",
    "Condition": {"StringNotEquals": {"aws:PrincipalAccount": A}},
}


def test_a_deny_for_everyone_outside_a_bounded_set_fences_a_broad_allow() -> None:
    assert not is_public(policy(allow("*"), FENCE))


@pytest.mark.parametrize(
    "fence",
    [
        {**FENCE, "Condition": {"StringNotEqualsIfExists": {"aws:PrincipalAccount": A}}},
        {**FENCE, "Condition": {"StringNotLike": {"aws:PrincipalAccount": "*"}}},
        {**FENCE, "Condition": {"StringNotEquals": {"aws:RequestedRegion": "us-east-1"}}},
        {**FENCE, "Condition": {"StringEquals": {"aws:PrincipalAccount": B}}},
        {
            **FENCE,
            "Condition": {
                "StringNotEquals": {"aws:PrincipalAccount": A},
                "Bool": {"aws:SecureTransport": "true"},
            },
        },
        {**FENCE, "Action": "secretsmanager:DeleteSecret"},
        {**FENCE, "Resource": "arn:aws:secretsmanager:us-east-1:111122223333:secret:other-*"},
        {**FENCE, "Principal": {"AWS": B}},
    ],
)
def test_denies_that_do_not_fence_everyone_leave_the_allow_public(fence: dict[str, Any]) -> None:
    assert is_public(policy(allow("*"), fence))
