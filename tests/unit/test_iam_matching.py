"""Wildcards and policy variables, as the IAM User Guide describes them.

"IAM policy elements: Variables and tags": variables are ``${key}``, take a default as
``${key, 'value'}``, and ``${*}`` ``${?}`` ``${$}`` stand for the literal characters; key names are
case-insensitive. Action names match case-insensitively, resource ARNs case-sensitively.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


# -- the regex a pattern becomes never backtracks exponentially --------------------------------------


def _reference(pattern: str, value: str) -> bool:
    """Wildcard matching by dynamic programming (``*`` any run, ``?`` one character)."""
    matched = [True] + [False] * len(value)  # pattern so far against each prefix of value
    for char in pattern:
        if char == "*":
            for i in range(1, len(value) + 1):
                matched[i] = matched[i] or matched[i - 1]
        else:
            matched = [False] + [matched[i] and (char == "?" or char == value[i]) for i in range(len(value))]
    return matched[-1]


def _arn_reference(pattern: str, value: str) -> bool:
    """ArnLike: the first five components each on its own, the rest as one."""
    patterns, values = pattern.split(":", 5), value.split(":", 5)
    return len(patterns) == len(values) == 6 and all(
        _reference(p, v) for p, v in zip(patterns, values, strict=True)
    )


@settings(max_examples=400, deadline=None)
@given(
    pattern=st.text(alphabet="ab*?:", max_size=12),
    value=st.text(alphabet="abAB:", max_size=12),
)
def test_wildcards_match_as_the_reference_does(pattern: str, value: str) -> None:
    assert wildcard_match(pattern, value) == _reference(pattern, value)
    assert wildcard_match(pattern, value, ignore_case=True) == _reference(pattern.lower(), value.lower())
    arn_pattern, arn_value = f"arn:{pattern}:x:y:z:{pattern}", f"arn:{value}:x:y:z:{value}"
    assert arn_like(arn_pattern, arn_value, {}) == _arn_reference(arn_pattern, arn_value)


@pytest.mark.parametrize("stars", [6, 10, 40])
def test_many_wildcards_against_a_long_value_end_at_once(stars: int) -> None:
    """``*a*a*a…*b`` against ``aaaa…``: the naive regex (``.*a.*a…``) backtracked exponentially, a
    policy holding it froze the event loop (0.9 s for six stars and 60 characters, hours for more)."""
    pattern = "*a" * stars + "*b"
    assert not wildcard_match(pattern, "a" * 2000)
    assert wildcard_match(pattern, "a" * 2000 + "b")
    assert not like(pattern, "a" * 2000, {})
    arn = "arn:aws:secretsmanager:us-east-1:111122223333:secret:"
    assert not arn_like(arn + pattern, arn + "a" * 2000, {})
    assert not arn_like(f"arn:aws:{'*a' * stars}*b:*:*:*", f"arn:aws:{'a' * 2000}:r:1:x", {})
