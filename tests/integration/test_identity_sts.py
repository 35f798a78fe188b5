"""STS AssumeRole end to end: trust policies, cross-account roles with ExternalId, session duration
bounds, role chaining, session names in ARNs, session policies, session tags, and temporary credentials
that expire or are tampered with."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.errors import code_of, refused
from tests.support.iam import allow, deny, document
from tests.support.identity import (
    ROOT_ARN,
    Caller,
    across_accounts,
    implicit,
    new_user,
    parameter_arn,
    session,
)
from tests.support.names import unique
from tests.support.server import ACCOUNT_ID, REGION, KhoaServer


def trusting(principal: str | list[str], *actions: str, **extra: Any) -> str:
    return document(
        {
            "Effect": "Allow",
            "Principal": {"AWS": principal},
            "Action": list(actions) or "sts:AssumeRole",
            **extra,
        }
    )


def make_role(iam: Any, trust_policy: str, *statements: dict[str, Any], **kwargs: Any) -> tuple[str, str]:
    name = unique("role")
    arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust_policy, **kwargs)["Role"]["Arn"]
    if statements:
        iam.put_role_policy(RoleName=name, PolicyName="permissions", PolicyDocument=document(*statements))
    return name, arn


def _parameter(ssm: Any, name: str = "") -> str:
    name = name or f"/sts/{unique('p')}"
    ssm.put_parameter(Name=name, Value="value", Type="String", Overwrite=True)
    return name


# -- same account -------------------------------------------------------------------------------------


def test_assume_a_role_whose_trust_policy_names_the_user(server: KhoaServer, iam: Any, ssm: Any) -> None:
    parameter = _parameter(ssm)
    user = new_user(server, iam)  # no identity policy: the trust policy names it
    name, arn = make_role(iam, trusting(user.arn), allow("ssm:GetParameter"))
    role_id = iam.get_role(RoleName=name)["Role"]["RoleId"]

    before = datetime.now(UTC)
    answer = user.client("sts").assume_role(RoleArn=arn, RoleSessionName="alice@example.com")
    session_arn = f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/{name}/alice@example.com"
    assert answer["AssumedRoleUser"] == {"AssumedRoleId": f"{role_id}:alice@example.com", "Arn": session_arn}
    credentials = answer["Credentials"]
    assert credentials["AccessKeyId"].startswith("ASIA")
    assert timedelta(minutes=59) < credentials["Expiration"] - before < timedelta(minutes=61)

    sessioned = Caller(
        server,
        session_arn,
        credentials["AccessKeyId"],
        credentials["SecretAccessKey"],
        credentials["SessionToken"],
    )
    identity = sessioned.client("sts").get_caller_identity()
    assert (identity["Arn"], identity["UserId"], identity["Account"]) == (
        session_arn,
        f"{role_id}:alice@example.com",
        ACCOUNT_ID,
    )
    sessioned.client("ssm").get_parameter(Name=parameter)
    # The session acts as the role: the user's name means nothing to it.
    assert refused(sessioned.client("ssm").put_parameter, Name=parameter, Value="x", Overwrite=True) == (
        "AccessDeniedException",
        implicit(session_arn, "ssm:PutParameter", parameter_arn(parameter)),
    )


def test_users_the_trust_policy_does_not_name_are_refused(server: KhoaServer, iam: Any) -> None:
    trusted = new_user(server, iam)
    _, arn = make_role(iam, trusting(trusted.arn))
    stranger = new_user(server, iam, allow("sts:AssumeRole"))  # even with an identity allow
    assert refused(stranger.client("sts").assume_role, RoleArn=arn, RoleSessionName="nope") == (
        "AccessDenied",
        implicit(stranger.arn, "sts:AssumeRole", arn, "role trust policy"),
    )
    # A role that does not exist is refused in the same words, revealing nothing.
    missing = f"arn:aws:iam::{ACCOUNT_ID}:role/{unique('missing')}"
    assert refused(stranger.client("sts").assume_role, RoleArn=missing, RoleSessionName="nope") == (
        "AccessDenied",
        implicit(stranger.arn, "sts:AssumeRole", missing, "role trust policy"),
    )


def test_a_trust_policy_naming_the_account_delegates_to_iam_policies(server: KhoaServer, iam: Any) -> None:
    _, arn = make_role(iam, trusting(ROOT_ARN))
    user = new_user(server, iam)
    assert refused(user.client("sts").assume_role, RoleArn=arn, RoleSessionName="s1") == (
        "AccessDenied",
        implicit(user.arn, "sts:AssumeRole", arn),
    )
    iam.put_user_policy(
        UserName=user.name, PolicyName="assume", PolicyDocument=document(allow("sts:AssumeRole", arn))
    )
    session(user, arn, "s1")
    # A Deny in the trust policy wins.
    iam.update_assume_role_policy(
        RoleName=arn.rsplit("/", 1)[1],
        PolicyDocument=document(
            {"Effect": "Allow", "Principal": {"AWS": ROOT_ARN}, "Action": "sts:AssumeRole"},
            {"Effect": "Deny", "Principal": {"AWS": user.arn}, "Action": "sts:AssumeRole"},
        ),
    )
    code, message = refused(user.client("sts").assume_role, RoleArn=arn, RoleSessionName="s1")
    assert code == "AccessDenied"
    assert message.endswith("with an explicit deny in the role trust policy")


# -- across accounts, with ExternalId -----------------------------------------------------------------


def test_cross_account_assume_role_with_external_id(
    server: KhoaServer, iam: Any, ssm: Any, account_b: Caller
) -> None:
    """A role in A trusts B's account with an ExternalId; B's user needs its own allow too."""
    parameter = _parameter(ssm)
    b_root = f"arn:aws:iam::{account_b.account_id}:root"
    name, arn = make_role(
        iam,
        trusting(b_root, Condition={"StringEquals": {"sts:ExternalId": "partner-7781"}}),
        allow("ssm:GetParameter", parameter_arn(parameter)),
    )
    b_user = new_user(server, account_b.client("iam"))
    sts = b_user.client("sts")
    # B's side first: without an identity policy in B, A's trust policy is not enough.
    assert refused(sts.assume_role, RoleArn=arn, RoleSessionName="partner", ExternalId="partner-7781") == (
        "AccessDenied",
        across_accounts(b_user.arn, "sts:AssumeRole", arn),
    )
    account_b.client("iam").put_user_policy(
        UserName=b_user.name, PolicyName="assume", PolicyDocument=document(allow("sts:AssumeRole", arn))
    )
    for external_id in (None, "wrong-7781", "PARTNER-7781"):
        extra = {"ExternalId": external_id} if external_id else {}
        assert refused(sts.assume_role, RoleArn=arn, RoleSessionName="partner", **extra) == (
            "AccessDenied",
            across_accounts(b_user.arn, "sts:AssumeRole", arn),
        )
    # A role that does not exist is refused in the same words: nothing tells B which of A's roles exist.
    missing = arn.replace(name, unique("missing"))
    assert refused(sts.assume_role, RoleArn=missing, RoleSessionName="partner") == (
        "AccessDenied",
        across_accounts(b_user.arn, "sts:AssumeRole", missing),
    )
    partner = session(b_user, arn, "partner", ExternalId="partner-7781")
    assert partner.arn == f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/{name}/partner"
    identity = partner.client("sts").get_caller_identity()
    assert (identity["Account"], identity["Arn"]) == (ACCOUNT_ID, partner.arn)
    assert partner.client("ssm").get_parameter(Name=parameter)["Parameter"]["Value"] == "value"
    # The session is A's role: A's other parameters are still out of reach.
    other = _parameter(ssm)
    assert refused(partner.client("ssm").get_parameter, Name=other)[1] == implicit(
        partner.arn, "ssm:GetParameter", parameter_arn(other)
    )


def test_a_trust_policy_naming_one_user_of_another_account(
    server: KhoaServer, iam: Any, account_b: Caller
) -> None:
    b_iam = account_b.client("iam")
    chosen = new_user(server, b_iam, allow("sts:AssumeRole"))
    other = new_user(server, b_iam, allow("sts:AssumeRole"))
    _, arn = make_role(iam, trusting(chosen.arn))
    session(chosen, arn, "chosen")
    assert code_of(other.client("sts").assume_role, RoleArn=arn, RoleSessionName="other") == "AccessDenied"


# -- durations and chaining ---------------------------------------------------------------------------


def test_duration_bounds(server: KhoaServer, iam: Any) -> None:
    user = new_user(server, iam, allow("sts:AssumeRole"))
    _, arn = make_role(iam, trusting(user.arn), MaxSessionDuration=7200)
    sts = user.client("sts")
    raw = server.client(
        "sts",
        validate=False,
        aws_access_key_id=user.access_key_id,
        aws_secret_access_key=user.secret_access_key,
    )
    now = datetime.now(UTC)
    for seconds in (900, 7200):
        expiry = sts.assume_role(RoleArn=arn, RoleSessionName="dd", DurationSeconds=seconds)["Credentials"][
            "Expiration"
        ]
        assert abs((expiry - now).total_seconds() - seconds) < 60
    assert refused(sts.assume_role, RoleArn=arn, RoleSessionName="dd", DurationSeconds=7201) == (
        "ValidationError",
        "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.",
    )
    assert refused(raw.assume_role, RoleArn=arn, RoleSessionName="dd", DurationSeconds=899) == (
        "ValidationError",
        "1 validation error detected: Value '899' at 'durationSeconds' failed to satisfy constraint: "
        "Member must have value greater than or equal to 900",
    )
    assert refused(raw.assume_role, RoleArn=arn, RoleSessionName="dd", DurationSeconds=43201) == (
        "ValidationError",
        "1 validation error detected: Value '43201' at 'durationSeconds' failed to satisfy constraint: "
        "Member must have value less than or equal to 43200",
    )
    assert refused(raw.assume_role, RoleArn=arn, RoleSessionName="a b")[0] == "ValidationError"
    # The default role allows one hour.
    _, short = make_role(iam, trusting(user.arn))
    assert (
        code_of(sts.assume_role, RoleArn=short, RoleSessionName="dd", DurationSeconds=3601)
        == "ValidationError"
    )


def test_role_chaining_is_limited_to_one_hour(server: KhoaServer, iam: Any) -> None:
    user = new_user(server, iam, allow("sts:AssumeRole"))
    _, first = make_role(iam, trusting(user.arn), allow("sts:AssumeRole"), MaxSessionDuration=43200)
    second_name, second = make_role(iam, trusting(first), MaxSessionDuration=43200)
    first_session = session(user, first, "hop1", DurationSeconds=43200)
    sts = first_session.client("sts")
    assert refused(sts.assume_role, RoleArn=second, RoleSessionName="hop2", DurationSeconds=3601) == (
        "ValidationError",
        "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining.",
    )
    chained = session(first_session, second, "hop2", DurationSeconds=3600)
    assert chained.arn == f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/{second_name}/hop2"
    assert chained.client("sts").get_caller_identity()["Arn"] == chained.arn
    # A trust policy naming the first role's session ARN also names that session.
    iam.update_assume_role_policy(RoleName=second_name, PolicyDocument=trusting(first_session.arn))
    session(first_session, second, "hop3")
    assert code_of(
        session(user, first, "other").client("sts").assume_role, RoleArn=second, RoleSessionName="x3"
    ) == ("AccessDenied")


# -- session policies and session tags -------------------------------------------------------------------


def test_session_policies_narrow_the_role(server: KhoaServer, iam: Any, ssm: Any) -> None:
    base = f"/sts/{unique('narrow')}"
    one, two, three = (_parameter(ssm, f"{base}/{n}") for n in ("one", "two", "three"))
    user = new_user(server, iam, allow("sts:AssumeRole"))
    _, arn = make_role(iam, trusting(user.arn), allow("ssm:GetParameter", parameter_arn(f"{base}/*")))
    managed = iam.create_policy(
        PolicyName=unique("session"), PolicyDocument=document(allow("ssm:GetParameter", parameter_arn(two)))
    )["Policy"]["Arn"]

    narrowed = session(
        user,
        arn,
        "narrow",
        Policy=document(allow(["ssm:GetParameter", "ssm:PutParameter"], parameter_arn(one))),
    )
    client = narrowed.client("ssm")
    client.get_parameter(Name=one)
    assert refused(client.get_parameter, Name=two) == (
        "AccessDeniedException",
        implicit(narrowed.arn, "ssm:GetParameter", parameter_arn(two), "session policy"),
    )
    # A session policy cannot grant what the role does not have.
    assert refused(client.put_parameter, Name=one, Value="x", Overwrite=True)[1] == implicit(
        narrowed.arn, "ssm:PutParameter", parameter_arn(one)
    )
    # Managed session policies (PolicyArns) narrow the same way.
    by_arn = session(user, arn, "by-arn", PolicyArns=[{"arn": managed}])
    by_arn.client("ssm").get_parameter(Name=two)
    assert code_of(by_arn.client("ssm").get_parameter, Name=three) == "AccessDeniedException"
    # Without session policies the session has all of the role's permissions.
    full = session(user, arn, "full").client("ssm")
    for parameter in (one, two, three):
        full.get_parameter(Name=parameter)


def test_a_managed_session_policy_applies_as_its_current_default_version(
    server: KhoaServer, iam: Any, ssm: Any
) -> None:
    """A session carries its managed session policies' ARNs (AWS packs the ARNs): narrowing the policy
    narrows the live session, and deleting it leaves the session nothing (fail closed)."""
    parameter = _parameter(ssm)
    user = new_user(server, iam, allow("sts:AssumeRole"))
    _, arn = make_role(iam, trusting(user.arn), allow("ssm:*"))
    managed = iam.create_policy(
        PolicyName=unique("session"), PolicyDocument=document(allow("ssm:GetParameter"))
    )["Policy"]["Arn"]
    live = session(user, arn, "live", PolicyArns=[{"arn": managed}]).client("ssm")
    live.get_parameter(Name=parameter)
    iam.create_policy_version(
        PolicyArn=managed, PolicyDocument=document(allow("ssm:DescribeParameters")), SetAsDefault=True
    )
    assert code_of(live.get_parameter, Name=parameter) == "AccessDeniedException"
    live.describe_parameters()
    iam.delete_policy_version(PolicyArn=managed, VersionId="v1")
    iam.delete_policy(PolicyArn=managed)
    assert code_of(live.describe_parameters) == "AccessDeniedException"
    assert code_of(live.get_parameter, Name=parameter) == "AccessDeniedException"


def test_session_tags_are_principal_tags(server: KhoaServer, iam: Any, ssm: Any) -> None:
    base = f"/sts/{unique('tags')}"
    blue, red = _parameter(ssm, f"{base}/blue/key"), _parameter(ssm, f"{base}/red/key")
    user = new_user(server, iam, allow(["sts:AssumeRole", "sts:TagSession"]))
    name, arn = make_role(
        iam,
        trusting(ROOT_ARN, "sts:AssumeRole", "sts:TagSession"),
        allow(
            "ssm:GetParameter",
            f"arn:aws:ssm:{REGION}:{ACCOUNT_ID}:parameter{base}/${{aws:PrincipalTag/team}}/*",
        ),
        Tags=[{"Key": "team", "Value": "red"}],
    )
    tagged = session(user, arn, "tagged", Tags=[{"Key": "team", "Value": "blue"}])
    client = tagged.client("ssm")
    # The session tag overrides the role's tag of the same key.
    client.get_parameter(Name=blue)
    assert refused(client.get_parameter, Name=red)[1] == implicit(
        tagged.arn, "ssm:GetParameter", parameter_arn(red)
    )
    untagged = session(user, arn, "untagged").client("ssm")
    untagged.get_parameter(Name=red)
    assert code_of(untagged.get_parameter, Name=blue) == "AccessDeniedException"
    # Tagging a session needs sts:TagSession in the trust policy.
    iam.update_assume_role_policy(RoleName=name, PolicyDocument=trusting(ROOT_ARN))
    code, message = refused(
        user.client("sts").assume_role,
        RoleArn=arn,
        RoleSessionName="t2",
        Tags=[{"Key": "team", "Value": "blue"}],
    )
    assert code == "AccessDenied"
    assert "sts:TagSession" in message


def test_request_tags_in_the_trust_policy(server: KhoaServer, iam: Any) -> None:
    user = new_user(server, iam, allow(["sts:AssumeRole", "sts:TagSession"]))
    _, arn = make_role(
        iam,
        document(
            {"Effect": "Allow", "Principal": {"AWS": ROOT_ARN}, "Action": "sts:AssumeRole"},
            {
                "Effect": "Allow",
                "Principal": {"AWS": ROOT_ARN},
                "Action": "sts:TagSession",
                "Condition": {"StringEquals": {"aws:RequestTag/project": "atlas"}},
            },
        ),
    )
    session(user, arn, "atlas", Tags=[{"Key": "project", "Value": "atlas"}])
    assert (
        code_of(
            user.client("sts").assume_role,
            RoleArn=arn,
            RoleSessionName="x1",
            Tags=[{"Key": "project", "Value": "zeus"}],
        )
        == "AccessDenied"
    )


# -- temporary credentials ------------------------------------------------------------------------------


def test_a_tampered_or_missing_session_token_is_refused(server: KhoaServer, iam: Any) -> None:
    user = new_user(server, iam, allow("sts:AssumeRole"))
    _, arn = make_role(iam, trusting(user.arn), allow("kms:ListKeys"))
    good = session(user, arn, "tamper")
    good.client("kms").list_keys()
    token = good.session_token or ""
    flipped = token[:20] + ("A" if token[20] != "A" else "B") + token[21:]
    for bad_token in (flipped, token + "x", None):
        bad = Caller(server, good.arn, good.access_key_id, good.secret_access_key, bad_token)
        assert refused(bad.client("kms").list_keys) == (
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        )
        assert refused(bad.client("sts").get_caller_identity)[0] == "InvalidClientTokenId"
    # Another session's token does not fit these credentials either.
    other = session(user, arn, "other")
    swapped = Caller(server, good.arn, good.access_key_id, good.secret_access_key, other.session_token)
    assert code_of(swapped.client("kms").list_keys) == "UnrecognizedClientException"
    # A long-term key with a session token is refused as well.
    with_token = Caller(server, user.arn, user.access_key_id, user.secret_access_key, token)
    assert code_of(with_token.client("kms").list_keys) == "UnrecognizedClientException"


@pytest.fixture(scope="module")
def clock_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KhoaServer]:
    """A private server whose test clock these tests move forward."""
    data: Path = tmp_path_factory.mktemp("sts-clock") / "data"
    instance = KhoaServer(data).start()
    yield instance
    instance.stop()


def test_temporary_credentials_expire(clock_server: KhoaServer) -> None:
    iam = clock_server.client("iam")
    user = new_user(clock_server, iam, allow("sts:AssumeRole"))
    _, arn = make_role(iam, trusting(user.arn), allow("kms:ListKeys"), MaxSessionDuration=7200)
    short = session(user, arn, "short", DurationSeconds=900)
    long = session(user, arn, "long", DurationSeconds=7200)
    short.client("kms").list_keys()

    clock_server.advance_clock(899)
    short.client("kms").list_keys()
    clock_server.advance_clock(2)
    assert refused(short.client("kms").list_keys) == (
        "ExpiredTokenException",
        "The security token included in the request is expired",
    )
    assert refused(short.client("sts").get_caller_identity)[0] == "ExpiredToken"
    long.client("kms").list_keys()
    # Sessions issued now run from the (advanced) clock.
    fresh = session(user, arn, "fresh", DurationSeconds=900)
    fresh.client("kms").list_keys()
    clock_server.advance_clock(7200)
    assert code_of(long.client("kms").list_keys) == "ExpiredTokenException"
    assert code_of(fresh.client("kms").list_keys) == "ExpiredTokenException"
    # The user's long-term key is unaffected.
    assert user.client("sts").get_caller_identity()["Arn"] == user.arn


def test_role_sessions_are_never_taken_for_mfa_sessions(server: KhoaServer, iam: Any) -> None:
    """aws:MultiFactorAuthPresent is "false" in every request a role session signs (Khoa verifies no
    MFA), so AWS's MFA guards deny; AssumeRole with an MFA code is refused rather than ignored."""
    ssm = server.client("ssm")
    parameter = _parameter(ssm)
    user = new_user(server, iam, allow("sts:AssumeRole"))
    mfa_deny = {
        "Effect": "Deny",
        "Action": "*",
        "Resource": "*",
        "Condition": {"BoolIfExists": {"aws:MultiFactorAuthPresent": "false"}},
    }
    _, guarded = make_role(iam, trusting(user.arn), allow("ssm:GetParameter"), mfa_deny)
    _, plain = make_role(iam, trusting(user.arn), allow("ssm:GetParameter"))
    assert session(user, plain, "plain").client("ssm").get_parameter(Name=parameter)["Parameter"]["Value"]
    code, message = refused(session(user, guarded, "guarded").client("ssm").get_parameter, Name=parameter)
    assert code == "AccessDeniedException" and "with an explicit deny in an identity-based policy" in message
    code, message = refused(
        user.client("sts").assume_role,
        RoleArn=plain,
        RoleSessionName="mfa",
        SerialNumber=f"arn:aws:iam::{ACCOUNT_ID}:mfa/{user.name}",
        TokenCode="123456",
    )
    assert code == "AccessDenied" and message.startswith("MultiFactorAuthentication failed")


def test_assume_role_is_decided_with_the_roles_tags(server: KhoaServer, iam: Any) -> None:
    """The role is AssumeRole's resource: its tags are aws:ResourceTag and iam:ResourceTag facts, as in
    AWS's ABAC tutorial (allow sts:AssumeRole where iam:ResourceTag/team matches). The roles trust
    the account, so the user's own policies decide."""
    user = new_user(
        server,
        iam,
        allow("sts:AssumeRole", Condition={"StringEquals": {"iam:ResourceTag/team": "core"}}),
        deny("sts:AssumeRole", Condition={"StringEquals": {"aws:ResourceTag/tier": "prod"}}),
    )
    tagged = {"team": "core"}
    _, core = make_role(iam, trusting(ROOT_ARN), Tags=[{"Key": k, "Value": v} for k, v in tagged.items()])
    _, prod = make_role(
        iam, trusting(ROOT_ARN), Tags=[{"Key": "team", "Value": "core"}, {"Key": "tier", "Value": "prod"}]
    )
    _, other = make_role(iam, trusting(ROOT_ARN), Tags=[{"Key": "team", "Value": "web"}])
    assert session(user, core, "core").arn.endswith("/core")
    code, message = refused(user.client("sts").assume_role, RoleArn=prod, RoleSessionName="prod")
    assert code == "AccessDenied" and "with an explicit deny in an identity-based policy" in message
    assert refused(user.client("sts").assume_role, RoleArn=other, RoleSessionName="web") == (
        "AccessDenied",
        implicit(user.arn, "sts:AssumeRole", other),
    )
