"""The organization itself: CreateOrganization, DescribeOrganization, ListAccounts, DescribeAccount,
ListRoots, EnablePolicyType and DisablePolicyType.

The caller's account becomes the management account. Any account may create one, as on AWS, but only
the organization of the installation's first account receives the accounts the operator makes with
``khoa account create``; Khoa serves no invitations, so another account's organization holds its
management account alone (and SCPs never apply to a management account).
Only SERVICE_CONTROL_POLICY is served. FullAWSAccess is attached to the root and to every account as
it joins (as AWS does), so enabling SCPs changes nothing until a narrower policy is attached.
"""

from __future__ import annotations

from typing import Any

from khoa.protocol.context import RequestContext
from khoa.services.organizations import errors, views
from khoa.services.organizations.backend import OrganizationsBackend
from khoa.services.organizations.store import SCP


def create_organization(
    backend: OrganizationsBackend, ctx: RequestContext, params: dict[str, Any]
) -> dict[str, Any]:
    feature_set = params.get("FeatureSet", "ALL")
    org = backend.store.create_organization(ctx.account_id, feature_set, ctx.now.timestamp())
    if org is None:
        raise errors.already_in_organization()
    return {"Organization": views.organization(org)}


def describe_organization(
    backend: OrganizationsBackend, ctx: RequestContext, params: dict[str, Any]
) -> dict[str, Any]:
    return {"Organization": views.organization(views.membership(backend, ctx, management=False))}


def list_accounts(
    backend: OrganizationsBackend, ctx: RequestContext, params: dict[str, Any]
) -> dict[str, Any]:
    org = views.membership(backend, ctx, management=True)
    accounts = [views.account(org, row) for row in backend.store.accounts(org.org_id)]
    return views.page(accounts, params, "Accounts")


def describe_account(
    backend: OrganizationsBackend, ctx: RequestContext, params: dict[str, Any]
) -> dict[str, Any]:
    org = views.membership(backend, ctx, management=True)
    for row in backend.store.accounts(org.org_id):
        if row.account_id == params["AccountId"]:
            return {"Account": views.account(org, row)}
    raise errors.account_not_found()


def list_roots(backend: OrganizationsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    org = views.membership(backend, ctx, management=True)
    return views.page([views.root(org)], params, "Roots")


def _root_of(backend: OrganizationsBackend, ctx: RequestContext, params: dict[str, Any]) -> Any:
    org = views.membership(backend, ctx, management=True)
    if not views.ROOT_ID.match(params["RootId"]):
        raise errors.invalid_input("You specified an invalid value for RootId.")
    if params["RootId"] != org.root_id:
        raise errors.root_not_found()
    if params["PolicyType"] != SCP:
        raise errors.invalid_input("Khoa serves the SERVICE_CONTROL_POLICY policy type only.")
    if org.feature_set != "ALL":
        raise errors.policy_type_not_available()
    return org


def enable_policy_type(
    backend: OrganizationsBackend, ctx: RequestContext, params: dict[str, Any]
) -> dict[str, Any]:
    org = _root_of(backend, ctx, params)
    if org.scp_enabled:
        raise errors.policy_type_already_enabled()
    backend.store.set_scp_enabled(org.org_id, True)
    return {"Root": views.root(views.membership(backend, ctx, management=True))}


def disable_policy_type(
    backend: OrganizationsBackend, ctx: RequestContext, params: dict[str, Any]
) -> dict[str, Any]:
    org = _root_of(backend, ctx, params)
    if not org.scp_enabled:
        raise errors.policy_type_not_enabled()
    backend.store.set_scp_enabled(org.org_id, False)
    return {"Root": views.root(views.membership(backend, ctx, management=True))}


OPERATIONS = {
    "CreateOrganization": create_organization,
    "DescribeOrganization": describe_organization,
    "ListAccounts": list_accounts,
    "DescribeAccount": describe_account,
    "ListRoots": list_roots,
    "EnablePolicyType": enable_policy_type,
    "DisablePolicyType": disable_policy_type,
}
