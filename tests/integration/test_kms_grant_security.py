"""Grants that cannot be escalated, retired by the wrong principal, or paged into a 500 (issue 11,
findings 1, 3 and 10), through boto3 against a real server.

* A principal whose CreateGrant comes from a grant can create only grants with the same or fewer
  operations and constraints at least as strict ("Granting CreateGrant permission", AWS KMS
  developer guide); a principal allowed CreateGrant by policy is not bound that way.
* RetireGrant: the grant's retiring principal, its grantee when the grant lists RetireGrant, or a
  principal allowed kms:RetireGrant on the key in the key's account; an explicit deny always wins.
* List markers Khoa did not issue are InvalidMarkerException (HTTP 400), never a 500.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.support.errors import code_of, error_response, refused
from tests.support.iam import allow, deny, document
from tests.support.identity import ROOT_ARN, Caller, create_account, implicit, new_user, session
from tests.support.names import unique
from tests.support.server import ACCOUNT_ID, KhoaServer


def key_policy(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


# The account may use the key and create and list its grants, but kms:RetireGrant and kms:RevokeGrant
# are not delegated to IAM policies.
NO_RETIRE_DELEGATION = key_policy(
    {
        "Effect": "Allow",
        "Principal": {"AWS": ROOT_ARN},
        "Action": [
            "kms:CreateGrant",
            "kms:ListGrants",
            "kms:DescribeKey",
            "kms:Encrypt",
            "kms:Decrypt",
            "kms:GetKeyPolicy",
            "kms:PutKeyPolicy",
            "kms:ScheduleKeyDeletion",
        ],
        "Resource": "*",
    }
)


def grants_of(kms: Any, key: str) -> set[str]:
    return {g["GrantId"] for g in kms.list_grants(KeyId=key)["Grants"]}


def status_of(call: Any, **kwargs: Any) -> tuple[str, int]:
    response = error_response(call, **kwargs)
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


# -- finding 1: a grant that allows CreateGrant ------------------------------------------------------


def test_create_grant_from_a_grant_cannot_add_decrypt(server: KhoaServer, iam: Any, kms: Any) -> None:
    """The finding exactly: grant [CreateGrant, DescribeKey] → CreateGrant Decrypt for oneself."""
    key = kms.create_key()["KeyMetadata"]["Arn"]
    blob = kms.encrypt(KeyId=key, Plaintext=b"secret")["CiphertextBlob"]
    attacker = new_user(server, iam)
    client = attacker.client("kms")
    kms.create_grant(KeyId=key, GranteePrincipal=attacker.arn, Operations=["CreateGrant", "DescribeKey"])
    assert client.describe_key(KeyId=key)["KeyMetadata"]["Arn"] == key
    before = grants_of(kms, key)

    for operations in (["Decrypt"], ["DescribeKey", "Decrypt"], ["CreateGrant", "Encrypt"]):
        assert refused(
            client.create_grant, KeyId=key, GranteePrincipal=attacker.arn, Operations=operations
        ) == ("AccessDeniedException", implicit(attacker.arn, "kms:CreateGrant", key))
    # DryRun answers the same: it says whether the request would be allowed.
    assert code_of(
        client.create_grant, KeyId=key, GranteePrincipal=attacker.arn, Operations=["Decrypt"], DryRun=True
    ) == ("AccessDeniedException")
    assert grants_of(kms, key) == before
    assert code_of(client.decrypt, CiphertextBlob=blob) == "AccessDeniedException"

    # Within the parent is fine, including passing CreateGrant on.
    other = new_user(server, iam)
    kms_other = other.client("kms")
    kms_other_grant = client.create_grant(
        KeyId=key, GranteePrincipal=other.arn, Operations=["CreateGrant", "DescribeKey"]
    )
    assert kms_other.describe_key(KeyId=key)["KeyMetadata"]["Arn"] == key
    # ... and the grandchild is bound by the child in turn.
    assert code_of(kms_other.create_grant, KeyId=key, GranteePrincipal=other.arn, Operations=["Decrypt"]) == (
        "AccessDeniedException"
    )
    assert kms_other_grant["GrantId"] in grants_of(kms, key)


def test_a_name_retry_does_not_hand_out_a_wider_grant(server: KhoaServer, iam: Any, kms: Any) -> None:
    key = kms.create_key()["KeyMetadata"]["Arn"]
    attacker = new_user(server, iam)
    wide = {"KeyId": key, "GranteePrincipal": attacker.arn, "Operations": ["Decrypt"], "Name": "wide"}
    existing = kms.create_grant(**wide)
    kms.create_grant(KeyId=key, GranteePrincipal=attacker.arn, Operations=["CreateGrant"])
    # The same request as the existing named grant: refused before the retry would return it.
    assert code_of(attacker.client("kms").create_grant, **wide) == "AccessDeniedException"
    assert existing["GrantId"] in grants_of(kms, key)


def test_constraints_of_a_child_are_at_least_as_strict(server: KhoaServer, iam: Any, kms: Any) -> None:
    key = kms.create_key()["KeyMetadata"]["Arn"]
    parent_user = new_user(server, iam)
    child_user = new_user(server, iam)
    client = parent_user.client("kms")
    kms.create_grant(
        KeyId=key,
        GranteePrincipal=parent_user.arn,
        Operations=["CreateGrant", "Decrypt", "Encrypt"],
        Constraints={"EncryptionContextSubset": {"app": "billing"}},
    )

    def child(**constraints: Any) -> str:
        extra = {"Constraints": constraints} if constraints else {}
        return code_of(
            client.create_grant, KeyId=key, GranteePrincipal=child_user.arn, Operations=["Decrypt"], **extra
        )

    assert child() == "AccessDeniedException"  # drops the constraint
    assert child(EncryptionContextSubset={"app": "payroll"}) == "AccessDeniedException"
    assert child(EncryptionContextSubset={"other": "x"}) == "AccessDeniedException"
    assert child(EncryptionContextSubset={"app": "billing", "team": "a"}) == "ok"  # adds a pair
    assert child(EncryptionContextEquals={"app": "billing"}) == "ok"  # subset → equals
    assert child(EncryptionContextSubset={"APP": "billing"}) == "ok"  # keys are case-insensitive
    assert child(EncryptionContextSubset={"app": "BILLING"}) == "AccessDeniedException"  # values are not

    # The children admit app=billing (with or without more pairs), never what the parent does not.
    billing = kms.encrypt(KeyId=key, Plaintext=b"b", EncryptionContext={"app": "billing"})["CiphertextBlob"]
    payroll = kms.encrypt(KeyId=key, Plaintext=b"p", EncryptionContext={"app": "payroll"})["CiphertextBlob"]
    child_kms = child_user.client("kms")
    assert (
        child_kms.decrypt(CiphertextBlob=billing, EncryptionContext={"app": "billing"})["Plaintext"] == b"b"
    )
    assert code_of(child_kms.decrypt, CiphertextBlob=payroll, EncryptionContext={"app": "payroll"}) == (
        "AccessDeniedException"
    )
    assert code_of(child_kms.decrypt, CiphertextBlob=billing) == "AccessDeniedException"

    # An Equals parent admits only Equals children with the very same pairs.
    equals_user = new_user(server, iam)
    kms.create_grant(
        KeyId=key,
        GranteePrincipal=equals_user.arn,
        Operations=["CreateGrant", "Decrypt"],
        Constraints={"EncryptionContextEquals": {"app": "billing"}},
    )
    equals_client = equals_user.client("kms")
    for constraints, expected in [
        ({"EncryptionContextSubset": {"app": "billing"}}, "AccessDeniedException"),
        ({"EncryptionContextEquals": {"app": "billing", "x": "y"}}, "AccessDeniedException"),
        ({"EncryptionContextEquals": {"app": "billing"}}, "ok"),
    ]:
        assert (
            code_of(
                equals_client.create_grant,
                KeyId=key,
                GranteePrincipal=child_user.arn,
                Operations=["Decrypt"],
                Constraints=constraints,
            )
            == expected
        ), constraints


def test_grants_that_cover_operations_together(server: KhoaServer, iam: Any, kms: Any) -> None:
    key = kms.create_key()["KeyMetadata"]["Arn"]
    user = new_user(server, iam)
    client = user.client("kms")
    kms.create_grant(KeyId=key, GranteePrincipal=user.arn, Operations=["CreateGrant", "Encrypt"])
    only_a = {"EncryptionContextEquals": {"tenant": "a"}}
    kms.create_grant(
        KeyId=key, GranteePrincipal=user.arn, Operations=["CreateGrant", "Decrypt"], Constraints=only_a
    )
    # Decrypt comes only with the tenant=a constraint: a child may not carry it without.
    assert (
        code_of(client.create_grant, KeyId=key, GranteePrincipal=user.arn, Operations=["Encrypt", "Decrypt"])
        == "AccessDeniedException"
    )
    created = client.create_grant(
        KeyId=key, GranteePrincipal=user.arn, Operations=["Encrypt", "Decrypt"], Constraints=only_a
    )
    assert created["GrantId"] in grants_of(kms, key)


def test_create_grant_allowed_by_policy_is_not_bound_by_grants(
    server: KhoaServer, iam: Any, kms: Any
) -> None:
    key = kms.create_key()["KeyMetadata"]["Arn"]
    admin = new_user(server, iam, allow("kms:CreateGrant", key))
    grantee = new_user(server, iam)
    admin.client("kms").create_grant(
        KeyId=key, GranteePrincipal=grantee.arn, Operations=["Decrypt", "Encrypt"]
    )
    blob = grantee.client("kms").encrypt(KeyId=key, Plaintext=b"x")["CiphertextBlob"]
    assert grantee.client("kms").decrypt(CiphertextBlob=blob)["Plaintext"] == b"x"


def test_a_constraint_does_not_restrict_describe_key(server: KhoaServer, iam: Any, kms: Any) -> None:
    """AWS: grants with constraints may list DescribeKey and RetireGrant; the constraint does not
    apply to them (it applies to operations that take an encryption context)."""
    key = kms.create_key()["KeyMetadata"]["Arn"]
    user = new_user(server, iam)
    grant = kms.create_grant(
        KeyId=key,
        GranteePrincipal=user.arn,
        Operations=["DescribeKey", "Encrypt", "RetireGrant"],
        Constraints={"EncryptionContextEquals": {"app": "x"}},
    )
    client = user.client("kms")
    assert client.describe_key(KeyId=key)["KeyMetadata"]["Arn"] == key
    assert code_of(client.encrypt, KeyId=key, Plaintext=b"x") == "AccessDeniedException"
    client.encrypt(KeyId=key, Plaintext=b"x", EncryptionContext={"app": "x"})
    client.retire_grant(KeyId=key, GrantId=grant["GrantId"])
    assert grants_of(kms, key) == set()


def test_a_grant_to_a_role_with_a_path_covers_its_sessions(server: KhoaServer, iam: Any, kms: Any) -> None:
    key = kms.create_key()["KeyMetadata"]["Arn"]
    role_arn = iam.create_role(
        RoleName=unique("pathrole"),
        Path="/team/",
        AssumeRolePolicyDocument=document(
            {"Effect": "Allow", "Principal": {"AWS": ROOT_ARN}, "Action": "sts:AssumeRole"}
        ),
    )["Role"]["Arn"]
    assert ":role/team/" in role_arn
    caller = new_user(server, iam, allow("sts:AssumeRole", role_arn))
    kms.create_grant(KeyId=key, GranteePrincipal=role_arn, Operations=["Encrypt", "CreateGrant"])
    client = session(caller, role_arn, "pathed").client("kms")
    client.encrypt(KeyId=key, Plaintext=b"x")
    assert code_of(client.create_grant, KeyId=key, GranteePrincipal=role_arn, Operations=["Decrypt"]) == (
        "AccessDeniedException"
    )
    client.create_grant(KeyId=key, GranteePrincipal=caller.arn, Operations=["Encrypt"])


OPERATIONS = ["Encrypt", "Decrypt", "GenerateDataKey", "ReEncryptFrom", "DescribeKey", "RetireGrant"]
CONTEXTS = st.dictionaries(st.sampled_from(["app", "App", "team"]), st.sampled_from(["x", "y"]), max_size=2)


@st.composite
def wire_constraints(draw: st.DrawFn) -> dict[str, Any] | None:
    kind = draw(st.sampled_from([None, "EncryptionContextSubset", "EncryptionContextEquals"]))
    return {kind: draw(CONTEXTS)} if kind else None


def _admitted_contexts(constraints: dict[str, Any] | None) -> list[dict[str, str]]:
    universe = [{}, *({k: v} for k in ("app", "team", "z") for v in ("x", "y", "w"))]
    universe += [{"app": a, "team": t} for a in ("x", "y") for t in ("x", "y")]
    universe += [{"app": a, "team": t, "z": "w"} for a in ("x", "y") for t in ("x", "y")]

    def admits(context: dict[str, str]) -> bool:
        if not constraints:
            return True
        [(kind, pairs)] = constraints.items()
        lowered = {(k.lower(), v) for k, v in pairs.items()}
        if kind == "EncryptionContextSubset":
            return lowered <= set(context.items())
        return lowered == set(context.items())

    return [c for c in universe if admits(c)]


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    parent_ops=st.sets(st.sampled_from(OPERATIONS), max_size=4),
    parent_constraints=wire_constraints(),
    child_ops=st.sets(st.sampled_from([*OPERATIONS, "CreateGrant"]), min_size=1, max_size=3),
    child_constraints=wire_constraints(),
)
def test_property_a_child_grant_is_never_wider_than_its_parent_on_the_wire(
    server: KhoaServer,
    kms: Any,
    grant_users: tuple[Caller, Caller],
    parent_ops: set[str],
    parent_constraints: dict[str, Any] | None,
    child_ops: set[str],
    child_constraints: dict[str, Any] | None,
) -> None:
    parent_user, child_user = grant_users
    key = kms.create_key()["KeyMetadata"]["Arn"]
    extra = {"Constraints": parent_constraints} if parent_constraints else {}
    kms.create_grant(
        KeyId=key, GranteePrincipal=parent_user.arn, Operations=sorted(parent_ops | {"CreateGrant"}), **extra
    )
    child_extra = {"Constraints": child_constraints} if child_constraints else {}
    outcome = code_of(
        parent_user.client("kms").create_grant,
        KeyId=key,
        GranteePrincipal=child_user.arn,
        Operations=sorted(child_ops),
        **child_extra,
    )
    parent_admits = _admitted_contexts(parent_constraints)
    within = child_ops <= parent_ops | {"CreateGrant"} and all(
        c in parent_admits for c in _admitted_contexts(child_constraints)
    )
    event(f"child {'within' if within else 'wider than'} its parent")
    assert outcome == ("ok" if within else "AccessDeniedException"), (outcome, within)
    if outcome == "ok":
        # What the child can now do with Encrypt, the parent could do already.
        client = child_user.client("kms")
        for context in _admitted_contexts(None)[:6]:
            if code_of(client.encrypt, KeyId=key, Plaintext=b"p", EncryptionContext=context) == "ok":
                assert "Encrypt" in parent_ops and context in parent_admits
    kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=7)


@pytest.fixture(scope="module")
def grant_users(server: KhoaServer) -> tuple[Caller, Caller]:
    iam = server.client("iam")
    return new_user(server, iam), new_user(server, iam)


# -- finding 3: RetireGrant, RevokeGrant, ListRetirableGrants ----------------------------------------


@pytest.fixture
def guarded_key(kms: Any) -> str:
    """A key whose policy does not delegate kms:RetireGrant to the account's IAM policies."""
    return str(kms.create_key(Policy=NO_RETIRE_DELEGATION)["KeyMetadata"]["Arn"])


def test_retire_grant_matrix(server: KhoaServer, iam: Any, kms: Any, guarded_key: str) -> None:
    key = guarded_key
    grantee = new_user(server, iam)
    retiree = new_user(server, iam)
    # IAM allows kms:RetireGrant everywhere, but the key policy does not delegate it.
    outsider = new_user(server, iam, allow(["kms:RetireGrant", "kms:RevokeGrant"]))

    def grant(**extra: Any) -> dict[str, Any]:
        params = {"KeyId": key, "GranteePrincipal": grantee.arn, "Operations": ["Decrypt"], **extra}
        return dict(kms.create_grant(**params))

    first = grant(RetiringPrincipal=retiree.arn)
    # The unrelated principal: AccessDenied by token and by key and grant id; nothing retired.
    assert refused(outsider.client("kms").retire_grant, GrantToken=first["GrantToken"]) == (
        "AccessDeniedException",
        implicit(outsider.arn, "kms:RetireGrant", key, "resource-based policy"),
    )
    assert code_of(outsider.client("kms").retire_grant, KeyId=key, GrantId=first["GrantId"]) == (
        "AccessDeniedException"
    )
    # ... and the same answer for a grant id that does not exist (nothing learnt by guessing).
    assert (
        code_of(outsider.client("kms").retire_grant, KeyId=key, GrantId="0" * 64) == "AccessDeniedException"
    )
    # RevokeGrant is the key policy's to allow: IAM alone is not enough.
    assert code_of(outsider.client("kms").revoke_grant, KeyId=key, GrantId=first["GrantId"]) == (
        "AccessDeniedException"
    )
    # The grantee of a grant without RetireGrant may not retire it.
    assert (
        code_of(grantee.client("kms").retire_grant, GrantToken=first["GrantToken"]) == "AccessDeniedException"
    )
    assert first["GrantId"] in grants_of(kms, key)

    # The retiring principal may, with no IAM policy at all (DryRun first: nothing retired).
    assert code_of(retiree.client("kms").retire_grant, GrantToken=first["GrantToken"], DryRun=True) == (
        "DryRunOperationException"
    )
    assert first["GrantId"] in grants_of(kms, key)
    retiree.client("kms").retire_grant(GrantToken=first["GrantToken"])
    assert first["GrantId"] not in grants_of(kms, key)
    assert code_of(retiree.client("kms").retire_grant, GrantToken=first["GrantToken"]) == "NotFoundException"

    # The retiring principal by key and grant id too.
    second = grant(RetiringPrincipal=retiree.arn)
    retiree.client("kms").retire_grant(KeyId=key, GrantId=second["GrantId"])

    # The grantee, when the grant lists RetireGrant: by token and by key and grant id.
    third = grant(Operations=["Decrypt", "RetireGrant"])
    fourth = grant(Operations=["Decrypt", "RetireGrant"])
    grantee.client("kms").retire_grant(GrantToken=third["GrantToken"])
    grantee.client("kms").retire_grant(KeyId=key, GrantId=fourth["GrantId"])
    assert grants_of(kms, key) == set()


def test_an_explicit_deny_stops_even_the_retiring_principal(
    server: KhoaServer, iam: Any, kms: Any, guarded_key: str
) -> None:
    retiree = new_user(server, iam, deny("kms:RetireGrant"))
    grant = kms.create_grant(
        KeyId=guarded_key, GranteePrincipal=ROOT_ARN, RetiringPrincipal=retiree.arn, Operations=["Encrypt"]
    )
    assert (
        code_of(retiree.client("kms").retire_grant, GrantToken=grant["GrantToken"]) == "AccessDeniedException"
    )
    assert grant["GrantId"] in grants_of(kms, guarded_key)


def test_the_keys_account_retires_with_kms_retire_grant_delegated(
    server: KhoaServer, iam: Any, kms: Any
) -> None:
    """With the default key policy the account delegates to IAM: kms:RetireGrant in an IAM policy
    lets a principal of the key's account retire any grant of the key (AWS's "backup" path)."""
    key = kms.create_key()["KeyMetadata"]["Arn"]
    cleaner = new_user(server, iam, allow("kms:RetireGrant", key))
    nobody = new_user(server, iam)
    grant = kms.create_grant(KeyId=key, GranteePrincipal=nobody.arn, Operations=["Encrypt"])
    assert (
        code_of(nobody.client("kms").retire_grant, GrantToken=grant["GrantToken"]) == "AccessDeniedException"
    )
    cleaner.client("kms").retire_grant(GrantToken=grant["GrantToken"])
    # The root of the key's account, by key and grant id.
    again = kms.create_grant(KeyId=key, GranteePrincipal=nobody.arn, Operations=["Encrypt"])
    kms.retire_grant(KeyId=key, GrantId=again["GrantId"])
    assert grants_of(kms, key) == set()


def test_a_role_named_as_retiring_principal_retires_through_its_sessions(
    server: KhoaServer, iam: Any, kms: Any, guarded_key: str
) -> None:
    role_arn = iam.create_role(
        RoleName=unique("retirer"),
        AssumeRolePolicyDocument=document(
            {"Effect": "Allow", "Principal": {"AWS": ROOT_ARN}, "Action": "sts:AssumeRole"}
        ),
    )["Role"]["Arn"]
    caller = new_user(server, iam, allow("sts:AssumeRole", role_arn))
    grant = kms.create_grant(
        KeyId=guarded_key, GranteePrincipal=ROOT_ARN, RetiringPrincipal=role_arn, Operations=["Encrypt"]
    )
    session(caller, role_arn).client("kms").retire_grant(GrantToken=grant["GrantToken"])
    assert grants_of(kms, guarded_key) == set()


def test_retire_grant_tokens_that_name_nothing(server: KhoaServer, iam: Any, kms: Any) -> None:
    nobody = new_user(server, iam)
    forged = base64.urlsafe_b64encode(b"khoa-grant-v1:" + b"ab" * 32 + b":00").decode().rstrip("=")
    assert status_of(nobody.client("kms").retire_grant, GrantToken=forged) == ("NotFoundException", 400)
    assert status_of(nobody.client("kms").retire_grant, GrantToken="garbage") == (
        "InvalidGrantTokenException",
        400,
    )


def test_cross_account_retiring_and_listing(server: KhoaServer, iam: Any, kms: Any, guarded_key: str) -> None:
    other = create_account(server)
    other_root = f"arn:aws:iam::{other.account_id}:root"
    mine = kms.create_grant(
        KeyId=guarded_key, GranteePrincipal=ROOT_ARN, RetiringPrincipal=other_root, Operations=["Encrypt"]
    )
    unrelated = kms.create_grant(KeyId=guarded_key, GranteePrincipal=ROOT_ARN, Operations=["Encrypt"])
    other_kms = other.client("kms")

    # The other account lists the grants naming its own principal, with the key's real ARN.
    listed = other_kms.list_retirable_grants(RetiringPrincipal=other_root)["Grants"]
    assert [(g["GrantId"], g["KeyId"]) for g in listed] == [(mine["GrantId"], guarded_key)]
    # It may not list for a principal of another account (this one), nor see this account's grants.
    assert code_of(other_kms.list_retirable_grants, RetiringPrincipal=ROOT_ARN) == "AccessDeniedException"

    # Another account's grant it has no part in: as if it did not exist, by token.
    assert code_of(other_kms.retire_grant, GrantToken=unrelated["GrantToken"]) == "NotFoundException"
    assert code_of(other_kms.retire_grant, KeyId=guarded_key, GrantId=unrelated["GrantId"]) == (
        "AccessDeniedException"
    )
    # Its own: it retires it across accounts.
    other_kms.retire_grant(GrantToken=mine["GrantToken"])
    assert grants_of(kms, guarded_key) == {unrelated["GrantId"]}

    # A grant to another account's principal works across accounts, and its CreateGrant is bound too.
    kms.create_grant(KeyId=guarded_key, GranteePrincipal=other_root, Operations=["Encrypt", "CreateGrant"])
    other_kms.encrypt(KeyId=guarded_key, Plaintext=b"x")
    assert code_of(
        other_kms.decrypt, CiphertextBlob=kms.encrypt(KeyId=guarded_key, Plaintext=b"y")["CiphertextBlob"]
    ) == ("AccessDeniedException")
    assert code_of(
        other_kms.create_grant, KeyId=guarded_key, GranteePrincipal=other_root, Operations=["Decrypt"]
    ) == ("AccessDeniedException")
    passed_on = other_kms.create_grant(KeyId=guarded_key, GranteePrincipal=ROOT_ARN, Operations=["Encrypt"])
    [entry] = [
        g for g in kms.list_grants(KeyId=guarded_key)["Grants"] if g["GrantId"] == passed_on["GrantId"]
    ]
    assert entry["KeyId"] == guarded_key


def test_list_retirable_grants_needs_iam_permission(server: KhoaServer, iam: Any, kms: Any) -> None:
    key = kms.create_key()["KeyMetadata"]["Arn"]
    retiree = new_user(server, iam)
    grant = kms.create_grant(
        KeyId=key, GranteePrincipal=ROOT_ARN, RetiringPrincipal=retiree.arn, Operations=["Encrypt"]
    )
    nobody = new_user(server, iam)
    assert refused(nobody.client("kms").list_retirable_grants, RetiringPrincipal=retiree.arn) == (
        "AccessDeniedException",
        implicit(nobody.arn, "kms:ListRetirableGrants", retiree.arn),
    )
    lister = new_user(server, iam, allow("kms:ListRetirableGrants"))
    found = lister.client("kms").list_retirable_grants(RetiringPrincipal=retiree.arn)["Grants"]
    assert [g["GrantId"] for g in found] == [grant["GrantId"]]


# -- finding 10: markers -----------------------------------------------------------------------------


def _marker(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


OVERFLOWING = [
    _marker("khoa:99999999999999999999999999"),
    _marker(f"khoa:ListKeys:{2**63}"),
    _marker(f"khoa:ListGrants:{2**31}"),
    _marker("khoa:ListAliases:-1"),
    _marker("khoa:ListKeys:1e9"),
    _marker("khoa:ListKeys: 1"),
    "not-a-marker",
    "\u00ff" * 10,
]


@pytest.mark.parametrize("marker", OVERFLOWING, ids=range(len(OVERFLOWING)))
def test_markers_khoa_did_not_issue_are_invalid(kms: Any, marker: str) -> None:
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    retiree = f"arn:aws:iam::{ACCOUNT_ID}:role/r-{uuid.uuid4().hex[:6]}"
    for call, kwargs in [
        (kms.list_keys, {}),
        (kms.list_aliases, {}),
        (kms.list_grants, {"KeyId": key}),
        (kms.list_resource_tags, {"KeyId": key}),
        (kms.list_retirable_grants, {"RetiringPrincipal": retiree}),
        (kms.list_key_rotations, {"KeyId": key}),
    ]:
        assert status_of(call, Marker=marker, **kwargs) == ("InvalidMarkerException", 400), call


def test_a_marker_is_valid_only_for_the_listing_that_issued_it(server: KhoaServer, kms: Any) -> None:
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    for _ in range(2):
        kms.create_key()
    page = kms.list_keys(Limit=1)
    assert page["Truncated"]
    assert kms.list_keys(Limit=1, Marker=page["NextMarker"])["Keys"] != page["Keys"]
    assert status_of(kms.list_aliases, Marker=page["NextMarker"]) == ("InvalidMarkerException", 400)
    # Limits outside AWS's 1..1000 are a validation error, as in AWS.
    raw = server.client("kms", validate=False)
    for limit in (0, 1001):
        assert status_of(raw.list_keys, Limit=limit) == ("ValidationException", 400), limit
        assert status_of(raw.list_grants, KeyId=key, Limit=limit) == ("ValidationException", 400), limit
    # A number no integer member can hold fails deserialisation, as AWS's JSON protocol does.
    assert status_of(raw.list_keys, Limit=2**63) == ("SerializationException", 400)
