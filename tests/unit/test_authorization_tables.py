"""Authorisation tables: each service's table covers exactly its handlers, a service whose table does
not cannot be built, and the services whose handlers used to authorise themselves no longer do."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from khoa.auth.principal import Principal
from khoa.protocol.context import RequestContext
from khoa.protocol.errors import AWSError
from khoa.protocol.model import ServiceModel
from khoa.services.authorization import AuthorizationTable, Rule, exempt, rule
from khoa.services.base import Service
from khoa.services.iam import authtable as iam_authz
from tests.support.services import every_service


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Service]:
    return every_service(tmp_path_factory.mktemp("tables"))


NAMES = ("kms", "secretsmanager", "ssm", "sts", "iam", "cloudtrail")


def _noop(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    return {}


@pytest.mark.parametrize("name", NAMES)
def test_each_table_covers_exactly_the_handlers(services: dict[str, Service], name: str) -> None:
    service = services[name]
    assert isinstance(service.authorizer, AuthorizationTable)
    assert service.authorizer.operations == set(service.handlers)
    for operation, entry in service.authorizer.rules.items():
        assert entry.check is not None or entry.exemption, operation
        # The operation's own service's action first; others only where AWS asks for them too
        # (RotateSecret also needs lambda:InvokeFunction on the rotation function).
        assert entry.check is None or entry.actions[0].startswith(f"{service.name}:"), operation
        assert all(a.startswith((f"{service.name}:", "lambda:")) for a in entry.actions), operation


def test_the_only_exemption_is_get_caller_identity(services: dict[str, Service]) -> None:
    exemptions = {
        (service.name, op): why
        for service in services.values()
        for op, why in service.authorizer.exemptions.items()
    }
    assert list(exemptions) == [("sts", "GetCallerIdentity")]
    assert "no permission" in exemptions[("sts", "GetCallerIdentity")]


def _service(handlers: list[str], rules: list[str]) -> Service:
    return Service(
        name="kms",
        signing_name="kms",
        target_prefix="TrentService",
        model=ServiceModel("kms"),
        handlers=dict.fromkeys(handlers, _noop),
        authorizer=AuthorizationTable("kms", {op: rule(_noop, f"kms:{op}") for op in rules}),
    )


def test_a_service_with_an_operation_without_a_rule_cannot_be_built() -> None:
    with pytest.raises(ValueError, match=r"operations without a rule: \['Encrypt'\]"):
        _service(["DescribeKey", "Encrypt"], ["DescribeKey"])


def test_a_service_with_a_rule_for_no_operation_cannot_be_built() -> None:
    with pytest.raises(ValueError, match=r"rules without an operation: \['Encrypt'\]"):
        _service(["DescribeKey"], ["DescribeKey", "Encrypt"])
    assert _service(["DescribeKey"], ["DescribeKey"]).authorizer.operations == {"DescribeKey"}


def test_a_service_needs_a_table_not_a_bare_function() -> None:
    with pytest.raises(TypeError):
        Service(
            name="kms",
            signing_name="kms",
            target_prefix="TrentService",
            model=ServiceModel("kms"),
            handlers={"DescribeKey": _noop},
            authorizer=_noop,  # type: ignore[arg-type]
        )


def test_a_rule_must_check_or_say_why_not() -> None:
    with pytest.raises(ValueError):
        Rule(("kms:Encrypt",), None)
    with pytest.raises(ValueError):
        Rule((), _noop)
    with pytest.raises(ValueError):
        Rule(("kms:Encrypt",), _noop, "and also exempt")
    assert exempt("documented").exemption == "documented"


def _ctx(operation: str, service: str = "iam") -> RequestContext:
    principal = Principal(
        account_id="111122223333",
        arn="arn:aws:iam::111122223333:user/someone",
        user_id="AIDAEXAMPLE",
        kind="IAMUser",
        name="someone",
    )
    return RequestContext(
        principal=principal,
        region="us-east-1",
        request_id="r",
        service=service,
        operation=operation,
        now=None,  # type: ignore[arg-type]
    )


def test_an_operation_missing_from_the_table_is_refused_at_run_time() -> None:
    table = AuthorizationTable("iam", {"GetUser": rule(_noop, "iam:GetUser")})
    table(_ctx("GetUser"), {})
    with pytest.raises(AWSError) as excinfo:
        table(_ctx("DeleteUser"), {})
    assert (excinfo.value.code, excinfo.value.status) == ("AccessDenied", 403)
    with pytest.raises(AWSError) as excinfo:
        AuthorizationTable("kms", {})(_ctx("Encrypt", "kms"), {})
    assert (excinfo.value.code, excinfo.value.status) == ("AccessDeniedException", 400)


def test_the_iam_table_names_the_action_of_each_step(services: dict[str, Service]) -> None:
    table = services["iam"].authorizer
    assert len(table.rules) == 72
    for operation, entry in table.rules.items():
        assert entry.actions[0] == f"iam:{operation}"
    assert table.rules["CreateUser"].actions == (
        "iam:CreateUser",
        "iam:TagUser",
        "iam:PutUserPermissionsBoundary",
    )
    assert table.rules["CreatePolicy"].actions == ("iam:CreatePolicy", "iam:TagPolicy")


def test_iam_condition_keys_are_declared_where_aws_defines_them() -> None:
    steps = iam_authz.STEPS
    for label in ("User", "Role"):
        for operation in (f"Attach{label}Policy", f"Detach{label}Policy"):
            assert set(steps[operation][0].keys) == {iam_authz.policy_arn_key, iam_authz.current_boundary}
        for operation in (f"Put{label}Policy", f"Delete{label}Policy", f"Delete{label}PermissionsBoundary"):
            assert steps[operation][0].keys == (iam_authz.current_boundary,)
        assert steps[f"Put{label}PermissionsBoundary"][0].keys == (iam_authz.new_boundary,)
        assert steps[f"Tag{label}"][0].keys == (iam_authz.request_tags,)
        assert steps[f"Untag{label}"][0].keys == (iam_authz.tag_keys,)
    assert steps["AttachGroupPolicy"][0].keys == (iam_authz.policy_arn_key,)


@pytest.mark.parametrize(
    "module_name",
    [
        "users",
        "groups",
        "roles",
        "access_keys",
        "inline",
        "managed",
        "attachments",
        "boundaries",
        "tags",
        "details",
        "simulate",
    ],
)
def test_iam_handlers_do_no_authorisation_of_their_own(module_name: str) -> None:
    module = __import__(f"khoa.services.iam.{module_name}", fromlist=["_"])
    source = inspect.getsource(module)
    assert "khoa.access.authorize" not in source
    assert "services.iam.authtable" not in source


@pytest.mark.parametrize(
    "module_name",
    ["khoa.services.sts.identity", "khoa.services.sts.sessions", "khoa.services.cloudtrail.lookup"],
)
def test_sts_and_cloudtrail_handlers_do_no_authorisation_of_their_own(module_name: str) -> None:
    source = inspect.getsource(__import__(module_name, fromlist=["_"]))
    assert "khoa.access.authorize" not in source
