"""Parameter names: the rules PutParameter applies, ARNs, hierarchy paths and selectors."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from khoa.auth.principal import Principal
from khoa.protocol.context import RequestContext
from khoa.protocol.errors import AWSError
from khoa.services.ssm import names

ACCOUNT = "123456789012"
PREFIX = f"arn:aws:ssm:eu-west-1:{ACCOUNT}:parameter/"


@pytest.fixture
def ctx() -> RequestContext:
    return RequestContext(
        principal=Principal.account_root(ACCOUNT),
        region="eu-west-1",
        request_id="r",
        service="ssm",
        operation="PutParameter",
        now=datetime.now(UTC),
    )


def refusal_code(ctx: RequestContext, name: str) -> str | None:
    try:
        names.validate(ctx, name)
    except AWSError as error:
        return error.code
    return None


@pytest.mark.parametrize(
    "name",
    [
        "plain",
        "with.dots-and_underscores",
        "/a",
        "/a/b/c",
        "/Dev/DBServer/MySQL/db-string13",
        "A1",
        "/x/awsy",
        "/x/ssm",
    ],
)
def test_valid_names(ctx: RequestContext, name: str) -> None:
    assert refusal_code(ctx, name) is None


@pytest.mark.parametrize("name", ["aws", "awsThing", "/aws/x", "/AWS", "Aws-x", "/awsconfig/y"])
def test_aws_prefix_is_reserved(ctx: RequestContext, name: str) -> None:
    assert refusal_code(ctx, name) == "AccessDeniedException"


@pytest.mark.parametrize("name", ["ssm", "ssmThing", "/ssm/x", "/SSM", "Ssm-x"])
def test_ssm_prefix_is_refused(ctx: RequestContext, name: str) -> None:
    assert refusal_code(ctx, name) == "ValidationException"


@pytest.mark.parametrize(
    "name", ["a b", "/a b/c", "a*", "/a//b", "/a/", "a/b", "/", "/ü", "a:1", "/a/b\n", "a@b", "a#b"]
)
def test_invalid_characters_and_shapes(ctx: RequestContext, name: str) -> None:
    assert refusal_code(ctx, name) == "ValidationException"


def test_fifteen_levels(ctx: RequestContext) -> None:
    fifteen = "".join(f"/l{i}" for i in range(15))
    assert refusal_code(ctx, fifteen) is None
    assert refusal_code(ctx, fifteen + "/l15") == "HierarchyLevelLimitExceededException"


def test_length_includes_the_arn(ctx: RequestContext) -> None:
    longest = "n" * (names.MAX_ARN_LENGTH - len(PREFIX))
    assert len(names.parameter_arn(ctx, longest)) == 1011
    assert refusal_code(ctx, longest) is None
    assert refusal_code(ctx, longest + "n") == "ValidationException"
    # A hierarchical name's leading slash is not part of its ARN.
    assert refusal_code(ctx, "/" + longest) is None


def test_clean_strips_outer_spaces_only() -> None:
    assert names.clean("  /a/b  ") == "/a/b"
    assert names.clean("/a b") == "/a b"


def test_arns(ctx: RequestContext) -> None:
    assert names.parameter_arn(ctx, "/a/b") == PREFIX + "a/b"
    assert names.parameter_arn(ctx, "flat") == PREFIX + "flat"
    assert names.from_arn(ctx, PREFIX + "a/b") == "/a/b"
    assert names.from_arn(ctx, PREFIX + "flat") == "flat"
    with pytest.raises(AWSError) as exc:
        names.from_arn(ctx, "arn:aws:ssm:us-east-1:999999999999:parameter/a")
    assert exc.value.code == "ParameterNotFound"


def test_parent_path() -> None:
    assert names.parent_path("/a/b/c") == "/a/b"
    assert names.parent_path("/a") == "/"
    assert names.parent_path("flat") == ""


def test_selectors(ctx: RequestContext) -> None:
    assert names.parse_selector(ctx, "/a/b") == names.Selector("/a/b")
    assert names.parse_selector(ctx, "/a/b:3") == names.Selector("/a/b", version=3, raw=":3")
    assert names.parse_selector(ctx, "/a/b:prod") == names.Selector("/a/b", label="prod", raw=":prod")
    by_arn = names.parse_selector(ctx, PREFIX + "a/b:7")
    assert (by_arn.name, by_arn.version, by_arn.raw) == ("/a/b", 7, ":7")
    one_level = names.parse_selector(ctx, PREFIX + "x")
    assert one_level.name == "x"
    assert one_level.alternative() == "/x"
    # "/x" and "x" are one parameter (issue 14): either form's alternative is the slashed one, which
    # parameters stored before names were normalised may hold; a name of several levels has none.
    assert names.parse_selector(ctx, "x").alternative() == "/x"
    assert names.parse_selector(ctx, "/x").alternative() == "/x"
    assert names.parse_selector(ctx, "/a/b").alternative() is None
    assert (names.canonical("/x"), names.canonical("x"), names.canonical("/a/b")) == ("x", "x", "/a/b")
    for bad in ("/a/b:", "/a/b:x:y"):
        with pytest.raises(AWSError) as exc:
            names.parse_selector(ctx, bad)
        assert exc.value.code == "ValidationException"


@pytest.mark.parametrize("path", ["/", "/a", "/a/", "/a/b.c-d_e"])
def test_valid_paths(path: str) -> None:
    names.validate_path(path)


@pytest.mark.parametrize("path", ["a", "", "/a b", "//a", "/a*"])
def test_invalid_paths(path: str) -> None:
    with pytest.raises(AWSError) as exc:
        names.validate_path(path)
    assert exc.value.code == "ValidationException"


def test_path_depth() -> None:
    names.validate_path("".join(f"/l{i}" for i in range(15)))
    with pytest.raises(AWSError) as exc:
        names.validate_path("".join(f"/l{i}" for i in range(16)))
    assert exc.value.code == "HierarchyLevelLimitExceededException"
