"""Role sessions end to end: aws:TokenIssueTime (AWS's "revoke active sessions" policy),
aws:ResourceAccount (data-perimeter rules), and what a role chain carries over: the source identity,
which can never change once set, and transitive session tags, which pass to every later session and
cannot be set again.

AWS references: IAM User Guide "Revoke IAM role temporary security credentials"
(id_roles_use_revoke-sessions), "Monitor and control actions taken with assumed roles"
(id_credentials_temp_control-access_monitor), "Pass session tags in AWS STS" / "Chaining roles with
session tags" (id_session-tags); STS API reference AssumeRole (Tags, TransitiveTagKeys,
SourceIdentity)."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.support.errors import code_of, error_response, refused
from tests.support.iam import allow, deny, document
from tests.support.identity import ROOT_ARN, Caller, across_accounts, eventually, new_user, session
from tests.support.names import secret_name, unique
from tests.support.server import ACCOUNT_ID, KhoaServer

CHAIN_ACTIONS = ["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"]


def make_role(iam: Any, trust_actions: list[str], *statements: dict[str, Any], **trust_extra: Any) -> str:
    """A role of the account trusting the account (so callers need an identity policy too)."""
    name = unique("role")
    trust = document(
        {"Effect": "Allow", "Principal": {"AWS": ROOT_ARN}, "Action": trust_actions, **trust_extra}
    )
    arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust)["Role"]["Arn"]
    if statements:
        iam.put_role_policy(RoleName=name, PolicyName="permissions", PolicyDocument=document(*statements))
    return str(arn)


def role_name(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


def allowed(call: Any, **kwargs: Any) -> bool:
    return code_of(call, **kwargs) == "ok"


def assume(caller: Caller, role_arn: str, **kwargs: Any) -> Any:
    return caller.client("sts").assume_role(RoleArn=role_arn, RoleSessionName=unique("s"), **kwargs)


# -- aws:TokenIssueTime -----------------------------------------------------------------------------


def test_revoking_older_sessions_denies_those_issued_before_the_cutoff_only(
    server: KhoaServer, iam: Any
) -> None:
    arn = make_role(iam, ["sts:AssumeRole"], allow("sts:GetAccessKeyInfo"))
    user = new_user(server, iam, allow("sts:AssumeRole", arn))
    old = session(user, arn, "old").client("sts")
    old.get_access_key_info(AccessKeyId=user.access_key_id)
    # The console's "Revoke active sessions": deny everything to tokens issued before now.
    cutoff = datetime.fromtimestamp(math.floor(server.clock_now().timestamp()) + 1, UTC)
    iam.put_role_policy(
        RoleName=role_name(arn),
        PolicyName="AWSRevokeOlderSessions",
        PolicyDocument=document(
            deny(
                "*", Condition={"DateLessThan": {"aws:TokenIssueTime": cutoff.strftime("%Y-%m-%dT%H:%M:%SZ")}}
            )
        ),
    )
    while server.clock_now() < cutoff:
        time.sleep(0.05)
    new = session(user, arn, "new").client("sts")
    eventually(lambda: not allowed(old.get_access_key_info, AccessKeyId=user.access_key_id))
    code, message = refused(old.get_access_key_info, AccessKeyId=user.access_key_id)
    assert code == "AccessDenied" and "with an explicit deny in an identity-based policy" in message
    new.get_access_key_info(AccessKeyId=user.access_key_id)


def test_token_issue_time_is_present_only_for_temporary_credentials(server: KhoaServer, iam: Any) -> None:
    long_term_only = allow("sts:GetAccessKeyInfo", Condition={"Null": {"aws:TokenIssueTime": "true"}})
    temporary_only = allow("sts:GetAccessKeyInfo", Condition={"Null": {"aws:TokenIssueTime": "false"}})
    user = new_user(server, iam, long_term_only)
    user.client("sts").get_access_key_info(AccessKeyId=user.access_key_id)
    for statement, expected in ((temporary_only, True), (long_term_only, False)):
        arn = make_role(iam, ["sts:AssumeRole"], statement)
        iam.put_user_policy(
            UserName=user.name, PolicyName="assume", PolicyDocument=document(allow("sts:AssumeRole", arn))
        )
        sts = session(user, arn).client("sts")
        assert allowed(sts.get_access_key_info, AccessKeyId=user.access_key_id) is expected


# -- aws:ResourceAccount ----------------------------------------------------------------------------


def test_resource_account_is_the_account_owning_the_resource(server: KhoaServer, iam: Any, sm: Any) -> None:
    name = secret_name("perimeter")
    sm.create_secret(Name=name, SecretString="v")
    own = {"aws:ResourceAccount": ACCOUNT_ID}
    other = {"aws:ResourceAccount": "444455556666"}
    cases = [
        # (identity statements, allowed?)
        ([allow("secretsmanager:DescribeSecret", Condition={"StringEquals": own})], True),
        ([allow("secretsmanager:DescribeSecret", Condition={"StringEquals": other})], False),
        # The data-perimeter rule: deny what is outside one's own account.
        ([allow("secretsmanager:*"), deny("*", Condition={"StringNotEquals": own})], True),
        ([allow("secretsmanager:*"), deny("*", Condition={"StringNotEquals": other})], False),
    ]
    for statements, expected in cases:
        user = new_user(server, iam, *statements)
        assert allowed(user.client("secretsmanager").describe_secret, SecretId=name) is expected, statements


def test_resource_account_of_assume_role_is_the_roles_account(
    server: KhoaServer, iam: Any, account_b: Caller
) -> None:
    perimeter = deny("sts:AssumeRole", Condition={"StringNotEquals": {"aws:ResourceAccount": ACCOUNT_ID}})
    user = new_user(server, iam, allow("sts:AssumeRole"), perimeter)
    own = make_role(iam, ["sts:AssumeRole"])
    theirs = account_b.client("iam").create_role(
        RoleName=unique("role"),
        AssumeRolePolicyDocument=document(
            {"Effect": "Allow", "Principal": {"AWS": user.arn}, "Action": "sts:AssumeRole"}
        ),
    )["Role"]["Arn"]
    assume(user, own)
    missing = theirs.replace(theirs.rsplit("/", 1)[1], unique("missing"))
    for role in (theirs, missing):  # refused alike, in words that do not tell them apart
        assert refused(user.client("sts").assume_role, RoleArn=role, RoleSessionName="xx") == (
            "AccessDenied",
            across_accounts(user.arn, "sts:AssumeRole", role),
        )
    # Without the perimeter rule the cross-account role is assumed: it was the rule that refused.
    iam.put_user_policy(
        UserName=user.name, PolicyName="inline", PolicyDocument=document(allow("sts:AssumeRole"))
    )
    assume(user, theirs)


# -- source identity --------------------------------------------------------------------------------


@pytest.fixture
def alice_session(server: KhoaServer, iam: Any) -> tuple[Caller, str]:
    """A session whose source identity is "alice", allowed to chain into any role, and its role."""
    first = make_role(iam, CHAIN_ACTIONS, allow(CHAIN_ACTIONS))
    user = new_user(server, iam, allow(CHAIN_ACTIONS, first))
    return session(user, first, "alice-session", SourceIdentity="alice"), first


def test_source_identity_cannot_be_changed_in_a_chain(iam: Any, alice_session: tuple[Caller, str]) -> None:
    alice, _ = alice_session
    second = make_role(iam, CHAIN_ACTIONS)
    response = error_response(
        alice.client("sts").assume_role, RoleArn=second, RoleSessionName="hop", SourceIdentity="mallory"
    )
    assert response["Error"]["Code"] == "ValidationError"
    assert response["Error"]["Message"] == "The source identity is already set for this assume role session"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400
    # Passing the same value again is no change.
    assume(alice, second, SourceIdentity="alice")


def test_source_identity_is_inherited_and_seen_by_the_trust_policy(
    iam: Any, alice_session: tuple[Caller, str]
) -> None:
    alice, _ = alice_session
    only_alice = make_role(
        iam,
        CHAIN_ACTIONS,
        allow("sts:GetAccessKeyInfo", Condition={"StringEquals": {"aws:SourceIdentity": "alice"}}),
        Condition={"StringEquals": {"sts:SourceIdentity": "alice"}},
    )
    only_bob = make_role(iam, CHAIN_ACTIONS, Condition={"StringEquals": {"sts:SourceIdentity": "bob"}})
    chained = session(alice, only_alice, "hop")  # no SourceIdentity passed: alice's is inherited
    chained.client("sts").get_access_key_info(AccessKeyId=chained.access_key_id)
    assert code_of(alice.client("sts").assume_role, RoleArn=only_bob, RoleSessionName="hop") == "AccessDenied"
    # Carrying a source identity into a role needs sts:SetSourceIdentity in its trust policy.
    plain = make_role(iam, ["sts:AssumeRole"])
    code, message = refused(alice.client("sts").assume_role, RoleArn=plain, RoleSessionName="hop")
    assert code == "AccessDenied" and "sts:SetSourceIdentity" in message


# -- transitive session tags ------------------------------------------------------------------------


@pytest.fixture
def tagged(server: KhoaServer, iam: Any, sm: Any) -> dict[str, Any]:
    """A session tagged project=alpha (transitive) and team=red (not), and a role it may chain into
    whose permissions are ABAC on those principal tags, with one secret per project."""
    secrets = {}
    for project in ("alpha", "beta"):
        name = secret_name("chain")
        sm.create_secret(Name=name, SecretString=project, Tags=[{"Key": "project", "Value": project}])
        secrets[project] = name
    abac = make_role(
        iam,
        CHAIN_ACTIONS,
        allow(CHAIN_ACTIONS),
        allow(
            "secretsmanager:GetSecretValue",
            Condition={"StringEquals": {"aws:ResourceTag/project": "${aws:PrincipalTag/project}"}},
        ),
        allow("secretsmanager:DescribeSecret", Condition={"StringEquals": {"aws:PrincipalTag/team": "red"}}),
    )
    first = make_role(iam, CHAIN_ACTIONS, allow(CHAIN_ACTIONS))
    user = new_user(server, iam, allow(CHAIN_ACTIONS, first))
    first_session = session(
        user,
        first,
        "tagged",
        Tags=[{"Key": "project", "Value": "alpha"}, {"Key": "team", "Value": "red"}],
        TransitiveTagKeys=["project"],
    )
    return {"session": first_session, "role": abac, "secrets": secrets}


def test_transitive_tags_pass_along_the_whole_chain(tagged: dict[str, Any]) -> None:
    secrets = tagged["secrets"]
    hop = session(tagged["session"], tagged["role"], "hop2")
    again = session(hop, tagged["role"], "hop3")  # inherited tags stay transitive
    for chained in (hop, again):
        sm = chained.client("secretsmanager")
        assert sm.get_secret_value(SecretId=secrets["alpha"])["SecretString"] == "alpha"
        assert code_of(sm.get_secret_value, SecretId=secrets["beta"]) == "AccessDeniedException"
        # team=red was not transitive: the chained session does not have it.
        assert code_of(sm.describe_secret, SecretId=secrets["alpha"]) == "AccessDeniedException"


def test_an_inherited_transitive_tag_cannot_be_set_again(tagged: dict[str, Any]) -> None:
    sts = tagged["session"].client("sts")
    # Keys compare case-insensitively; even the same value may not be passed again.
    for key, value in (("project", "beta"), ("Project", "beta"), ("PROJECT", "alpha")):
        response = error_response(
            sts.assume_role, RoleArn=tagged["role"], RoleSessionName="xx", Tags=[{"Key": key, "Value": value}]
        )
        assert response["Error"] == {
            "Type": "Sender",
            "Code": "InvalidParameterValue",
            "Message": "One of the specified transitive tag keys can't be set because it conflicts with a "
            "transitive tag key from the calling session.",
        }
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 400
    # A non-transitive tag of the caller may be set anew, and then applies.
    hop = session(tagged["session"], tagged["role"], "team", Tags=[{"Key": "team", "Value": "red"}])
    hop.client("secretsmanager").describe_secret(SecretId=tagged["secrets"]["alpha"])


def test_inheriting_transitive_tags_needs_tag_session_in_the_trust_policy(
    iam: Any, tagged: dict[str, Any]
) -> None:
    plain = make_role(iam, ["sts:AssumeRole"])
    code, message = refused(tagged["session"].client("sts").assume_role, RoleArn=plain, RoleSessionName="xx")
    assert code == "AccessDenied" and "sts:TagSession" in message


def test_transitive_tag_keys_must_be_passed_tags(server: KhoaServer, iam: Any) -> None:
    arn = make_role(iam, CHAIN_ACTIONS)
    user = new_user(server, iam, allow(CHAIN_ACTIONS, arn))
    sts = user.client("sts")
    for tags in ({"Tags": [{"Key": "team", "Value": "red"}]}, {}):
        response = error_response(
            sts.assume_role, RoleArn=arn, RoleSessionName="xx", TransitiveTagKeys=["project"], **tags
        )
        assert response["Error"]["Code"] == "InvalidParameterValue"
        assert response["Error"]["Message"] == (
            "The specified transitive tag key must be included in the requested tags."
        )
    duplicate = [{"Key": "team", "Value": "red"}, {"Key": "Team", "Value": "blue"}]
    assert refused(sts.assume_role, RoleArn=arn, RoleSessionName="xx", Tags=duplicate) == (
        "InvalidParameterValue",
        "Duplicate tag keys found. Please note that Tag keys are case insensitive.",
    )
    # Keys name tags case-insensitively.
    assume(user, arn, Tags=[{"Key": "Project", "Value": "p"}], TransitiveTagKeys=["project"])


def test_transitive_tag_keys_are_in_the_trust_policys_context(server: KhoaServer, iam: Any) -> None:
    arn = make_role(
        iam,
        ["sts:AssumeRole", "sts:TagSession"],
        Condition={
            "ForAllValues:StringEquals": {"sts:TransitiveTagKeys": ["project"]},
            "Null": {"sts:TransitiveTagKeys": "false"},
        },
    )
    user = new_user(server, iam, allow(CHAIN_ACTIONS, arn))
    tags = [{"Key": "project", "Value": "p"}, {"Key": "team", "Value": "t"}]
    assume(user, arn, Tags=tags, TransitiveTagKeys=["project"])
    for keys in ({"TransitiveTagKeys": ["team"]}, {"TransitiveTagKeys": ["project", "team"]}, {}):
        assert code_of(
            user.client("sts").assume_role, RoleArn=arn, RoleSessionName="xx", Tags=tags, **keys
        ) == ("AccessDenied"), keys
