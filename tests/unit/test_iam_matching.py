"""Wildcards and policy variables, as the IAM User Guide describes them.

"IAM policy elements: Variables and tags": variables are ``${key}``, take a default as
``${key, 'value'}``, and ``${*}`` ``${?}`` ``${$}`` stand for the literal characters; key names are
case-insensitive. Action names match case-insensitively, resource ARNs case-sensitively.
"""

from __future__ import annotations

import pytest

from khoa.access.matching import arn_like, like, pieces, substitute, wildcard_match

CONTEXT = {
    "aws:username": ["alice"],
    "aws:principaltag/team": ["payments"],
    "aws:principaltag/odd": ["a*b?"],
    "aws:tagkeys": ["env", "team"],
    "aws:empty": [""],
}


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("*", "", True),
        ("*", "anything:at/all", True),
        ("kms:*", "kms:Decrypt", True),
        ("kms:*", "kms:", True),
        ("kms:*", "kmsx:Decrypt", False),
        ("kms:Get*", "kms:Decrypt", False),
        ("kms:?ecrypt", "kms:Decrypt", True),
        ("kms:?ecrypt", "kms:ecrypt", False),
        ("kms:??crypt", "kms:Decrypt", True),
        ("a*b*c", "aXXbYYc", True),
        ("a*b*c", "aXXbYY", False),
        ("exact", "exact", True),
        ("exact", "Exact", False),
        ("arn:aws:s3:::bucket/*", "arn:aws:s3:::bucket/a/b/c", True),
        ("arn:aws:kms:*:111122223333:key/*", "arn:aws:kms:us-east-1:111122223333:key/k", True),
        ("x.y", "xzy", False),  # regex metacharacters are literal
        ("a+b", "a+b", True),
        ("(a)", "(a)", True),
        ("line*", "line1\nline2", True),
    ],
)
def test_wildcard_match(pattern: str, value: str, expected: bool) -> None:
    assert wildcard_match(pattern, value) is expected


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("KMS:decrypt", "kms:Decrypt", True),
        ("kms:DECRYPT*", "kms:DecryptX", True),
        ("Kms:?ECRYPT", "kms:decrypt", True),
        ("kms:encrypt", "kms:Decrypt", False),
    ],
)
def test_wildcard_match_ignoring_case(pattern: str, value: str, expected: bool) -> None:
    assert wildcard_match(pattern, value, ignore_case=True) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("home/${aws:username}/", "home/alice/"),
        ("${aws:username}", "alice"),
        ("${AWS:UserName}", "alice"),  # key names are case-insensitive
        ("${ aws:username }", "alice"),
        ("${aws:PrincipalTag/team}-${aws:username}", "payments-alice"),
        ("${aws:userid, 'anonymous'}", "anonymous"),
        ("${aws:username, 'anonymous'}", "alice"),
        ("${aws:PrincipalTag/missing, 'company-wide'}", "company-wide"),
        ("${aws:PrincipalTag/missing, ''}", ""),
        ("${aws:empty}", ""),
        ("${*}", "*"),
        ("${?}", "?"),
        ("${$}", "$"),
        ("a${*}b${?}c${$}d", "a*b?c$d"),
        ("no variables", "no variables"),
        ("$notavariable", "$notavariable"),
        ("${unterminated", "${unterminated"),
    ],
)
def test_substitute(text: str, expected: str) -> None:
    assert substitute(text, CONTEXT) == expected


@pytest.mark.parametrize(
    "text",
    [
        "${aws:userid}",  # absent
        "home/${aws:PrincipalTag/missing}/x",
        "${aws:TagKeys}",  # multivalued keys are not substituted
        "${aws:userid, default-without-quotes}",
        "${}",
    ],
)
def test_unresolved_variables(text: str) -> None:
    assert substitute(text, CONTEXT) is None
    assert pieces(text, CONTEXT) is None


def test_variables_off_leaves_the_text() -> None:
    assert substitute("home/${aws:username}/", CONTEXT, variables=False) == "home/${aws:username}/"
    assert like("home/${aws:username}/*", "home/${aws:username}/x", CONTEXT, variables=False)
    assert not like("home/${aws:username}/*", "home/alice/x", CONTEXT, variables=False)


def test_default_is_taken_once_not_substituted_again() -> None:
    assert substitute("${aws:userid, '${aws:username}'}", CONTEXT) == "${aws:username}"


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("home/${aws:username}/*", "home/alice/docs", True),
        ("home/${aws:username}/*", "home/bob/docs", False),
        ("home/${aws:userid}/*", "home/alice/docs", False),
        ("literal${*}", "literal*", True),
        ("literal${*}", "literalX", False),
        ("literal${?}", "literal?", True),
        ("literal${?}", "literalX", False),
        ("cost${$}", "cost$", True),
        ("${aws:PrincipalTag/odd}", "a*b?", True),  # a substituted value is literal
        ("${aws:PrincipalTag/odd}", "aXXbY", False),
        ("${aws:PrincipalTag/odd}*", "a*b?-suffix", True),
        ("${aws:username}", "ALICE", False),
    ],
)
def test_like_with_variables(pattern: str, value: str, expected: bool) -> None:
    assert like(pattern, value, CONTEXT) is expected


def test_like_ignoring_case_with_variables() -> None:
    assert like("HOME/${aws:username}/*", "home/ALICE/x", CONTEXT, ignore_case=True)


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("arn:aws:sns:*:111122223333:topic", "arn:aws:sns:us-east-1:111122223333:topic", True),
        ("arn:aws:sns:*:111122223333:topic", "arn:aws:sns:us-east-1:999999999999:topic", False),
        # The IAM User Guide's own example: ArnLike fails where StringLike succeeds.
        (
            "arn:aws:someservice:*:111122223333:finance/*",
            "arn:aws:someservice:us-east-2:999999999999:store/abc:111122223333:finance/document.txt",
            False,
        ),
        ("arn:aws:secretsmanager:*:*:secret:prod/*", "arn:aws:secretsmanager:r:1:secret:prod/a-Ab", True),
        ("arn:aws:iam::*:role/*", "arn:aws:iam::111122223333:role/path/Name", True),
        ("arn:aws:iam::111122223333:role/?ame", "arn:aws:iam::111122223333:role/Name", True),
        ("arn:aws:iam::*:user/${aws:username}", "arn:aws:iam::111122223333:user/alice", True),
        ("arn:aws:iam::*:user/${aws:username}", "arn:aws:iam::111122223333:user/bob", False),
        ("arn:aws:iam::*:user/${aws:userid}", "arn:aws:iam::111122223333:user/alice", False),
        ("arn:aws:*:*:*:*", "not-an-arn", False),
        ("*", "arn:aws:iam::111122223333:root", False),  # six components are compared
        ("arn:aws:IAM::*:root", "arn:aws:iam::111122223333:root", False),  # case-sensitive
    ],
)
def test_arn_like(pattern: str, value: str, expected: bool) -> None:
    assert arn_like(pattern, value, CONTEXT) is expected
