"""The one strict policy grammar (khoa.access.policy): exactly IAM's JSON policy grammar, nothing else.

Covers what finding 2 of issue 11 stored although Khoa could not read it, the JSON-level traps
(deep nesting, duplicate keys, NaN), and the fail-closed reading of a stored document that does not
parse: an explicit deny, never an empty policy.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from khoa.access.directory import parsed
from khoa.access.evaluate import Request, evaluate
from khoa.access.policy import MAX_DEPTH, UNREADABLE_SID, Policy, PolicyError, check_depth, deny_all
from khoa.auth.principal import Principal

V = "2012-10-17"
A = "111122223333"
ALICE = Principal(
    A, f"arn:aws:iam::{A}:user/alice", "AIDAALICE", "IAMUser", name="alice", principal_id="AIDAALICE"
)
SECRET = f"arn:aws:secretsmanager:us-east-1:{A}:secret:db-AbCdEf"


def resource_doc(drop: tuple[str, ...] = (), **statement: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"Effect": "Allow", "Principal": {"AWS": A}, "Action": "secretsmanager:*"}
    base.update(statement)
    for name in drop:
        del base[name]
    return {"Version": V, "Statement": [base]}


# --- the five shapes finding 2 stored -------------------------------------------------------------

FINDING_2 = [
    resource_doc(Principal=42),
    resource_doc(Condition={"StringEqualz": {"aws:PrincipalAccount": A}}),
    resource_doc(Principal={"aws": "*"}),
    resource_doc(Resource="*", NotResource="arn:aws:secretsmanager:*:*:secret:x"),
    resource_doc(Action=["secretsmanager:GetSecretValue", 7]),
]


@pytest.mark.parametrize("document", FINDING_2)
def test_finding_2_documents_are_refused(document: dict[str, Any]) -> None:
    with pytest.raises(PolicyError):
        Policy.parse(json.dumps(document), "resource", require_principal=True)


# --- the grammar, element by element -----------------------------------------------------------------

REFUSED = [
    # document level
    {"Version": V},
    {"Version": V, "Statement": []},
    {"Version": "2012-10-17 ", "Statement": resource_doc()["Statement"]},
    {"Version": ["2012-10-17"], "Statement": resource_doc()["Statement"]},
    {"Version": V, "Id": 5, "Statement": resource_doc()["Statement"]},
    {"Version": V, "Statement": resource_doc()["Statement"], "Extra": "x"},
    {"version": V, "Statement": resource_doc()["Statement"]},
    {"Version": V, "Statement": [resource_doc()["Statement"][0], "x"]},
    {"Version": V, "Statement": [[resource_doc()["Statement"][0]]]},
    # statement keys and Effect
    resource_doc(Effect="allow"),
    resource_doc(Effect=["Allow"]),
    resource_doc(Effect=None),
    resource_doc(Sid=None),
    resource_doc(Sid=["a"]),
    resource_doc(Actions="*"),
    resource_doc(effect="Allow"),
    # principals
    resource_doc(Principal=["*"]),
    resource_doc(Principal={}),
    resource_doc(Principal={"AWS": []}),
    resource_doc(Principal={"AWS": [A, 5]}),
    resource_doc(Principal={"AWS": [[A]]}),
    resource_doc(Principal={"AWS": {"x": A}}),
    resource_doc(Principal={"Users": A}),
    resource_doc(Principal={"AWS": "arn:aws:iam::*:root"}),
    resource_doc(Principal={"AWS": f"arn:aws:iam::{A}:user/*"}),
    resource_doc(Principal={"AWS": "someone"}),
    resource_doc(Principal={"AWS": ""}),
    resource_doc(Principal={"Service": ""}),
    resource_doc(Principal=None),
    resource_doc(Principal="*", NotPrincipal={"AWS": A}),
    # actions and resources
    resource_doc(Action=[]),
    resource_doc(Action=""),
    resource_doc(Action=5),
    resource_doc(Action=True),
    resource_doc(Action=[["secretsmanager:GetSecretValue"]]),
    resource_doc(Action="GetSecretValue"),
    resource_doc(Action="secretsmanager:*", NotAction="kms:*"),
    resource_doc(Action=None),
    resource_doc(Resource=[]),
    resource_doc(Resource=42),
    resource_doc(Resource=["*", None]),
    resource_doc(Resource="secret-name"),
    resource_doc(NotResource={"a": "b"}),
    # conditions
    resource_doc(Condition="x"),
    resource_doc(Condition=None),
    resource_doc(Condition=[{"StringEquals": {"k": "v"}}]),
    resource_doc(Condition={"StringEqualz": {"aws:PrincipalAccount": A}}),
    resource_doc(Condition={"stringequals": {"aws:PrincipalAccount": A}}),
    resource_doc(Condition={"forAnyValue:StringEquals": {"aws:TagKeys": "a"}}),
    resource_doc(Condition={"ForSomeValues:StringEquals": {"aws:TagKeys": "a"}}),
    resource_doc(Condition={"StringEqualsifexists": {"aws:TagKeys": "a"}}),
    resource_doc(Condition={"NullIfExists": {"aws:TagKeys": "true"}}),
    resource_doc(Condition={"StringEquals": {}}),
    resource_doc(Condition={"StringEquals": "v"}),
    resource_doc(Condition={"StringEquals": {"k": None}}),
    resource_doc(Condition={"StringEquals": {"k": []}}),
    resource_doc(Condition={"StringEquals": {"k": [["v"]]}}),
    resource_doc(Condition={"StringEquals": {"k": {"v": 1}}}),
    resource_doc(Condition={"StringEquals": {"": "v"}}),
]


@pytest.mark.parametrize("document", REFUSED)
def test_refused(document: dict[str, Any]) -> None:
    with pytest.raises(PolicyError):
        Policy.parse(json.dumps(document), "resource", require_principal=True)


ACCEPTED = [
    resource_doc(),
    {"Statement": resource_doc()["Statement"][0]},
    {"Version": "2008-10-17", "Id": "doc-1", "Statement": resource_doc()["Statement"]},
    resource_doc(Principal="*"),
    resource_doc(Principal={"AWS": "*"}),
    resource_doc(Principal={"AWS": [A, f"arn:aws:iam::{A}:role/path/App", "AIDAJQABLZS4A3QDU576Q"]}),
    resource_doc(
        Principal={"Service": ["lambda.amazonaws.com"], "Federated": "cognito-identity.amazonaws.com"}
    ),
    resource_doc(Principal={"CanonicalUser": "79a59df900b949e55d96a1e698fbaced"}),
    resource_doc(("Principal",), Effect="Deny", NotPrincipal={"AWS": f"arn:aws:iam::{A}:root"}),
    resource_doc(Action=["secretsmanager:Get*", "kms:Decrypt", "secretsmanager:?etSecretValue"]),
    resource_doc(("Action",), NotAction="secretsmanager:DeleteSecret", Resource="*"),
    resource_doc(Resource=["arn:aws:secretsmanager:*:*:secret:${aws:username}-*"]),
    resource_doc(NotResource="arn:aws:secretsmanager:us-east-1:111122223333:secret:x-*"),
    resource_doc(Sid="Any text, even with spaces"),
    resource_doc(Condition={}),
    resource_doc(
        Condition={
            "StringEquals": {"aws:PrincipalAccount": [A, "444455556666"]},
            "StringNotEqualsIgnoreCaseIfExists": {"aws:PrincipalTag/team": "x"},
            "ForAnyValue:StringLike": {"aws:TagKeys": ["a*", "b"]},
            "ForAllValues:ArnLikeIfExists": {"aws:SourceArn": "arn:aws:lambda:*:*:*"},
            "NumericLessThanEquals": {"aws:MultiFactorAuthAge": 3600},
            "DateGreaterThan": {"aws:CurrentTime": "2020-01-01T00:00:00Z"},
            "Bool": {"aws:SecureTransport": True},
            "BinaryEquals": {"custom:blob": "QmluYXJ5"},
            "IpAddress": {"aws:SourceIp": ["10.0.0.0/8", "2001:db8::/32"]},
            "NotIpAddress": {"aws:SourceIp": "10.1.0.0/16"},
            "ArnNotEquals": {"aws:PrincipalArn": f"arn:aws:iam::{A}:role/x"},
            "Null": {"aws:TokenIssueTime": "true"},
            "NumericEquals": {"custom:n": 2.5},
        }
    ),
]


@pytest.mark.parametrize("document", ACCEPTED)
def test_accepted(document: dict[str, Any]) -> None:
    assert Policy.parse(json.dumps(document), "resource", require_principal=True).statements


# --- JSON-level traps ----------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1500, 100_000])
def test_deep_nesting_is_refused_before_the_json_parser_recurses(depth: int) -> None:
    document = '{"Version": "2012-10-17", "Statement": ' + "[" * depth + "]" * depth + "}"
    with pytest.raises(PolicyError, match="nested"):
        Policy.parse(document, "resource")
    condition = '{"StringEquals": {"k": ' + "[" * depth + '"v"' + "]" * depth + "}}"
    with pytest.raises(PolicyError, match="nested"):
        Policy.parse(json.dumps(resource_doc()).replace('"Action"', f'"Condition": {condition}, "Action"'))


def test_brackets_inside_strings_do_not_count_towards_depth() -> None:
    check_depth(json.dumps({"Sid": "[" * 1000 + '\\"{' * 500}))
    doc = resource_doc(Sid="[[[[{{{{" * 100 + '"')
    assert Policy.parse(json.dumps(doc), "resource").statements[0].sid.startswith("[[[[")


def test_unterminated_deep_text_is_a_syntax_error_not_a_crash() -> None:
    for text in ("[" * 5000, '{"a": "' + "[" * 5000, '"\\"' + "[" * 5000, "{" * 5000):
        with pytest.raises(PolicyError):
            Policy.parse(text, "resource")


@pytest.mark.parametrize(
    "text",
    [
        '{"Version": "2012-10-17", "Statement": {"Effect": "Deny", "Effect": "Allow", "Principal": "*", '
        '"Action": "*"}}',
        '{"Version": "2012-10-17", "Version": "2012-10-17", "Statement": {"Effect": "Allow", '
        '"Principal": "*", "Action": "*"}}',
        '{"Statement": {"Effect": "Allow", "Principal": "*", "Action": "*", '
        '"Condition": {"StringEquals": {"aws:PrincipalAccount": "1", "aws:PrincipalAccount": "2"}}}}',
        '{"Statement": {"Effect": "Allow", "Principal": "*", "Action": "*", '
        '"Condition": {"NumericEquals": {"custom:n": NaN}}}}',
        '{"Statement": {"Effect": "Allow", "Principal": "*", "Action": "*", '
        '"Condition": {"NumericLessThan": {"custom:n": Infinity}}}}',
        '{"Statement": {"Effect": "Allow", "Principal": "*", "Action": "*", '
        '"Condition": {"NumericLessThan": {"custom:n": 1e400}}}}',
        '{"Statement": {"Effect": "Allow", "Principal": "*", "Action": "*", '
        '"Condition": {"NumericLessThan": {"custom:n": ' + "9" * 5000 + "}}}}",
        "not json",
        "",
        "[]",
        "null",
        '"a string"',
        '{"Statement": {"Effect": "Allow", "Principal": "*", "Action": "*"}} trailing',
    ],
)
def test_json_that_parsers_would_read_differently_is_refused(text: str) -> None:
    with pytest.raises(PolicyError):
        Policy.parse(text, "resource")


# --- IAM's own Sid rules --------------------------------------------------------------------------------


def identity_doc(*sids: str) -> str:
    statements = [{"Sid": sid, "Effect": "Allow", "Action": "kms:*", "Resource": "*"} for sid in sids]
    return json.dumps({"Version": V, "Statement": statements})


def test_iam_sids_are_alphanumeric_and_unique() -> None:
    Policy.parse(identity_doc("One", "Two2"), "identity", iam=True)
    Policy.parse(identity_doc("", ""), "identity", iam=True)
    with pytest.raises(PolicyError, match="alpha-numeric"):
        Policy.parse(identity_doc("Not allowed"), "identity", iam=True)
    with pytest.raises(PolicyError, match="unique"):
        Policy.parse(identity_doc("Same", "Same"), "identity", iam=True)
    # Resource policies of other services (KMS, Secrets Manager) take any Sid text, repeated or not.
    doc = json.loads(identity_doc("Same text", "Same text"))
    for statement in doc["Statement"]:
        statement["Principal"] = {"AWS": A}
    assert len(Policy.parse(json.dumps(doc), "resource").statements) == 2


def test_identity_policies_name_no_principal() -> None:
    with pytest.raises(PolicyError, match="principal"):
        Policy.parse(json.dumps(resource_doc(Resource="*")), "identity")


# --- a stored document that does not parse is an explicit deny -------------------------------------


def _request(action: str = "secretsmanager:GetSecretValue") -> Request:
    return Request(ALICE, action, SECRET, A, {"aws:principalaccount": [A]})


ALLOW_ALL = Policy.parse({"Version": V, "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})


@pytest.mark.parametrize("document", [json.dumps(d) for d in FINDING_2] + ["{", "[" * 5000])
def test_unparseable_stored_resource_policy_denies(document: str) -> None:
    policy = parsed(document, "resource")
    assert policy == deny_all("resource")
    decision = evaluate(_request(), identity=[ALLOW_ALL], resource=policy)
    assert not decision.allowed and decision.explicit_deny and decision.deciding_sid == UNREADABLE_SID
    # Even a key policy-style required resource policy, and the account root, are denied.
    root = Principal.account_root(A)
    decision = evaluate(
        Request(root, "kms:Encrypt", SECRET, A), identity=[], resource=policy, key_policy=True
    )
    assert not decision.allowed and decision.explicit_deny


@pytest.mark.parametrize("source", ["identity", "boundary", "session"])
def test_unparseable_stored_identity_side_policies_deny(source: str) -> None:
    broken = parsed('{"Statement": {"Effect": "Deny", "Action": 5, "Resource": "*"}}', source)
    assert broken.statements[0].effect == "Deny"
    kwargs: dict[str, Any] = {"identity": [ALLOW_ALL]}
    if source == "identity":
        kwargs["identity"] = [ALLOW_ALL, broken]
    elif source == "boundary":
        kwargs["boundary"] = broken
    else:
        kwargs["session"] = [broken]
    decision = evaluate(_request(), **kwargs)
    assert not decision.allowed and decision.explicit_deny


def test_a_valid_stored_document_parses_as_written() -> None:
    document = json.dumps(resource_doc(Effect="Deny", Principal="*", Action="secretsmanager:GetSecretValue"))
    policy = parsed(document, "resource")
    assert policy != deny_all("resource") and policy.statements[0].actions == (
        "secretsmanager:GetSecretValue",
    )
    assert evaluate(_request("secretsmanager:DescribeSecret"), identity=[ALLOW_ALL], resource=policy).allowed


def test_only_the_account_root_may_repair_an_unreadable_resource_policy() -> None:
    policy = deny_all("resource")
    root = Principal.account_root(A)
    put = "secretsmanager:PutResourcePolicy"

    def decide(principal: Principal, action: str, principal_type: str) -> Any:
        context = {"aws:principalaccount": [principal.account_id], "aws:principaltype": [principal_type]}
        request = Request(principal, action, SECRET, A, context)
        return evaluate(request, identity=[ALLOW_ALL], resource=policy)

    assert decide(root, put, "Account").allowed
    assert decide(root, "secretsmanager:DeleteResourcePolicy", "Account").allowed
    assert decide(root, "secretsmanager:GetSecretValue", "Account").explicit_deny
    assert decide(ALICE, put, "User").explicit_deny
    # A caller claiming nothing about its type is denied too.
    assert evaluate(Request(ALICE, put, SECRET, A, {}), identity=[ALLOW_ALL], resource=policy).explicit_deny
    # Another account's root gets no grant from it.
    other = Principal.account_root("444455556666")
    assert not decide(other, put, "Account").allowed
