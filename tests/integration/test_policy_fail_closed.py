"""One strict policy grammar, through the wire (issue 11: findings 2, 4, 10 and the key-policy lockout
check of finding 11).

- Documents Khoa cannot read are refused at write time with the service's MalformedPolicyDocument
  error and never stored; ValidateResourcePolicy reports the parser's own message.
- Policy JSON nested thousands of levels deep is a 4xx everywhere, not a 500.
- A broken document found in storage anyway (written straight into the server's SQLite file here)
  makes the requests it governs fail with an explicit deny; it is never read as an empty policy.
- BlockPublicPolicy refuses policies by what they grant (the three bypasses of finding 4).
- PutKeyPolicy / CreateKey refuse a key policy that would lock the caller out, unless bypassed.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.errors import code_of, refused
from tests.support.iam import allow, deny, document, trust
from tests.support.identity import ROOT_ARN, Caller, create_account, eventually, new_user, resource_policy
from tests.support.names import unique
from tests.support.server import ACCOUNT_ID, KhoaServer

PUBLIC_MESSAGE = (
    "The BlockPublicPolicy parameter is set to true, and the resource policy did not prevent broad "
    "access to the secret."
)
LOCKOUT_MESSAGE = "The new key policy will not allow you to update the key policy in the future."


def statement(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "Effect": "Deny",
        "Principal": {"AWS": ROOT_ARN},
        "Action": "secretsmanager:GetSecretValue",
        "Resource": "*",
    }
    base.update(overrides)
    return base


FINDING_2 = {
    "principal 42": statement(Principal=42),
    "operator StringEqualz": statement(Condition={"StringEqualz": {"aws:PrincipalAccount": ACCOUNT_ID}}),
    "principal type aws": statement(Principal={"aws": "*"}),
    "Resource with NotResource": statement(NotResource="arn:aws:secretsmanager:*:*:secret:x-*"),
    "number in Action": statement(Action=["secretsmanager:GetSecretValue", 7]),
}


def deep(levels: int) -> str:
    """A policy-shaped document with a value nested ``levels`` deep (finding 10's RecursionError)."""
    return (
        '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*", '
        '"Condition": {"StringEquals": {"aws:username": ' + "[" * levels + "]" * levels + "}}}]}"
    )


# --- finding 2: refused at write time, never stored ------------------------------------------------


@pytest.mark.parametrize("bad", list(FINDING_2.values()), ids=list(FINDING_2))
def test_unreadable_resource_policies_are_refused_and_reported_alike(sm: Any, bad: dict[str, Any]) -> None:
    name = unique("fc")
    sm.create_secret(Name=name, SecretString="v")
    kept = resource_policy(statement(Effect="Allow", Action="secretsmanager:DescribeSecret"))
    sm.put_resource_policy(SecretId=name, ResourcePolicy=kept)
    text = resource_policy(bad)
    code, message = refused(sm.put_resource_policy, SecretId=name, ResourcePolicy=text)
    assert code == "MalformedPolicyDocumentException" and message
    assert sm.get_resource_policy(SecretId=name)["ResourcePolicy"] == kept
    for kwargs in ({}, {"SecretId": name}):
        validated = sm.validate_resource_policy(ResourcePolicy=text, **kwargs)
        assert validated["PolicyValidationPassed"] is False
        assert validated["ValidationErrors"] == [{"CheckName": "SYNTAX_CHECK", "ErrorMessage": message}]


def test_valid_policies_still_validate_and_store(sm: Any) -> None:
    name = unique("fc")
    sm.create_secret(Name=name, SecretString="v")
    text = resource_policy(
        statement(Sid="DenyPlainHttp", Condition={"Bool": {"aws:SecureTransport": "false"}}),
        statement(Effect="Allow", Principal={"AWS": ACCOUNT_ID}, Action=["secretsmanager:Describe*"]),
    )
    validated = sm.validate_resource_policy(ResourcePolicy=text, SecretId=name)
    assert (validated["PolicyValidationPassed"], validated["ValidationErrors"]) == (True, [])
    sm.put_resource_policy(SecretId=name, ResourcePolicy=text)
    assert sm.get_resource_policy(SecretId=name)["ResourcePolicy"] == text


# --- finding 10: deep nesting is a 4xx everywhere -----------------------------------------------------


@pytest.mark.parametrize("levels", [1500, 5000])
def test_deeply_nested_policies_are_refused_not_500(server: KhoaServer, sm: Any, levels: int) -> None:
    kms = server.client("kms")
    iam = server.client("iam", validate=False)
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    before = kms.get_key_policy(KeyId=key, PolicyName="default")["Policy"]
    secret = unique("deep")
    sm.create_secret(Name=secret, SecretString="v")
    text = deep(levels)
    # Trust policies are capped at 2,048 characters (LimitExceeded first), so nest as deep as fits.
    role_text = deep(900).replace(
        '"Action": "kms:*", "Resource": "*"', '"Principal": "*", "Action": "sts:AssumeRole"'
    )
    calls: list[tuple[Callable[..., Any], dict[str, Any], str]] = [
        (kms.create_key, {"Policy": text}, "MalformedPolicyDocumentException"),
        (
            kms.put_key_policy,
            {"KeyId": key, "PolicyName": "default", "Policy": text},
            "MalformedPolicyDocumentException",
        ),
        (
            sm.put_resource_policy,
            {"SecretId": secret, "ResourcePolicy": text},
            "MalformedPolicyDocumentException",
        ),
        (sm.validate_resource_policy, {"ResourcePolicy": text}, "MalformedPolicyDocumentException"),
        (
            iam.create_policy,
            {"PolicyName": unique("deep"), "PolicyDocument": text},
            "MalformedPolicyDocument",
        ),
        (
            iam.create_role,
            {"RoleName": unique("deep"), "AssumeRolePolicyDocument": role_text},
            "MalformedPolicyDocument",
        ),
    ]
    for call, kwargs, expected in calls:
        assert code_of(call, **kwargs) == expected, call
    assert kms.get_key_policy(KeyId=key, PolicyName="default")["Policy"] == before
    assert "ResourcePolicy" not in sm.get_resource_policy(SecretId=secret)


def test_other_json_traps_are_refused(server: KhoaServer, sm: Any) -> None:
    kms = server.client("kms")
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    duplicate = (
        '{"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Effect": "Allow", '
        f'"Principal": {{"AWS": "{ROOT_ARN}"}}, "Action": "kms:*", "Resource": "*"}}]}}'
    )
    nan = document(
        {"Effect": "Allow", "Principal": {"AWS": ROOT_ARN}, "Action": "kms:*", "Resource": "*"}
    ).replace('"Resource": "*"', '"Resource": "*", "Condition": {"NumericEquals": {"kms:x": NaN}}')
    for text in (duplicate, nan):
        assert code_of(kms.put_key_policy, KeyId=key, PolicyName="default", Policy=text) == (
            "MalformedPolicyDocumentException"
        )


# --- a broken document in storage is an explicit deny ---------------------------------------------------


def _write(server: KhoaServer, sql: str, *args: Any) -> None:
    """Change the running server's SQLite database behind its back (an older version's leftovers)."""
    with sqlite3.connect(server.data_dir / "khoa.db", timeout=30) as conn:
        assert conn.execute(sql, args).rowcount == 1


def _denied_explicitly(call: Callable[..., Any], **kwargs: Any) -> bool:
    outcome = code_of(call, **kwargs)
    if outcome == "ok":
        return False
    code, message = refused(call, **kwargs)
    return code in ("AccessDeniedException", "AccessDenied") and "explicit deny" in message


def test_a_broken_stored_resource_policy_denies(server: KhoaServer, iam: Any, sm: Any) -> None:
    """The finding's scenario: a Deny in a policy Khoa cannot parse must not stop working."""
    user = new_user(server, iam, allow("secretsmanager:*"))
    reader = user.client("secretsmanager")
    arn = sm.create_secret(Name=unique("stored"), SecretString="v")["ARN"]
    # A valid policy that only allows: the user reads (identity policy allows, nothing denies).
    allowing = resource_policy(statement(Effect="Allow", Principal={"AWS": user.arn}))
    sm.put_resource_policy(SecretId=arn, ResourcePolicy=allowing)
    assert reader.get_secret_value(SecretId=arn)["SecretString"] == "v"
    # The same policy, broken in one of finding 2's ways, written straight into the database.
    broken = resource_policy(statement(Effect="Allow", Principal={"AWS": user.arn}, Action=[7]))
    _write(
        server,
        "UPDATE sm_secrets SET resource_policy = ? WHERE arn = ?",
        json.dumps({"default": broken}),
        arn,
    )
    assert eventually(lambda: _denied_explicitly(reader.get_secret_value, SecretId=arn)) >= 0
    # Even the account root, which no identity policy limits, is denied by it.
    assert _denied_explicitly(sm.get_secret_value, SecretId=arn)
    # Only the account root may read and replace it, to repair it through the API.
    assert _denied_explicitly(
        user.client("secretsmanager").put_resource_policy, SecretId=arn, ResourcePolicy=allowing
    )
    assert sm.get_resource_policy(SecretId=arn)["ResourcePolicy"] == broken
    sm.put_resource_policy(SecretId=arn, ResourcePolicy=allowing)
    eventually(lambda: code_of(reader.get_secret_value, SecretId=arn) == "ok")
    # A stored map of policies that is not even JSON also denies.
    _write(server, "UPDATE sm_secrets SET resource_policy = ? WHERE arn = ?", "{not json", arn)
    eventually(lambda: _denied_explicitly(reader.get_secret_value, SecretId=arn))
    assert "ResourcePolicy" not in sm.get_resource_policy(SecretId=arn)
    sm.put_resource_policy(SecretId=arn, ResourcePolicy=allowing)
    eventually(lambda: code_of(reader.get_secret_value, SecretId=arn) == "ok")


def test_a_broken_stored_identity_policy_denies(server: KhoaServer, iam: Any, sm: Any) -> None:
    user = new_user(server, iam, allow("secretsmanager:GetSecretValue"))
    iam.put_user_policy(
        UserName=user.name,
        PolicyName="guard",
        PolicyDocument=document(
            deny("secretsmanager:GetSecretValue", "arn:aws:secretsmanager:*:*:secret:none-*")
        ),
    )
    reader = user.client("secretsmanager")
    arn = sm.create_secret(Name=unique("stored"), SecretString="v")["ARN"]
    eventually(lambda: code_of(reader.get_secret_value, SecretId=arn) == "ok")
    owner = iam.get_user(UserName=user.name)["User"]["UserId"]
    broken = document(deny("secretsmanager:GetSecretValue", 42))
    _write(
        server,
        "UPDATE iam_inline_policies SET document = ? WHERE owner_id = ? AND policy_name = 'guard'",
        broken,
        owner,
    )
    eventually(lambda: _denied_explicitly(reader.get_secret_value, SecretId=arn))
    # The policy simulator reads stored policies exactly as authorisation does.
    simulated = iam.simulate_principal_policy(
        PolicySourceArn=user.arn, ActionNames=["secretsmanager:GetSecretValue"], ResourceArns=[arn]
    )["EvaluationResults"][0]
    assert simulated["EvalDecision"] == "explicitDeny"


def test_a_broken_stored_key_policy_denies(server: KhoaServer) -> None:
    kms = server.client("kms")
    key = kms.create_key()["KeyMetadata"]
    kms.encrypt(KeyId=key["KeyId"], Plaintext=b"x")
    broken = document(
        {
            "Effect": "Allow",
            "Principal": {"AWS": ROOT_ARN},
            "Action": "kms:*",
            "Resource": "*",
            "Condition": {"StringEqualz": {"a": "b"}},
        }
    )
    _write(server, "UPDATE kms_keys SET policy = ? WHERE key_id = ?", broken, key["KeyId"])

    def denied() -> bool:
        code, message = ("ok", "")
        if code_of(kms.encrypt, KeyId=key["KeyId"], Plaintext=b"x") != "ok":
            code, message = refused(kms.encrypt, KeyId=key["KeyId"], Plaintext=b"x")
        return code == "AccessDeniedException" and "explicit deny" in message

    eventually(denied)
    # Managing the key is denied too: a broken key policy is repaired in storage (see threat model).
    assert _denied_explicitly(
        kms.put_key_policy, KeyId=key["KeyId"], PolicyName="default", Policy=_key_policy(ROOT_ARN)
    )


# --- finding 4: BlockPublicPolicy decides by what a policy grants --------------------------------------


def _public(condition: dict[str, Any] | None, principal: Any = "*") -> str:
    extra = {"Condition": condition} if condition else {}
    return resource_policy(statement(Effect="Allow", Principal=principal, **extra))


BYPASSES = {
    "StringLike PrincipalAccount *": {"StringLike": {"aws:PrincipalAccount": "*"}},
    "StringNotEquals PrincipalAccount": {"StringNotEquals": {"aws:PrincipalAccount": "000000000000"}},
    "StringEqualsIfExists SourceVpc": {"StringEqualsIfExists": {"aws:SourceVpc": "vpc-1a2b3c4d"}},
    "variable": {"StringEquals": {"aws:PrincipalAccount": "${aws:PrincipalAccount}"}},
}


@pytest.mark.parametrize("condition", list(BYPASSES.values()), ids=list(BYPASSES))
def test_block_public_policy_refuses_the_bypasses(
    server: KhoaServer, sm: Any, condition: dict[str, Any]
) -> None:
    name = unique("public")
    arn = sm.create_secret(Name=name, SecretString="v")["ARN"]
    text = _public(condition)
    assert refused(sm.put_resource_policy, SecretId=arn, ResourcePolicy=text, BlockPublicPolicy=True) == (
        "PublicPolicyException",
        PUBLIC_MESSAGE,
    )
    assert "ResourcePolicy" not in sm.get_resource_policy(SecretId=arn)


@pytest.fixture(scope="module")
def other_account(server: KhoaServer) -> Caller:
    return create_account(server)


def test_a_pinned_policy_is_accepted_and_keeps_other_accounts_out(
    server: KhoaServer, sm: Any, other_account: Caller
) -> None:
    # A customer key the other account may decrypt with, so only the secret policy decides.
    shared_key = _key_policy(ROOT_ARN)[:-2] + (
        f', {{"Effect": "Allow", "Principal": {{"AWS": "{other_account.arn}"}}, "Action": "kms:Decrypt", '
        '"Resource": "*"}]}'
    )
    key = server.client("kms").create_key(Policy=shared_key)["KeyMetadata"]["Arn"]
    arn = sm.create_secret(Name=unique("pinned"), SecretString="v", KmsKeyId=key)["ARN"]
    pinned = _public({"StringEquals": {"aws:PrincipalAccount": ACCOUNT_ID}})
    sm.put_resource_policy(SecretId=arn, ResourcePolicy=pinned, BlockPublicPolicy=True)
    outsider = other_account.client("secretsmanager")
    assert code_of(outsider.get_secret_value, SecretId=arn) == "AccessDeniedException"
    # The bypass, stored without BlockPublicPolicy, really is public: the other account reads.
    sm.put_resource_policy(SecretId=arn, ResourcePolicy=_public(BYPASSES["StringLike PrincipalAccount *"]))
    assert outsider.get_secret_value(SecretId=arn)["SecretString"] == "v"
    sm.delete_resource_policy(SecretId=arn)


# --- finding 11: the key policy lockout safety check -------------------------------------------------


def _key_policy(*principals: str, extra: list[dict[str, Any]] | None = None) -> str:
    statements: list[dict[str, Any]] = [
        {"Effect": "Allow", "Principal": {"AWS": list(principals)}, "Action": "kms:*", "Resource": "*"}
    ]
    return json.dumps({"Version": "2012-10-17", "Statement": statements + (extra or [])})


def test_put_key_policy_refuses_a_policy_that_locks_the_caller_out(server: KhoaServer, iam: Any) -> None:
    kms = server.client("kms")
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    other = f"arn:aws:iam::{ACCOUNT_ID}:role/{unique('other')}"
    iam.create_role(RoleName=other.rsplit("/", 1)[1], AssumeRolePolicyDocument=trust({"AWS": ROOT_ARN}))
    before = kms.get_key_policy(KeyId=key, PolicyName="default")["Policy"]
    locking = [
        _key_policy(other),
        _key_policy(
            ROOT_ARN,
            extra=[{"Effect": "Deny", "Principal": "*", "Action": "kms:PutKeyPolicy", "Resource": "*"}],
        ),
        json.dumps(
            {
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"AWS": ROOT_ARN},
                        "Action": "kms:Encrypt",
                        "Resource": "*",
                    }
                ]
            }
        ),
    ]
    for text in locking:
        assert refused(kms.put_key_policy, KeyId=key, PolicyName="default", Policy=text) == (
            "MalformedPolicyDocumentException",
            LOCKOUT_MESSAGE,
        )
        assert kms.get_key_policy(KeyId=key, PolicyName="default")["Policy"] == before
        assert refused(kms.create_key, Policy=text) == ("MalformedPolicyDocumentException", LOCKOUT_MESSAGE)
    # Bypassing the check is the caller's explicit choice.
    kms.put_key_policy(
        KeyId=key, PolicyName="default", Policy=locking[0], BypassPolicyLockoutSafetyCheck=True
    )
    # ... and what the check was there to prevent has happened: the caller is locked out.
    assert code_of(kms.get_key_policy, KeyId=key, PolicyName="default") == "AccessDeniedException"
    assert (
        code_of(kms.put_key_policy, KeyId=key, PolicyName="default", Policy=before) == "AccessDeniedException"
    )
    created = kms.create_key(Policy=locking[0], BypassPolicyLockoutSafetyCheck=True)["KeyMetadata"]
    assert created["KeyState"] == "Enabled"


def test_the_lockout_check_counts_iam_policies_when_the_key_delegates(server: KhoaServer, iam: Any) -> None:
    kms = server.client("kms")
    admin = new_user(server, iam, allow(["kms:PutKeyPolicy", "kms:CreateKey", "kms:GetKeyPolicy"]))
    weak = new_user(server, iam, allow(["kms:CreateKey"]))
    delegating = _key_policy(ROOT_ARN)
    key = kms.create_key(Policy=delegating)["KeyMetadata"]["KeyId"]
    # The key delegates to the account, and the admin's IAM policy allows PutKeyPolicy: accepted.
    eventually(lambda: code_of(admin.client("kms").create_key, Policy=delegating) == "ok")
    admin.client("kms").put_key_policy(KeyId=key, PolicyName="default", Policy=delegating)
    # A caller whose IAM policies do not allow PutKeyPolicy would lock itself out.
    assert refused(weak.client("kms").create_key, Policy=delegating) == (
        "MalformedPolicyDocumentException",
        LOCKOUT_MESSAGE,
    )
    # Naming the caller itself in the key policy is enough, whatever its IAM policies say.
    naming = _key_policy(ROOT_ARN, weak.arn)
    assert weak.client("kms").create_key(Policy=naming)["KeyMetadata"]["KeyState"] == "Enabled"


def test_session_and_simulation_policies_go_through_the_same_parser(server: KhoaServer, iam: Any) -> None:
    role = unique("sess")
    role_arn = iam.create_role(RoleName=role, AssumeRolePolicyDocument=trust({"AWS": ROOT_ARN}))["Role"][
        "Arn"
    ]
    user = new_user(server, iam, allow("sts:AssumeRole", role_arn))
    sts = user.client("sts")
    session_text = deep(900)
    for text in (
        session_text,
        document(allow(["kms:Decrypt", 7])),
        document(allow("kms:*", "*", Condition={"StringEqualz": {"a": "b"}})),
    ):
        assert code_of(sts.assume_role, RoleArn=role_arn, RoleSessionName="session", Policy=text) == (
            "MalformedPolicyDocument"
        )
        assert code_of(iam.simulate_custom_policy, PolicyInputList=[text], ActionNames=["kms:Decrypt"]) == (
            "InvalidInput"
        )


def test_key_policies_are_limited_to_32_kb(server: KhoaServer) -> None:
    kms = server.client("kms")
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    before = kms.get_key_policy(KeyId=key, PolicyName="default")["Policy"]

    def sized(total: int) -> str:
        text = _key_policy(ROOT_ARN)
        sid = "x" * (total - len(text) - len(', "Sid": ""'))
        return text.replace('"Effect"', f'"Sid": "{sid}", "Effect"', 1)

    assert len(sized(32768).encode()) == 32768
    kms.put_key_policy(KeyId=key, PolicyName="default", Policy=sized(32768))
    assert code_of(kms.put_key_policy, KeyId=key, PolicyName="default", Policy=sized(32769)) == (
        "LimitExceededException"
    )
    assert code_of(kms.create_key, Policy=sized(32769)) == "LimitExceededException"
    kms.put_key_policy(KeyId=key, PolicyName="default", Policy=before)


def test_iam_applies_its_own_sid_rules(iam: Any) -> None:
    def with_sids(*sids: str) -> str:
        return document(*(allow("kms:Decrypt", Sid=sid) for sid in sids))

    for text in (with_sids("has space"), with_sids("dash-ed"), with_sids("Same", "Same")):
        assert code_of(iam.create_policy, PolicyName=unique("sid"), PolicyDocument=text) == (
            "MalformedPolicyDocument"
        )
        assert (
            code_of(
                iam.create_role,
                RoleName=unique("sid"),
                AssumeRolePolicyDocument=text.replace('"kms:Decrypt"', '"sts:AssumeRole"').replace(
                    '"Resource": "*"', f'"Principal": {{"AWS": "{ROOT_ARN}"}}'
                ),
            )
            == "MalformedPolicyDocument"
        )
    iam.create_policy(PolicyName=unique("sid"), PolicyDocument=with_sids("One", "Two", ""))


def test_a_policy_full_of_wildcards_is_evaluated_at_once(server: KhoaServer, kms: Any) -> None:
    """A key policy condition ``*a*a…*b`` against a 2,000-character encryption context value: the naive
    wildcard regex backtracked exponentially and held the worker's event loop for hours."""
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    trap = "*a" * 12 + "*b"
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "Admin",
                "Effect": "Allow",
                "Principal": {"AWS": ROOT_ARN},
                "Action": "kms:*",
                "Resource": "*",
            },
            {
                "Sid": "Trap",
                "Effect": "Deny",
                "Principal": {"AWS": ROOT_ARN},
                "Action": "kms:Encrypt",
                "Resource": "*",
                "Condition": {"StringLike": {"kms:EncryptionContext:x": trap}},
            },
        ],
    }
    kms.put_key_policy(KeyId=key_id, PolicyName="default", Policy=json.dumps(policy))
    assert kms.encrypt(KeyId=key_id, Plaintext=b"p", EncryptionContext={"x": "a" * 2000})["CiphertextBlob"]
    code, _ = refused(kms.encrypt, KeyId=key_id, Plaintext=b"p", EncryptionContext={"x": "a" * 2000 + "b"})
    assert code == "AccessDeniedException"
