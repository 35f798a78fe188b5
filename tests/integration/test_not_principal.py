"""NotPrincipal: only with Deny, and never in a role trust policy.

"NotPrincipal must be used with "Effect":"Deny". Using it with "Effect":"Allow" is not supported", and
"You cannot use the NotPrincipal element ... in an IAM role trust policy" (IAM User Guide, "AWS JSON
policy elements: NotPrincipal"). Read as "everyone not listed", an Allow + NotPrincipal statement would
grant every principal of every account, a user with no policy at all included.

- IAM refuses NotPrincipal in trust policies (CreateRole, UpdateAssumeRolePolicy: MalformedPolicyDocument).
- KMS (CreateKey, PutKeyPolicy) and Secrets Manager (PutResourcePolicy, ValidateResourcePolicy) refuse
  Allow + NotPrincipal with their MalformedPolicyDocumentException; Deny + NotPrincipal still works.
- One found in storage anyway (written straight into the server's SQLite file, as an older version
  would have accepted it) grants nothing: the rest of its policy still applies.

Red-team finding (REPORT.md, IAM finding 3).
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import pytest

from tests.support.errors import code_of, refused
from tests.support.iam import allow, document
from tests.support.identity import ROOT_ARN, Caller, new_user, resource_policy, session
from tests.support.names import unique
from tests.support.server import ACCOUNT_ID, KhoaServer

NO_NOT_PRINCIPAL_IN_TRUST = "Has prohibited field NotPrincipal"
NOT_PRINCIPAL_WITH_ALLOW = (
    'NotPrincipal is supported only with "Effect": "Deny"; a statement with "Effect": "Allow" must '
    "name its principals with Principal."
)


def _user_arn(name: str) -> str:
    return f"arn:aws:iam::{ACCOUNT_ID}:user/{name}"


def _not_principal(effect: str, excluded: str, action: str, **extra: Any) -> dict[str, Any]:
    return {"Effect": effect, "NotPrincipal": {"AWS": excluded}, "Action": action, **extra}


def _key_policy(*statements: dict[str, Any]) -> str:
    root = {"Effect": "Allow", "Principal": {"AWS": ROOT_ARN}, "Action": "kms:*", "Resource": "*"}
    return json.dumps({"Version": "2012-10-17", "Statement": [root, *statements]})


def _write(server: KhoaServer, sql: str, *args: Any) -> None:
    """Change the running server's SQLite database behind its back (what an older version stored), then
    make an IAM write: it moves the revocation epoch, so no cached policy or metadata hides the change."""
    with sqlite3.connect(server.data_dir / "khoa.db", timeout=30) as conn:
        assert conn.execute(sql, args).rowcount == 1
    server.client("iam").create_user(UserName=unique("epoch"))


@pytest.fixture(scope="module")
def stranger(server: KhoaServer, account_b: Caller) -> Caller:
    """A user of another tenant account, allowed everything by its own policy."""
    return new_user(server, account_b.client("iam"), allow("*"))


@pytest.fixture
def blocked(iam: Any) -> str:
    """The one user an Allow + NotPrincipal statement would leave out."""
    name = unique("blocked")
    iam.create_user(UserName=name)
    return _user_arn(name)


# --- role trust policies ---------------------------------------------------------------------------


@pytest.mark.parametrize("effect", ["Allow", "Deny"])
def test_a_trust_policy_with_not_principal_is_refused(iam: Any, blocked: str, effect: str) -> None:
    trust = document(_not_principal(effect, blocked, "sts:AssumeRole"))
    name = unique("np-role")
    assert refused(iam.create_role, RoleName=name, AssumeRolePolicyDocument=trust) == (
        "MalformedPolicyDocument",
        NO_NOT_PRINCIPAL_IN_TRUST,
    )
    assert code_of(iam.get_role, RoleName=name) == "NoSuchEntity"
    # A Principal statement beside it does not make it acceptable.
    named = {"Effect": "Allow", "Principal": {"AWS": ROOT_ARN}, "Action": "sts:AssumeRole"}
    both = document(named, _not_principal(effect, blocked, "sts:AssumeRole"))
    assert (
        refused(iam.create_role, RoleName=name, AssumeRolePolicyDocument=both)[0] == "MalformedPolicyDocument"
    )

    kept = document(named)
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=kept)
    assert refused(iam.update_assume_role_policy, RoleName=name, PolicyDocument=trust) == (
        "MalformedPolicyDocument",
        NO_NOT_PRINCIPAL_IN_TRUST,
    )
    stored = iam.get_role(RoleName=name)["Role"]["AssumeRolePolicyDocument"]
    assert (json.loads(stored) if isinstance(stored, str) else stored) == json.loads(kept)


def test_a_stored_allow_not_principal_trust_lets_nobody_assume_the_role(
    server: KhoaServer, iam: Any, blocked: str, stranger: Caller
) -> None:
    """The red team's scenario (r06), with the trust policy put in storage behind IAM's back: neither a
    user of the account with no policy at all nor a user of another account assumes the role."""
    name = unique("np-stored")
    role = iam.create_role(
        RoleName=name,
        AssumeRolePolicyDocument=document(
            {"Effect": "Allow", "Principal": {"AWS": ROOT_ARN}, "Action": "sts:AssumeRole"}
        ),
    )["Role"]
    iam.put_role_policy(RoleName=name, PolicyName="p", PolicyDocument=document(allow("kms:*")))
    nobody = new_user(server, iam)  # no policy at all
    assert (
        code_of(nobody.client("sts").assume_role, RoleArn=role["Arn"], RoleSessionName="np") == "AccessDenied"
    )

    everyone_but_blocked = document(_not_principal("Allow", blocked, "sts:AssumeRole"))
    _write(
        server,
        "UPDATE iam_principals SET assume_role_policy = ? WHERE principal_id = ?",
        everyone_but_blocked,
        role["RoleId"],
    )
    outcomes = {
        "same account, no policy": code_of(
            nobody.client("sts").assume_role, RoleArn=role["Arn"], RoleSessionName="nopolicy"
        ),
        "other account": code_of(
            stranger.client("sts").assume_role, RoleArn=role["Arn"], RoleSessionName="np"
        ),
    }
    assert outcomes == {"same account, no policy": "AccessDenied", "other account": "AccessDenied"}
    # A user whose own policy allows AssumeRole still needs the trust policy to name it or its account.
    allowed = new_user(server, iam, allow("sts:AssumeRole"))
    assert (
        code_of(allowed.client("sts").assume_role, RoleArn=role["Arn"], RoleSessionName="np")
        == "AccessDenied"
    )


# --- KMS key policies --------------------------------------------------------------------------------


def test_a_key_policy_with_allow_not_principal_is_refused(kms: Any, blocked: str) -> None:
    statement = _not_principal("Allow", blocked, "kms:Decrypt", Resource="*")
    assert refused(kms.create_key, Policy=_key_policy(statement)) == (
        "MalformedPolicyDocumentException",
        NOT_PRINCIPAL_WITH_ALLOW,
    )
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    before = kms.get_key_policy(KeyId=key, PolicyName="default")["Policy"]
    assert refused(kms.put_key_policy, KeyId=key, PolicyName="default", Policy=_key_policy(statement)) == (
        "MalformedPolicyDocumentException",
        NOT_PRINCIPAL_WITH_ALLOW,
    )
    assert kms.get_key_policy(KeyId=key, PolicyName="default")["Policy"] == before


def test_a_key_policy_deny_not_principal_is_accepted_and_spares_only_those_it_lists(
    server: KhoaServer, iam: Any, kms: Any
) -> None:
    spared = new_user(server, iam, allow("kms:Decrypt"))
    other = new_user(server, iam, allow("kms:Decrypt"))
    guard = {
        "Effect": "Deny",
        "NotPrincipal": {"AWS": [ROOT_ARN, spared.arn]},
        "Action": "kms:Decrypt",
        "Resource": "*",
    }
    key = kms.create_key(Policy=_key_policy(guard))["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key, Plaintext=b"x")["CiphertextBlob"]
    assert spared.client("kms").decrypt(CiphertextBlob=blob)["Plaintext"] == b"x"
    code, message = refused(other.client("kms").decrypt, CiphertextBlob=blob)
    assert code == "AccessDeniedException" and "explicit deny" in message


def test_a_stored_allow_not_principal_key_policy_grants_nothing(
    server: KhoaServer, iam: Any, kms: Any, blocked: str, stranger: Caller
) -> None:
    key = kms.create_key()["KeyMetadata"]
    blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"secret")["CiphertextBlob"]
    nobody = new_user(server, iam)
    _write(
        server,
        "UPDATE kms_keys SET policy = ? WHERE key_id = ?",
        _key_policy(_not_principal("Allow", blocked, "kms:Decrypt", Resource="*")),
        key["KeyId"],
    )
    outcomes = {
        "same account, no policy": code_of(nobody.client("kms").decrypt, CiphertextBlob=blob),
        "other account": code_of(stranger.client("kms").decrypt, CiphertextBlob=blob, KeyId=key["Arn"]),
    }
    assert outcomes == {
        "same account, no policy": "AccessDeniedException",
        "other account": "AccessDeniedException",
    }
    # The rest of the stored policy still applies: the account root's statement delegates to IAM.
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"secret"
    reader = new_user(server, iam, allow("kms:Decrypt"))
    assert reader.client("kms").decrypt(CiphertextBlob=blob)["Plaintext"] == b"secret"


# --- Secrets Manager resource policies -----------------------------------------------------------------


def test_a_secret_policy_with_allow_not_principal_is_refused(sm: Any, blocked: str) -> None:
    name = unique("np-secret")
    sm.create_secret(Name=name, SecretString="v")
    text = resource_policy(_not_principal("Allow", blocked, "secretsmanager:GetSecretValue", Resource="*"))
    assert refused(sm.put_resource_policy, SecretId=name, ResourcePolicy=text) == (
        "MalformedPolicyDocumentException",
        NOT_PRINCIPAL_WITH_ALLOW,
    )
    assert "ResourcePolicy" not in sm.get_resource_policy(SecretId=name)
    for kwargs in ({}, {"SecretId": name}):
        validated = sm.validate_resource_policy(ResourcePolicy=text, **kwargs)
        assert validated["PolicyValidationPassed"] is False
        assert validated["ValidationErrors"] == [
            {"CheckName": "SYNTAX_CHECK", "ErrorMessage": NOT_PRINCIPAL_WITH_ALLOW}
        ]


def test_a_secret_policy_deny_not_principal_is_accepted(server: KhoaServer, iam: Any, sm: Any) -> None:
    spared = new_user(server, iam, allow("secretsmanager:GetSecretValue"))
    other = new_user(server, iam, allow("secretsmanager:GetSecretValue"))
    arn = sm.create_secret(Name=unique("np-deny"), SecretString="v")["ARN"]
    guard = {
        "Effect": "Deny",
        "NotPrincipal": {"AWS": [ROOT_ARN, spared.arn]},
        "Action": "secretsmanager:GetSecretValue",
        "Resource": "*",
    }
    sm.put_resource_policy(SecretId=arn, ResourcePolicy=resource_policy(guard))
    assert spared.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"] == "v"
    code, message = refused(other.client("secretsmanager").get_secret_value, SecretId=arn)
    assert code == "AccessDeniedException" and "explicit deny" in message


def test_a_stored_allow_not_principal_secret_policy_grants_nothing(
    server: KhoaServer, iam: Any, sm: Any, blocked: str, stranger: Caller
) -> None:
    arn = sm.create_secret(Name=unique("np-stored"), SecretString="TOP-SECRET")["ARN"]
    nobody = new_user(server, iam)
    assumer = new_user(server, iam, allow("sts:AssumeRole"))
    role = iam.create_role(
        RoleName=unique("np-reader"),
        AssumeRolePolicyDocument=document(
            {"Effect": "Allow", "Principal": {"AWS": assumer.arn}, "Action": "sts:AssumeRole"}
        ),
    )["Role"]
    role_session = session(assumer, role["Arn"])
    everyone_but_blocked = resource_policy(
        _not_principal("Allow", blocked, "secretsmanager:GetSecretValue", Resource="*")
    )
    _write(
        server,
        "UPDATE sm_secrets SET resource_policy = ? WHERE arn = ?",
        json.dumps({"default": everyone_but_blocked}),
        arn,
    )
    outcomes = {
        "same account, no policy": code_of(nobody.client("secretsmanager").get_secret_value, SecretId=arn),
        "role session, no policy": code_of(
            role_session.client("secretsmanager").get_secret_value, SecretId=arn
        ),
        "other account": code_of(stranger.client("secretsmanager").get_secret_value, SecretId=arn),
    }
    assert outcomes == {
        "same account, no policy": "AccessDeniedException",
        "role session, no policy": "AccessDeniedException",
        "other account": "AccessDeniedException",
    }
    # The account's own principals still read it by their IAM policies (the statement only grants
    # nothing; it is no deny).
    reader = new_user(server, iam, allow("secretsmanager:GetSecretValue"))
    assert reader.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"] == "TOP-SECRET"
