"""Parsing and validating policy documents ("IAM JSON policy element reference").

What IAM refuses with MalformedPolicyDocument is refused here with PolicyError; what it accepts
(including the documented seed examples) parses into statements that behave as written.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from khoa.access.policy import Policy, PolicyError, Statement

V = "2012-10-17"


def parse(statements: Any, source: str = "identity", **kwargs: Any) -> Policy:
    return Policy.parse({"Version": V, "Statement": statements}, source, **kwargs)


# --- documents IAM accepts ----------------------------------------------------------------------


def test_json_text_and_objects() -> None:
    doc = {"Version": V, "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}]}
    assert Policy.parse(json.dumps(doc)) == Policy.parse(doc)


def test_single_statement_object() -> None:
    policy = Policy.parse({"Version": V, "Statement": {"Effect": "Deny", "Action": "*", "Resource": "*"}})
    assert len(policy.statements) == 1 and policy.statements[0].effect == "Deny"


def test_elements_are_normalised() -> None:
    statement = parse(
        [
            {
                "Sid": "S1",
                "Effect": "Allow",
                "Action": "kms:Decrypt",
                "Resource": ["arn:aws:kms:*:*:key/*", "arn:aws:kms:*:*:alias/*"],
                "Condition": {"StringEquals": {"kms:ViaService": "secretsmanager.us-east-1.amazonaws.com"}},
            }
        ]
    ).statements[0]
    assert statement.sid == "S1"
    assert statement.actions == ("kms:Decrypt",)
    assert statement.resources == ("arn:aws:kms:*:*:key/*", "arn:aws:kms:*:*:alias/*")
    assert statement.principals is None and statement.not_principals is None
    assert statement.variables is True


@pytest.mark.parametrize(
    ("principal", "pairs"),
    [
        ("*", (("AWS", "*"),)),
        ({"AWS": "*"}, (("AWS", "*"),)),
        ({"AWS": "111122223333"}, (("AWS", "111122223333"),)),
        (
            {"AWS": ["arn:aws:iam::111122223333:root", "arn:aws:iam::111122223333:user/a"]},
            (("AWS", "arn:aws:iam::111122223333:root"), ("AWS", "arn:aws:iam::111122223333:user/a")),
        ),
        ({"Service": "secretsmanager.amazonaws.com"}, (("Service", "secretsmanager.amazonaws.com"),)),
        ({"Federated": "cognito-identity.amazonaws.com"}, (("Federated", "cognito-identity.amazonaws.com"),)),
        ({"CanonicalUser": "79a59df9"}, (("CanonicalUser", "79a59df9"),)),
    ],
)
def test_principal_forms(principal: Any, pairs: tuple[tuple[str, str], ...]) -> None:
    statement = parse([{"Effect": "Allow", "Principal": principal, "Action": "*"}], "resource").statements[0]
    assert statement.principals == pairs


def test_not_principal() -> None:
    statement = parse(
        [{"Effect": "Deny", "NotPrincipal": {"AWS": "111122223333"}, "Action": "*"}], "resource"
    ).statements[0]
    assert statement.principals is None and statement.not_principals == (("AWS", "111122223333"),)


@pytest.mark.parametrize("version", [None, "2008-10-17"])
def test_variables_only_in_2012_10_17(version: str | None) -> None:
    doc: dict[str, Any] = {"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    if version:
        doc["Version"] = version
    assert Policy.parse(doc).statements[0].variables is False


def test_condition_values_may_be_strings_numbers_booleans_or_lists() -> None:
    parse(
        [
            {
                "Effect": "Allow",
                "Action": "*",
                "Resource": "*",
                "Condition": {
                    "Bool": {"aws:SecureTransport": True},
                    "NumericLessThan": {"custom:n": 5, "custom:m": 2.5},
                    "StringEquals": {"aws:TagKeys": ["a", "b"]},
                    "ForAnyValue:StringLikeIfExists": {"aws:TagKeys": "x*"},
                    "Null": {"aws:TokenIssueTime": "true"},
                },
            }
        ]
    )


SEEDS = [
    # The seed examples: identity policies, key policies and resource policies.
    {
        "Version": V,
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "secretsmanager:GetSecretValue",
                "Resource": "arn:aws:secretsmanager:*:111122223333:secret:prod/*",
                "Condition": {
                    "StringEquals": {"secretsmanager:VersionStage": "AWSCURRENT"},
                    "IpAddress": {"aws:VpcSourceIp": "10.0.0.0/8"},
                },
            }
        ],
    },
    {
        "Version": V,
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath"],
                "Resource": "arn:aws:ssm:us-east-1:111122223333:parameter/myapp/production/*",
            }
        ],
    },
    {
        "Version": V,
        "Id": "key-consolepolicy-3",
        "Statement": [
            {
                "Sid": "Enable IAM User Permissions",
                "Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::111122223333:root"},
                "Action": "kms:*",
                "Resource": "*",
            },
            {
                "Sid": "Allow use of the key",
                "Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::111122223333:role/AppUser"},
                "Action": ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey*"],
                "Resource": "*",
                "Condition": {"StringEquals": {"kms:ViaService": "secretsmanager.us-east-1.amazonaws.com"}},
            },
        ],
    },
]


@pytest.mark.parametrize("seed", SEEDS)
def test_seed_examples_parse(seed: dict[str, Any]) -> None:
    source = "resource" if any("Principal" in s for s in seed["Statement"]) else "identity"
    assert Policy.parse(json.dumps(seed), source).statements


# --- documents IAM refuses ----------------------------------------------------------------------

BAD_STATEMENTS = [
    ({"Action": "*", "Resource": "*"}, "Effect"),
    ({"Effect": "allow", "Action": "*", "Resource": "*"}, "Effect"),
    ({"Effect": "Permit", "Action": "*", "Resource": "*"}, "Effect"),
    ({"Effect": "Allow", "Resource": "*"}, "actions"),
    ({"Effect": "Allow", "Action": [], "Resource": "*"}, "actions"),
    ({"Effect": "Allow", "NotAction": [], "Resource": "*"}, "actions"),
    ({"Effect": "Allow", "Action": "*", "NotAction": "kms:*", "Resource": "*"}, "actions"),
    ({"Effect": "Allow", "Action": "*", "Resource": []}, "resources"),
    ({"Effect": "Allow", "Action": "*", "Resource": "*", "NotResource": "x"}, "Resource"),
    ({"Effect": "Allow", "Action": 7, "Resource": "*"}, "strings"),
    ({"Effect": "Allow", "Action": ["kms:Decrypt", 7], "Resource": "*"}, "strings"),
    ({"Effect": "Allow", "Action": "*", "Resource": "*", "Actions": "*"}, "unknown element"),
    ({"Effect": "Allow", "Action": "*", "Resource": "*", "Sid": 5}, "Sid"),
    ({"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": "x"}, "Condition"),
    (
        {"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {"StringEqual": {"k": "v"}}},
        "Invalid Condition type",
    ),
    (
        {"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {"NullIfExists": {"k": "true"}}},
        "Invalid Condition type",
    ),
    (
        {"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {"StringEquals": "v"}},
        "condition keys",
    ),
    (
        {"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {"StringEquals": {}}},
        "condition keys",
    ),
    (
        {"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {"StringEquals": {"k": None}}},
        "condition key",
    ),
    (
        {"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {"StringEquals": {"k": {"a": 1}}}},
        "condition key",
    ),
    (
        {"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {"StringEquals": {"k": [["a"]]}}},
        "condition key",
    ),
]


@pytest.mark.parametrize(("statement", "message"), BAD_STATEMENTS)
def test_malformed_statements(statement: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        parse([statement])


@pytest.mark.parametrize(
    "document",
    [
        "{not json",
        "[]",
        '"a string"',
        json.dumps({"Version": V}),
        json.dumps({"Version": V, "Statement": []}),
        json.dumps({"Version": V, "Statement": "x"}),
        json.dumps({"Version": V, "Statement": ["x"]}),
        json.dumps(
            {"Version": "2012-10-18", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        ),
        json.dumps({"Version": 2012, "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}),
    ],
)
def test_malformed_documents(document: str) -> None:
    with pytest.raises(PolicyError):
        Policy.parse(document)


def test_identity_policies_name_no_principal() -> None:
    with pytest.raises(PolicyError, match="principal"):
        parse([{"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"}], "identity")


def test_resource_policies_may_omit_resource_and_identity_policies_may_be_required_to_have_it() -> None:
    parse([{"Effect": "Allow", "Principal": "*", "Action": "*"}], "resource")
    with pytest.raises(PolicyError, match="resources"):
        parse([{"Effect": "Allow", "Action": "*"}], "identity", require_resource=True)


def test_required_principal() -> None:
    with pytest.raises(PolicyError, match="principal"):
        parse([{"Effect": "Allow", "Action": "sts:AssumeRole"}], "resource", require_principal=True)


@pytest.mark.parametrize(
    "principal",
    ["111122223333", {"aws": "*"}, {"AWS": 5}, {"Users": ["a"]}, ["*"]],
)
def test_malformed_principals(principal: Any) -> None:
    with pytest.raises(PolicyError):
        parse([{"Effect": "Allow", "Principal": principal, "Action": "*"}], "resource")


def test_principal_and_not_principal_together() -> None:
    with pytest.raises(PolicyError, match="NotPrincipal"):
        parse([{"Effect": "Deny", "Principal": "*", "NotPrincipal": {"AWS": "1"}, "Action": "*"}], "resource")


# --- a parsed statement matches as written ---------------------------------------------------------


def test_statement_matching() -> None:
    statement = parse(
        [
            {
                "Effect": "Allow",
                "Action": "secretsmanager:Get*",
                "Resource": "arn:aws:secretsmanager:*:*:secret:${aws:username}/*",
            }
        ]
    ).statements[0]
    context = {"aws:username": ["alice"]}
    assert statement.matches_action("secretsmanager:GetSecretValue")
    assert statement.matches_action("SECRETSMANAGER:getsecretvalue")
    assert not statement.matches_action("secretsmanager:PutSecretValue")
    assert statement.matches_resource("arn:aws:secretsmanager:r:1:secret:alice/db-Ab", context)
    assert not statement.matches_resource("arn:aws:secretsmanager:r:1:secret:bob/db-Ab", context)
    assert not statement.matches_resource("arn:aws:secretsmanager:r:1:secret:alice/db-Ab", {})
    assert statement.matches_conditions({})


def test_a_statement_with_neither_action_element_matches_no_action() -> None:
    assert not Statement(effect="Allow").matches_action("kms:Decrypt")


def test_resource_policy_statement_without_resource_matches_any_resource() -> None:
    statement = parse([{"Effect": "Allow", "Principal": "*", "Action": "*"}], "resource").statements[0]
    assert statement.matches_resource("arn:aws:kms:r:1:key/k", {})


def test_not_resource_matching() -> None:
    statement = parse(
        [{"Effect": "Allow", "Action": "*", "NotResource": ["arn:aws:kms:*:*:key/secret-*"]}]
    ).statements[0]
    assert statement.matches_resource("arn:aws:kms:r:1:key/public", {})
    assert not statement.matches_resource("arn:aws:kms:r:1:key/secret-1", {})


SECRETS = "arn:aws:secretsmanager:r:1:secret:"


def _resource_statement(element: str, patterns: list[str], version: str = "2012-10-17") -> Statement:
    document = {"Version": version, "Statement": [{"Effect": "Deny", "Action": "*", element: patterns}]}
    return Policy.parse(document, "identity").statements[0]


def test_an_entry_whose_variable_has_no_value_matches_no_resource() -> None:
    """IAM User Guide, "Policy variables with no value": such an entry "will not match any resource".
    In NotResource it therefore excludes nothing: "Deny ... NotResource <your team's prefix>" denies an
    untagged caller everything, rather than not applying to it."""
    team = f"{SECRETS}${{aws:PrincipalTag/team}}/*"
    tagged = {"aws:principaltag/team": ["red"]}
    only = _resource_statement("NotResource", [team])
    assert not only.matches_resource(f"{SECRETS}red/db-Ab", tagged)
    assert only.matches_resource(f"{SECRETS}blue/db-Ab", tagged)
    assert only.matches_resource(f"{SECRETS}red/db-Ab", {})  # untagged: nothing is excluded
    assert only.matches_resource(f"{SECRETS}${{aws:PrincipalTag/team}}/db-Ab", {})  # not even the text
    # Beside other entries, those decide.
    mixed = _resource_statement("NotResource", [team, f"{SECRETS}shared/*"])
    assert not mixed.matches_resource(f"{SECRETS}shared/db-Ab", {})
    assert mixed.matches_resource(f"{SECRETS}red/db-Ab", {})
    assert not mixed.matches_resource(f"{SECRETS}red/db-Ab", tagged)
    # Before 2012-10-17 the text is literal: it excludes only a resource named by that very text.
    literal = _resource_statement("NotResource", [team], version="2008-10-17")
    assert not literal.matches_resource(f"{SECRETS}${{aws:PrincipalTag/team}}/db-Ab", {})
    assert literal.matches_resource(f"{SECRETS}red/db-Ab", {})
    # In Resource the same entry allows nothing (as before); the other entries still do.
    allowed = _resource_statement("Resource", [team])
    assert not allowed.matches_resource(f"{SECRETS}red/db-Ab", {})
    assert not allowed.matches_resource(f"{SECRETS}${{aws:PrincipalTag/team}}/db-Ab", {})
    assert allowed.matches_resource(f"{SECRETS}red/db-Ab", tagged)
    allowed_mixed = _resource_statement("Resource", [team, f"{SECRETS}shared/*"])
    assert allowed_mixed.matches_resource(f"{SECRETS}shared/db-Ab", {})
    assert not allowed_mixed.matches_resource(f"{SECRETS}red/db-Ab", {})
