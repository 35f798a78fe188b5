"""Organizations' ARNs, response shapes, the caller's organization, and paging (shared by the topics)."""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row

from khoa.protocol.context import RequestContext
from khoa.services.organizations import errors
from khoa.services.organizations.backend import OrganizationsBackend
from khoa.services.organizations.store import SCP

ROOT_ID = re.compile(r"^r-[0-9a-z]{4,32}$")
ACCOUNT_ID = re.compile(r"^\d{12}$")
POLICY_ID = re.compile(r"^p-[0-9a-zA-Z_]{8,128}$")


def org_arn(org: Row[Any]) -> str:
    return f"arn:aws:organizations::{org.management_account_id}:organization/{org.org_id}"


def root_arn(org: Row[Any]) -> str:
    return f"arn:aws:organizations::{org.management_account_id}:root/{org.org_id}/{org.root_id}"


def account_arn(org: Row[Any], account_id: str) -> str:
    return f"arn:aws:organizations::{org.management_account_id}:account/{org.org_id}/{account_id}"


def policy_arn(org: Row[Any], policy: Row[Any]) -> str:
    kind = policy.policy_type.lower()
    if policy.aws_managed:
        return f"arn:aws:organizations::aws:policy/{kind}/{policy.policy_id}"
    return f"arn:aws:organizations::{org.management_account_id}:policy/{org.org_id}/{kind}/{policy.policy_id}"


def email(account_id: str) -> str:
    return f"{account_id}@accounts.khoa.invalid"  # Khoa's accounts have no e-mail address


def organization(org: Row[Any]) -> dict[str, Any]:
    return {
        "Id": org.org_id,
        "Arn": org_arn(org),
        "FeatureSet": org.feature_set,
        "MasterAccountArn": account_arn(org, org.management_account_id),
        "MasterAccountId": org.management_account_id,
        "MasterAccountEmail": email(org.management_account_id),
        "AvailablePolicyTypes": [],  # deprecated by AWS: see ListRoots
    }


def root(org: Row[Any]) -> dict[str, Any]:
    types = [{"Type": SCP, "Status": "ENABLED"}] if org.scp_enabled else []
    return {"Id": org.root_id, "Arn": root_arn(org), "Name": "Root", "PolicyTypes": types}


def account(org: Row[Any], row: Row[Any]) -> dict[str, Any]:
    return {
        "Id": row.account_id,
        "Arn": account_arn(org, row.account_id),
        "Email": email(row.account_id),
        "Name": row.name or row.account_id,
        "Status": "ACTIVE",
        "State": "ACTIVE",
        "JoinedMethod": row.joined_method,
        "JoinedTimestamp": datetime.fromtimestamp(row.joined_at, UTC),
    }


def policy_summary(org: Row[Any], policy: Row[Any]) -> dict[str, Any]:
    return {
        "Id": policy.policy_id,
        "Arn": policy_arn(org, policy),
        "Name": policy.name,
        "Description": policy.description,
        "Type": policy.policy_type,
        "AwsManaged": bool(policy.aws_managed),
    }


def membership(backend: OrganizationsBackend, ctx: RequestContext, *, management: bool) -> Row[Any]:
    """The caller's organization; with ``management``, only its management account may go on."""
    org = backend.store.organization_of(ctx.account_id)
    if org is None:
        raise errors.not_in_use()
    if management and org.management_account_id != ctx.account_id:
        raise errors.access_denied()
    return org


def page(items: list[dict[str, Any]], params: dict[str, Any], key: str) -> dict[str, Any]:
    """One page of ``items`` (small lists: an organization's accounts and policies) under ``key``."""
    start = 0
    token = params.get("NextToken")
    if token:
        try:
            start = json.loads(base64.urlsafe_b64decode(token.encode()))
        except (ValueError, TypeError, binascii.Error):
            raise errors.invalid_next_token() from None
        if not isinstance(start, int) or not 0 <= start <= len(items):
            raise errors.invalid_next_token()
    limit = params.get("MaxResults") or 20
    result: dict[str, Any] = {key: items[start : start + limit]}
    if start + limit < len(items):
        result["NextToken"] = base64.urlsafe_b64encode(json.dumps(start + limit).encode()).decode()
    return result
