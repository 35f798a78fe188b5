"""AssumeRole ``PolicyArns`` (issue 11, finding 5): managed session policies must be in the role's account
(or be AWS managed); the trust policy is checked before anything about them is looked up, and a policy
of another account is refused exactly like one that does not exist, so nothing is learnt about which
policies exist elsewhere. Also: a caller who may not assume the role learns nothing about the role's
limits (its MaxSessionDuration)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.errors import error_response
from tests.support.iam import allow, document
from tests.support.identity import Caller, create_account, new_user, session
from tests.support.names import unique
from tests.support.server import ACCOUNT_ID, KhoaServer


def trusting(principal: str) -> str:
    return document({"Effect": "Allow", "Principal": {"AWS": principal}, "Action": "sts:AssumeRole"})


def answer(caller: Caller, role_arn: str, **kwargs: Any) -> tuple[str, str, int]:
    """(code, message, HTTP status) of an AssumeRole call that must fail."""
    assume_role = caller.client("sts").assume_role
    response = error_response(assume_role, RoleArn=role_arn, RoleSessionName="probe", **kwargs)
    return (
        response["Error"]["Code"],
        response["Error"]["Message"],
        response["ResponseMetadata"]["HTTPStatusCode"],
    )


@pytest.fixture(scope="module")
def other(server: KhoaServer) -> Caller:
    """The root of a second account, which owns a managed policy whose name the test tries to probe."""
    return create_account(server)


def test_policy_arns_must_be_in_the_roles_account(server: KhoaServer, other: Caller) -> None:
    iam = server.client("iam")
    user = new_user(server, iam, allow("sts:AssumeRole"))
    role = iam.create_role(RoleName=unique("role"), AssumeRolePolicyDocument=trusting(user.arn))["Role"]
    iam.put_role_policy(RoleName=role["RoleName"], PolicyName="p", PolicyDocument=document(allow("ssm:*")))
    mine = iam.create_policy(PolicyName=unique("session"), PolicyDocument=document(allow("ssm:GetParameter")))
    theirs_name = unique("theirs")
    theirs = other.client("iam").create_policy(PolicyName=theirs_name, PolicyDocument=document(allow("*")))[
        "Policy"
    ]["Arn"]
    missing_there = theirs.replace(theirs_name, unique("missing"))
    missing_here = mine["Policy"]["Arn"].replace(mine["Policy"]["PolicyName"], unique("missing"))

    # The role's own account's policy and an AWS managed policy are usable.
    session(user, role["Arn"], "mine", PolicyArns=[{"arn": mine["Policy"]["Arn"]}])
    session(user, role["Arn"], "aws", PolicyArns=[{"arn": "arn:aws:iam::aws:policy/ReadOnlyAccess"}])

    # Another account's policy is refused exactly like one that exists nowhere.
    def refusal(arn: str) -> tuple[str, str, int]:
        code, message, status = answer(user, role["Arn"], PolicyArns=[{"arn": arn}])
        return code, message.replace(arn, "<arn>"), status

    expected = ("InvalidParameterValue", "Policy <arn> does not exist or is not attachable.", 400)
    assert refusal(theirs) == expected
    assert refusal(missing_there) == expected
    assert refusal(missing_here) == expected
    assert refusal("arn:aws:iam::aws:policy/NoSuchAwsPolicy") == expected
    assert refusal("arn:aws:s3:::not-a-policy") == expected


def test_the_trust_policy_is_checked_before_policy_arns_or_limits(server: KhoaServer, other: Caller) -> None:
    iam = server.client("iam")
    trusted = new_user(server, iam, allow("sts:AssumeRole"))
    stranger = new_user(server, iam, allow("sts:AssumeRole"))  # allowed by its policy, not by the trust
    role = iam.create_role(RoleName=unique("role"), AssumeRolePolicyDocument=trusting(trusted.arn))["Role"]
    theirs_name = unique("theirs")
    theirs = other.client("iam").create_policy(PolicyName=theirs_name, PolicyDocument=document(allow("*")))[
        "Policy"
    ]["Arn"]
    missing = theirs.replace(theirs_name, unique("missing"))
    denied = (
        "AccessDenied",
        f"User: {stranger.arn} is not authorized to perform: sts:AssumeRole on resource: {role['Arn']} "
        "because no role trust policy allows the sts:AssumeRole action",
        403,
    )
    assert answer(stranger, role["Arn"], PolicyArns=[{"arn": theirs}]) == denied
    assert answer(stranger, role["Arn"], PolicyArns=[{"arn": missing}]) == denied
    # The role's MaxSessionDuration (1 hour) is not revealed to a caller who may not assume it...
    assert answer(stranger, role["Arn"], DurationSeconds=7200) == denied
    # ...only to one who may.
    code, message, _ = answer(trusted, role["Arn"], DurationSeconds=7200)
    assert (code, message) == (
        "ValidationError",
        "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.",
    )
    # A role that does not exist is refused like one whose trust policy does not allow.
    ghost = f"arn:aws:iam::{ACCOUNT_ID}:role/{unique('ghost')}"
    assert answer(stranger, ghost)[0::2] == ("AccessDenied", 403)


def test_cross_account_session_policies_come_from_the_roles_account(
    server: KhoaServer, other: Caller
) -> None:
    """A role in another account takes managed session policies from that account, not the caller's."""
    iam = server.client("iam")
    user = new_user(server, iam, allow("sts:AssumeRole"))
    other_iam = other.client("iam")
    role = other_iam.create_role(RoleName=unique("role"), AssumeRolePolicyDocument=trusting(user.arn))["Role"]
    other_iam.put_role_policy(
        RoleName=role["RoleName"], PolicyName="p", PolicyDocument=document(allow("ssm:*"))
    )
    in_role_account = other_iam.create_policy(
        PolicyName=unique("session"), PolicyDocument=document(allow("ssm:GetParameter"))
    )["Policy"]["Arn"]
    in_caller_account = iam.create_policy(
        PolicyName=unique("session"), PolicyDocument=document(allow("ssm:GetParameter"))
    )["Policy"]["Arn"]
    assumed = session(user, role["Arn"], "ok", PolicyArns=[{"arn": in_role_account}])
    assert assumed.arn.startswith(f"arn:aws:sts::{other.account_id}:assumed-role/")
    code, message, status = answer(user, role["Arn"], PolicyArns=[{"arn": in_caller_account}])
    assert (code, status) == ("InvalidParameterValue", 400)
    assert message == f"Policy {in_caller_account} does not exist or is not attachable."
