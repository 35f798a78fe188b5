"""A role session belongs to the role it was issued for (its unique ID), not to the role's name.

AWS binds principals to unique IDs: "If you delete and recreate the role, the relationship is broken"
(IAM User Guide, "AWS JSON policy elements: Principal"). A session of a deleted role is therefore no
session of a new role created later under the same name, though its ARN (``assumed-role/NAME/...``)
reads the same. Khoa refuses such a session outright, like a revoked one: every call it signs is
answered UnrecognizedClientException (JSON services) or InvalidClientTokenId (query services), whether
or not the role was re-created, and on the very next request after DeleteRole, on every worker.

Red-team finding (REPORT.md, IAM finding 2): a session of a deleted role read a secret, decrypted with
a key and assumed a role that the policies of a new role with the same name granted.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_auth import call
from tests.support.errors import code_of, refused
from tests.support.iam import allow, trust
from tests.support.identity import ROOT_ARN, Caller, new_user, resource_policy, session
from tests.support.names import unique
from tests.support.server import KhoaServer

INVALID_TOKEN = "The security token included in the request is invalid."


def _key_policy(*statements: dict[str, Any]) -> str:
    root = {"Effect": "Allow", "Principal": {"AWS": ROOT_ARN}, "Action": "kms:*", "Resource": "*"}
    return json.dumps({"Version": "2012-10-17", "Statement": [root, *statements]})


def _named(principal: str, action: str) -> dict[str, Any]:
    return {"Effect": "Allow", "Principal": {"AWS": principal}, "Action": action, "Resource": "*"}


def _what_it_reaches(
    caller: Caller, secret: str, blob: bytes, granted_blob: bytes, target: str
) -> dict[str, str]:
    """What ``caller`` gets from each grant made to the role by name ("ok" or the error code)."""
    return {
        "GetCallerIdentity": code_of(caller.client("sts").get_caller_identity),
        "GetSecretValue (resource policy)": code_of(
            caller.client("secretsmanager").get_secret_value, SecretId=secret
        ),
        "Decrypt (key policy)": code_of(caller.client("kms").decrypt, CiphertextBlob=blob),
        "Decrypt (grant)": code_of(caller.client("kms").decrypt, CiphertextBlob=granted_blob),
        "AssumeRole (trust policy)": code_of(
            caller.client("sts").assume_role, RoleArn=target, RoleSessionName="chained"
        ),
    }


REFUSED = {
    "GetCallerIdentity": "InvalidClientTokenId",
    "GetSecretValue (resource policy)": "UnrecognizedClientException",
    "Decrypt (key policy)": "UnrecognizedClientException",
    "Decrypt (grant)": "UnrecognizedClientException",
    "AssumeRole (trust policy)": "InvalidClientTokenId",
}


def test_a_session_of_a_deleted_role_gets_nothing_granted_to_a_new_role_of_its_name(
    server: KhoaServer, iam: Any
) -> None:
    """The red team's scenario (r01), with every way Khoa grants to a role by name: a secret's resource
    policy, a key policy, a KMS grant and another role's trust policy."""
    sm, kms = server.client("secretsmanager"), server.client("kms")
    name = unique("binding-role")
    assumer = new_user(server, iam, allow("sts:AssumeRole"))
    role_arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust({"AWS": assumer.arn}))["Role"][
        "Arn"
    ]
    old_id = iam.get_role(RoleName=name)["Role"]["RoleId"]
    old = session(assumer, role_arn, "old")
    assert old.client("sts").get_caller_identity()["UserId"] == f"{old_id}:old"  # works, and is cached

    # The administrator retires the role (its session is still within its lifetime) ...
    iam.delete_role(RoleName=name)
    # ... creates a new role under the same name, trusted only by the account ...
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust({"AWS": ROOT_ARN}))
    new_id = iam.get_role(RoleName=name)["Role"]["RoleId"]
    assert new_id != old_id
    # ... and grants the NEW role a secret, a key (policy and grant) and another role.
    secret = sm.create_secret(Name=unique("binding/secret"), SecretString="TOP-SECRET-VALUE")["ARN"]
    sm.put_resource_policy(
        SecretId=secret, ResourcePolicy=resource_policy(_named(role_arn, "secretsmanager:GetSecretValue"))
    )
    key = kms.create_key(Policy=_key_policy(_named(role_arn, "kms:Decrypt")))["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key, Plaintext=b"for the new role")["CiphertextBlob"]
    granted = kms.create_key()["KeyMetadata"]["KeyId"]
    granted_blob = kms.encrypt(KeyId=granted, Plaintext=b"by grant")["CiphertextBlob"]
    kms.create_grant(KeyId=granted, GranteePrincipal=role_arn, Operations=["Decrypt"])
    target = iam.create_role(
        RoleName=unique("binding-target"), AssumeRolePolicyDocument=trust({"AWS": role_arn})
    )["Role"]["Arn"]

    # The old session reaches none of it: it no longer authenticates at all.
    assert _what_it_reaches(old, secret, blob, granted_blob, target) == REFUSED
    assert refused(old.client("sts").get_caller_identity) == ("InvalidClientTokenId", INVALID_TOKEN)
    assert refused(old.client("secretsmanager").get_secret_value, SecretId=secret) == (
        "UnrecognizedClientException",
        INVALID_TOKEN,
    )

    # A session of the new role gets every one of those grants: they are real, and only the old
    # session is shut out.
    new = session(new_user(server, iam, allow("sts:AssumeRole")), role_arn, "new")
    assert set(_what_it_reaches(new, secret, blob, granted_blob, target).values()) == {"ok"}
    assert new.client("sts").get_caller_identity()["UserId"] == f"{new_id}:new"
    # ... even when the assumer is the same user who held the old session.
    assert session(assumer, role_arn, "again").client("sts").get_caller_identity()["UserId"] == (
        f"{new_id}:again"
    )


def test_a_session_of_a_role_that_stays_deleted_is_refused(server: KhoaServer, iam: Any) -> None:
    """No new role at all: the session of a deleted role signs nothing, even calls no policy governs."""
    assumer = new_user(server, iam, allow("sts:AssumeRole"))
    name = unique("gone-role")
    role_arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust({"AWS": assumer.arn}))["Role"][
        "Arn"
    ]
    iam.put_role_policy(
        RoleName=name,
        PolicyName="read",
        PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [allow("secretsmanager:ListSecrets")]}
        ),
    )
    caller = session(assumer, role_arn)
    assert code_of(caller.client("secretsmanager").list_secrets) == "ok"
    iam.delete_role_policy(RoleName=name, PolicyName="read")
    assert code_of(caller.client("secretsmanager").list_secrets) == "AccessDeniedException"
    assert code_of(caller.client("sts").get_caller_identity) == "ok"  # still the role's session

    iam.delete_role(RoleName=name)
    assert refused(caller.client("sts").get_caller_identity) == ("InvalidClientTokenId", INVALID_TOKEN)
    assert code_of(caller.client("secretsmanager").list_secrets) == "UnrecognizedClientException"
    assert code_of(caller.client("kms").list_keys) == "UnrecognizedClientException"
    assert code_of(caller.client("iam").get_role, RoleName=name) == "InvalidClientTokenId"


def test_changing_a_role_keeps_its_sessions(server: KhoaServer, iam: Any) -> None:
    """Only the role's end ends its sessions: its trust policy, description, tags and policies may
    change (each an IAM write that empties every credential cache) and the session goes on."""
    assumer = new_user(server, iam, allow("sts:AssumeRole"))
    name = unique("kept-role")
    role_arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust({"AWS": assumer.arn}))["Role"][
        "Arn"
    ]
    caller = session(assumer, role_arn)
    iam.update_assume_role_policy(RoleName=name, PolicyDocument=trust({"AWS": ROOT_ARN}))
    iam.update_role(RoleName=name, Description="changed")
    iam.tag_role(RoleName=name, Tags=[{"Key": "team", "Value": "blue"}])
    iam.put_role_policy(
        RoleName=name,
        PolicyName="read",
        PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [allow("secretsmanager:ListSecrets")]}
        ),
    )
    assert caller.client("sts").get_caller_identity()["Arn"] == caller.arn
    assert code_of(caller.client("secretsmanager").list_secrets) == "ok"


# --- the very next request, on every worker ----------------------------------------------------------

LONG_CACHES = {
    "KHOA_CREDENTIAL_CACHE_SECONDS": "60",
    "KHOA_POLICY_CACHE_SECONDS": "60",
    "KHOA_METADATA_CACHE_SECONDS": "60",
}
MIN_CALLS_PER_WORKER = 3


@dataclass
class Node:
    server: KhoaServer
    workers: int


@pytest.fixture(params=[1, 2], ids=["one-worker", "two-workers"])
def node(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Node]:
    """A private server whose caches outlive the test (60 s): only the revocation epoch can explain a
    prompt refusal."""
    workers: int = request.param
    args = ["--workers", str(workers)] if workers > 1 else []
    instance = KhoaServer(tmp_path / "data", extra_env=LONG_CACHES, extra_args=args).start()
    yield Node(instance, workers)
    instance.stop()


def _by_worker(node: Node, caller: Caller, secret: str) -> dict[str, frozenset[str]]:
    """DescribeSecret signed by the session, over new connections, until every worker process answered
    a few times; each worker's outcomes ("ok" or the error code)."""
    seen: dict[str, list[str]] = {}
    for _ in range(400):
        reply = call(
            node.server.endpoint,
            "secretsmanager.DescribeSecret",
            {"SecretId": secret},
            service="secretsmanager",
            access_key=caller.access_key_id,
            secret_key=caller.secret_access_key,
            token=caller.session_token,
        )
        outcome = "ok" if reply.status == 200 else reply.code
        seen.setdefault(reply.headers["x-khoa-test-worker"], []).append(str(outcome))
        if len(seen) == node.workers and all(len(v) >= MIN_CALLS_PER_WORKER for v in seen.values()):
            return {worker: frozenset(outcomes) for worker, outcomes in seen.items()}
    raise AssertionError(f"not every worker answered: {seen}")


def test_a_deleted_roles_session_is_refused_on_the_very_next_request(node: Node) -> None:
    """Every worker has the session's credential cached; DeleteRole is an IAM write, so the revocation
    epoch drops it and the next request, whichever worker takes it, is refused. Re-creating the role
    under the same name does not bring the session back."""
    server = node.server
    iam, sm = server.client("iam"), server.client("secretsmanager")
    assumer = new_user(server, iam, allow("sts:AssumeRole"))
    name = f"cached-{uuid.uuid4().hex[:8]}"
    role_arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust({"AWS": assumer.arn}))["Role"][
        "Arn"
    ]
    secret = sm.create_secret(Name=f"cached/{uuid.uuid4().hex[:8]}", SecretString="v")["ARN"]
    # The role holds the secret through its resource policy only (no role policy to delete first).
    sm.put_resource_policy(
        SecretId=secret, ResourcePolicy=resource_policy(_named(role_arn, "secretsmanager:DescribeSecret"))
    )
    caller = session(assumer, role_arn)
    assert set(_by_worker(node, caller, secret).values()) == {frozenset({"ok"})}

    iam.delete_role(RoleName=name)
    assert set(_by_worker(node, caller, secret).values()) == {frozenset({"UnrecognizedClientException"})}

    iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust({"AWS": assumer.arn}))
    sm.put_resource_policy(
        SecretId=secret, ResourcePolicy=resource_policy(_named(role_arn, "secretsmanager:DescribeSecret"))
    )
    assert set(_by_worker(node, caller, secret).values()) == {frozenset({"UnrecognizedClientException"})}
    # while a session of the new role is served everywhere
    assert set(_by_worker(node, session(assumer, role_arn, "new"), secret).values()) == {frozenset({"ok"})}
