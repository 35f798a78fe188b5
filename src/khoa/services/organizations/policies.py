"""Service control policies: CreatePolicy, DescribePolicy, UpdatePolicy, DeletePolicy, AttachPolicy,
DetachPolicy, ListPolicies, ListPoliciesForTarget, ListTargetsForPolicy.

Content is checked with the parser evaluation uses (identity-policy grammar: no Principal), so a
policy that is stored can be evaluated; AWS's 5,120-character limit for an SCP applies. Targets are the
root and the organization's accounts (Khoa has no organizational units).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row

from khoa.access.policy import Policy, PolicyError
from khoa.protocol.context import RequestContext
from khoa.services.organizations import errors, views
from khoa.services.organizations.backend import OrganizationsBackend
from khoa.services.organizations.store import SCP

MAX_CONTENT = 5120


def _check_type(policy_type: str) -> None:
    if policy_type != SCP:
        raise errors.invalid_input("Khoa serves the SERVICE_CONTROL_POLICY policy type only.")


def _check_content(content: str) -> None:
    if len(content) > MAX_CONTENT:
        raise errors.constraint_violation(
            "You attempted to create a policy that is larger than the maximum size allowed for its type."
        )
    try:
        Policy.parse(content, "identity")
    except PolicyError as exc:
        raise errors.malformed_policy(str(exc)) from None


def _policy(backend: OrganizationsBackend, org: Row[Any], policy_id: str) -> Row[Any]:
    if not views.POLICY_ID.match(policy_id):
        raise errors.invalid_input("You specified an invalid value for PolicyId.")
    policy = backend.store.policy(org.org_id, policy_id)
    if policy is None:
        raise errors.policy_not_found()
    return policy


def _target(backend: OrganizationsBackend, org: Row[Any], target_id: str) -> dict[str, Any]:
    """The target summary of ``target_id`` (the root or a member account), or TargetNotFound."""
    if target_id == org.root_id:
        return {"TargetId": target_id, "Arn": views.root_arn(org), "Name": "Root", "Type": "ROOT"}
    if views.ACCOUNT_ID.match(target_id):
        for row in backend.store.accounts(org.org_id):
            if row.account_id == target_id:
                name = row.name or target_id
                return {
                    "TargetId": target_id,
                    "Arn": views.account_arn(org, target_id),
                    "Name": name,
                    "Type": "ACCOUNT",
                }
        raise errors.target_not_found()
    if views.ROOT_ID.match(target_id) or target_id.startswith("ou-"):
        raise errors.target_not_found()
    raise errors.invalid_input("You specified an invalid value for TargetId.")


def _described(org: Row[Any], policy: Row[Any]) -> dict[str, Any]:
    return {"Policy": {"PolicySummary": views.policy_summary(org, policy), "Content": policy.content}}


def create_policy(
    backend: OrganizationsBackend, ctx: RequestContext, params: dict[str, Any]
) -> dict[str, Any]:
    org = views.membership(backend, ctx, management=True)
    _check_type(params["Type"])
    _check_content(params["Content"])
    if backend.store.name_taken(org.org_id, params["Name"]):
        raise errors.duplicate_policy()
    values = {
        "name": params["Name"],
        "description": params["Description"],
        "policy_type": params["Type"],
        "content": params["Content"],
    }
    policy_id = backend.store.create_policy(org.org_id, values, ctx.now.timestamp())
    return _described(org, _policy(backend, org, policy_id))


def describe_policy(
    backend: OrganizationsBackend, ctx: RequestContext, params: dict[str, Any]
) -> dict[str, Any]:
    org = views.membership(backend, ctx, management=True)
    return _described(org, _policy(backend, org, params["PolicyId"]))


def update_policy(
    backend: OrganizationsBackend, ctx: RequestContext, params: dict[str, Any]
) -> dict[str, Any]:
    org = views.membership(backend, ctx, management=True)
    policy = _policy(backend, org, params["PolicyId"])
    if policy.aws_managed:
        raise errors.access_denied()
    values: dict[str, Any] = {}
    if "Content" in params:
        _check_content(params["Content"])
        values["content"] = params["Content"]
    if "Name" in params:
        if backend.store.name_taken(org.org_id, params["Name"], other_than=policy.policy_id):
            raise errors.duplicate_policy()
        values["name"] = params["Name"]
    if "Description" in params:
        values["description"] = params["Description"]
    if values:
        backend.store.update_policy(org.org_id, policy.policy_id, values)
    return _described(org, _policy(backend, org, policy.policy_id))


def delete_policy(
    backend: OrganizationsBackend, ctx: RequestContext, params: dict[str, Any]
) -> dict[str, Any]:
    org = views.membership(backend, ctx, management=True)
    policy = _policy(backend, org, params["PolicyId"])
    if policy.aws_managed:
        raise errors.access_denied()
    if not backend.store.delete_policy(org.org_id, policy.policy_id):
        raise errors.policy_in_use()
    return {}


def attach_policy(
    backend: OrganizationsBackend, ctx: RequestContext, params: dict[str, Any]
) -> dict[str, Any]:
    org = views.membership(backend, ctx, management=True)
    policy = _policy(backend, org, params["PolicyId"])
    _target(backend, org, params["TargetId"])
    if not org.scp_enabled:
        raise errors.policy_type_not_enabled()
    if not backend.store.attach(org.org_id, policy.policy_id, params["TargetId"]):
        raise errors.duplicate_attachment()
    return {}


def detach_policy(
    backend: OrganizationsBackend, ctx: RequestContext, params: dict[str, Any]
) -> dict[str, Any]:
    org = views.membership(backend, ctx, management=True)
    policy = _policy(backend, org, params["PolicyId"])
    _target(backend, org, params["TargetId"])
    outcome = backend.store.detach(org.org_id, policy.policy_id, params["TargetId"], policy.policy_type)
    if outcome == "not-attached":
        raise errors.policy_not_attached()
    if outcome == "last":
        raise errors.constraint_violation(
            "You attempted to detach a policy that would leave the target without any policies of this type."
        )
    return {}


def list_policies(
    backend: OrganizationsBackend, ctx: RequestContext, params: dict[str, Any]
) -> dict[str, Any]:
    org = views.membership(backend, ctx, management=True)
    rows = backend.store.policies(org.org_id, params["Filter"])
    return views.page([views.policy_summary(org, row) for row in rows], params, "Policies")


def list_policies_for_target(
    backend: OrganizationsBackend, ctx: RequestContext, params: dict[str, Any]
) -> dict[str, Any]:
    org = views.membership(backend, ctx, management=True)
    _target(backend, org, params["TargetId"])
    rows = backend.store.policies_for_target(org.org_id, params["TargetId"], params["Filter"])
    return views.page([views.policy_summary(org, row) for row in rows], params, "Policies")


def list_targets_for_policy(
    backend: OrganizationsBackend, ctx: RequestContext, params: dict[str, Any]
) -> dict[str, Any]:
    org = views.membership(backend, ctx, management=True)
    policy = _policy(backend, org, params["PolicyId"])
    targets = [
        _target(backend, org, target) for target in backend.store.targets(org.org_id, policy.policy_id)
    ]
    return views.page(targets, params, "Targets")


OPERATIONS = {
    "CreatePolicy": create_policy,
    "DescribePolicy": describe_policy,
    "UpdatePolicy": update_policy,
    "DeletePolicy": delete_policy,
    "AttachPolicy": attach_policy,
    "DetachPolicy": detach_policy,
    "ListPolicies": list_policies,
    "ListPoliciesForTarget": list_policies_for_target,
    "ListTargetsForPolicy": list_targets_for_policy,
}
