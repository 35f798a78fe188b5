"""Customer-managed policies and their versions: CreatePolicy, GetPolicy, DeletePolicy, ListPolicies,
CreatePolicyVersion, GetPolicyVersion, ListPolicyVersions, DeletePolicyVersion, SetDefaultPolicyVersion.

A policy keeps at most five versions; exactly one is the default, and only the default takes effect.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, delete, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from khoa.protocol.context import RequestContext
from khoa.services.iam import aws_managed, documents, errors, paging, tags, views
from khoa.services.iam.store import (
    MANAGED,
    TAGS,
    VERSIONS,
    invalidate,
    lookup_policy,
    new_id,
    now,
    policy_arn,
)

MAX_VERSIONS = 5
MAX_POLICIES = 1500


def _validate(document: str) -> None:
    documents.validate_identity(document)
    if documents.size(document) > documents.MANAGED_POLICY_SIZE:
        raise errors.quota("PolicySize", documents.MANAGED_POLICY_SIZE)


def _own(ctx: RequestContext, arn: str) -> Row[Any]:
    """A policy this account may change: its own, never an AWS-managed one."""
    row = lookup_policy(ctx, arn)
    if row.account_id != ctx.account_id:
        raise errors.invalid_input(f"Policy {arn} is an AWS managed policy and cannot be modified.")
    return row


def create_policy(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    name = params["PolicyName"]
    path = params.get("Path", "/")
    document = params["PolicyDocument"]
    new_tags = params.get("Tags") or []
    arn = policy_arn(ctx.account_id, path, name)
    if new_tags:
        tags.validate(new_tags)
    _validate(document)
    created = now(ctx)
    policy_id = new_id("policy")
    exists = errors.already_exists(f"A policy called {name} already exists. Duplicate names are not allowed.")
    try:
        with ctx.runtime.engine.begin() as conn:
            same_name = conn.execute(
                select(MANAGED.c.arn)
                .where(MANAGED.c.account_id == ctx.account_id)
                .where(func.lower(MANAGED.c.name) == name.lower())
            ).first()
            if same_name is not None:
                raise exists
            total = conn.execute(
                select(func.count()).select_from(MANAGED).where(MANAGED.c.account_id == ctx.account_id)
            ).scalar_one()
            if total >= MAX_POLICIES:
                raise errors.quota("PoliciesPerAccount", MAX_POLICIES)
            conn.execute(
                insert(MANAGED).values(
                    arn=arn,
                    policy_id=policy_id,
                    account_id=ctx.account_id,
                    name=name,
                    path=path,
                    description=params.get("Description"),
                    default_version="v1",
                    next_version=2,
                    created_at=created,
                    updated_at=created,
                )
            )
            conn.execute(
                insert(VERSIONS).values(
                    policy_arn=arn, version_id="v1", document=document, created_at=created
                )
            )
            tags.write(conn, policy_id, new_tags, "TagsPerPolicy")
            row = conn.execute(select(MANAGED).where(MANAGED.c.arn == arn)).first()
            assert row is not None
            result = views.policy(row, conn, ctx.account_id)
    except IntegrityError:
        raise exists from None
    return {"Policy": result}


def get_policy(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    row = lookup_policy(ctx, params["PolicyArn"])
    with ctx.runtime.engine.connect() as conn:
        return {"Policy": views.policy(row, conn, ctx.account_id)}


def delete_policy(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    row = _own(ctx, params["PolicyArn"])
    arn = row.arn
    with ctx.runtime.engine.begin() as conn:
        attached, boundaries = views.usage_counts(conn, ctx.account_id, arn)
        if attached or boundaries:
            raise errors.delete_conflict("Cannot delete a policy attached to entities.")
        versions = conn.execute(
            select(func.count()).select_from(VERSIONS).where(VERSIONS.c.policy_arn == arn)
        ).scalar_one()
        if versions > 1:
            raise errors.delete_conflict(
                "This policy has more than one version. Before you delete a policy, you must delete the "
                "policy's versions. The default version is deleted with the policy."
            )
        conn.execute(delete(VERSIONS).where(VERSIONS.c.policy_arn == arn))
        conn.execute(delete(TAGS).where(TAGS.c.owner_id == row.policy_id))
        conn.execute(delete(MANAGED).where(MANAGED.c.arn == arn))
    invalidate(ctx)
    return {}


def list_policies(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    scope = params.get("Scope", "All")
    prefix = params.get("PathPrefix")
    usage = params.get("PolicyUsageFilter")
    accounts = {"All": [ctx.account_id, aws_managed.ACCOUNT], "AWS": [aws_managed.ACCOUNT]}.get(
        scope, [ctx.account_id]
    )
    items = []
    if aws_managed.ACCOUNT in accounts:
        aws_managed.ensure_all(ctx.runtime.engine)
    with ctx.runtime.engine.connect() as conn:
        rows = conn.execute(
            select(MANAGED).where(MANAGED.c.account_id.in_(accounts)).order_by(func.lower(MANAGED.c.name))
        ).all()
        for row in rows:
            if prefix and not row.path.startswith(prefix):
                continue
            item = views.policy(row, conn, ctx.account_id, description=False, tags=False)
            if params.get("OnlyAttached") and not (
                item["AttachmentCount"] or item["PermissionsBoundaryUsageCount"]
            ):
                continue
            if usage == "PermissionsPolicy" and not item["AttachmentCount"]:
                continue
            if usage == "PermissionsBoundary" and not item["PermissionsBoundaryUsageCount"]:
                continue
            items.append(item)
    page, meta = paging.paginate(items, params)
    return {"Policies": page, **meta}


def _version(conn: Connection, arn: str, version_id: str) -> Row[Any]:
    row = conn.execute(
        select(VERSIONS).where(VERSIONS.c.policy_arn == arn).where(VERSIONS.c.version_id == version_id)
    ).first()
    if row is None:
        raise errors.policy_version_not_found(arn, version_id)
    return row


def create_policy_version(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    policy = _own(ctx, params["PolicyArn"])
    document = params["PolicyDocument"]
    _validate(document)
    make_default = bool(params.get("SetAsDefault"))
    created = now(ctx)
    with ctx.runtime.engine.begin() as conn:
        current = conn.execute(select(MANAGED).where(MANAGED.c.arn == policy.arn)).first()
        if current is None:
            raise errors.policy_not_found(policy.arn)
        versions = conn.execute(
            select(func.count()).select_from(VERSIONS).where(VERSIONS.c.policy_arn == policy.arn)
        ).scalar_one()
        if versions >= MAX_VERSIONS:
            raise errors.limit_exceeded(
                "A managed policy can have up to 5 versions. Before you create a new version, you must "
                "delete an existing version."
            )
        version_id = f"v{current.next_version}"
        conn.execute(
            insert(VERSIONS).values(
                policy_arn=policy.arn, version_id=version_id, document=document, created_at=created
            )
        )
        values: dict[str, Any] = {"next_version": current.next_version + 1, "updated_at": created}
        if make_default:
            values["default_version"] = version_id
        conn.execute(update(MANAGED).where(MANAGED.c.arn == policy.arn).values(**values))
    if make_default:
        invalidate(ctx)
    return {
        "PolicyVersion": {"VersionId": version_id, "IsDefaultVersion": make_default, "CreateDate": created}
    }


def get_policy_version(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    policy = lookup_policy(ctx, params["PolicyArn"])
    with ctx.runtime.engine.connect() as conn:
        version = _version(conn, policy.arn, params["VersionId"])
    return {"PolicyVersion": views.policy_version(version, policy.default_version)}


def _version_number(version_id: str) -> int:
    digits = version_id[1:].split(".", 1)[0]
    return int(digits) if digits.isdigit() else 0


def list_policy_versions(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    policy = lookup_policy(ctx, params["PolicyArn"])
    with ctx.runtime.engine.connect() as conn:
        rows = list(conn.execute(select(VERSIONS).where(VERSIONS.c.policy_arn == policy.arn)).all())
    rows.sort(key=lambda r: _version_number(r.version_id), reverse=True)
    page, meta = paging.paginate(rows, params)
    versions = [views.policy_version(r, policy.default_version, document=False) for r in page]
    return {"Versions": versions, **meta}


def delete_policy_version(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    policy = _own(ctx, params["PolicyArn"])
    version_id = params["VersionId"]
    with ctx.runtime.engine.begin() as conn:
        _version(conn, policy.arn, version_id)
        default = conn.execute(select(MANAGED.c.default_version).where(MANAGED.c.arn == policy.arn)).scalar()
        if default == version_id:
            raise errors.delete_conflict("Cannot delete the default version of a policy.")
        conn.execute(
            delete(VERSIONS)
            .where(VERSIONS.c.policy_arn == policy.arn)
            .where(VERSIONS.c.version_id == version_id)
        )
    return {}


def set_default_policy_version(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    policy = _own(ctx, params["PolicyArn"])
    version_id = params["VersionId"]
    with ctx.runtime.engine.begin() as conn:
        _version(conn, policy.arn, version_id)
        conn.execute(update(MANAGED).where(MANAGED.c.arn == policy.arn).values(default_version=version_id))
    invalidate(ctx)
    return {}


OPERATIONS = {
    "CreatePolicy": create_policy,
    "GetPolicy": get_policy,
    "DeletePolicy": delete_policy,
    "ListPolicies": list_policies,
    "CreatePolicyVersion": create_policy_version,
    "GetPolicyVersion": get_policy_version,
    "ListPolicyVersions": list_policy_versions,
    "DeletePolicyVersion": delete_policy_version,
    "SetDefaultPolicyVersion": set_default_policy_version,
}
