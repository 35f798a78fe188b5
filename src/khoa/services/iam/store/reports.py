"""Whole-account and whole-entity reads: everything GetAccountAuthorizationDetails reports, and every
policy that applies to one entity (what SimulatePrincipalPolicy evaluates)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, Row, func, select

from khoa.services.iam.names import GROUP, USER
from khoa.services.iam.store.policies import PolicyRecord, usage
from khoa.services.iam.store.tables import (
    ATTACHMENTS,
    INLINE,
    MANAGED,
    MEMBERS,
    PRINCIPALS,
    TAGS,
    VERSIONS,
    tags_of,
)


@dataclass(frozen=True)
class AccountSnapshot:
    """An account's IAM data read in one connection, keyed by owner (principal) ID."""

    principals: list[Row[Any]]  # users, groups and roles, by name
    inline: dict[str, list[tuple[str, str]]]  # owner -> [(policy name, document)], by name
    attached: dict[str, list[tuple[str, str]]]  # owner -> [(policy name, policy ARN)], by name
    group_names: dict[str, list[str]]  # user -> the names of its groups
    tags: dict[str, list[dict[str, str]]]  # owner -> tags, by key
    policies: list[tuple[PolicyRecord, list[Row[Any]]]]  # managed policies (no tags), their versions


@dataclass(frozen=True)
class EntityPolicies:
    """The policies that apply to a user (with its groups'), group or role."""

    inline: list[tuple[str, str, str]]  # (policy name, document, owner's kind)
    managed: list[tuple[str, str, str]]  # (policy name, owning account or "aws", default document)
    boundary_document: str | None  # the boundary's default document, if the boundary is set and exists
    tags: list[dict[str, str]]


class ReportStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def account_snapshot(self, account_id: str, policy_owners: list[str]) -> AccountSnapshot:
        """Every entity of the account with its inline policies, attachments, groups and tags, and the
        managed policies of ``policy_owners`` (the account and/or ``aws``) with their versions."""
        inline: dict[str, list[tuple[str, str]]] = defaultdict(list)
        attached: dict[str, list[tuple[str, str]]] = defaultdict(list)
        group_names: dict[str, list[str]] = defaultdict(list)
        tags: dict[str, list[dict[str, str]]] = defaultdict(list)
        with self._engine.connect() as conn:
            principals = list(
                conn.execute(
                    select(PRINCIPALS)
                    .where(PRINCIPALS.c.account_id == account_id)
                    .order_by(PRINCIPALS.c.name_lower)
                ).all()
            )
            ids = [p.principal_id for p in principals]
            by_id = {p.principal_id: p for p in principals}
            if ids:
                for owner_id, name, document in conn.execute(
                    select(INLINE.c.owner_id, INLINE.c.policy_name, INLINE.c.document)
                    .where(INLINE.c.owner_id.in_(ids))
                    .order_by(INLINE.c.policy_name)
                ).all():
                    inline[owner_id].append((name, document))
                for owner_id, name, arn in conn.execute(
                    select(ATTACHMENTS.c.owner_id, MANAGED.c.name, MANAGED.c.arn)
                    .join(MANAGED, MANAGED.c.arn == ATTACHMENTS.c.policy_arn)
                    .where(ATTACHMENTS.c.owner_id.in_(ids))
                    .order_by(func.lower(MANAGED.c.name))
                ).all():
                    attached[owner_id].append((name, arn))
                for group_id, user_id in conn.execute(
                    select(MEMBERS.c.group_id, MEMBERS.c.user_id).where(MEMBERS.c.user_id.in_(ids))
                ).all():
                    if group_id in by_id:
                        group_names[user_id].append(by_id[group_id].name)
                for owner_id, key, value in conn.execute(
                    select(TAGS.c.owner_id, TAGS.c.tag_key, TAGS.c.tag_value)
                    .where(TAGS.c.owner_id.in_(ids))
                    .order_by(TAGS.c.tag_key)
                ).all():
                    tags[owner_id].append({"Key": key, "Value": value})
            policies = []
            for policy in conn.execute(
                select(MANAGED)
                .where(MANAGED.c.account_id.in_(policy_owners))
                .order_by(func.lower(MANAGED.c.name))
            ).all():
                record = PolicyRecord(policy, *usage(conn, account_id, policy.arn))
                versions = list(
                    conn.execute(select(VERSIONS).where(VERSIONS.c.policy_arn == policy.arn)).all()
                )
                policies.append((record, versions))
        return AccountSnapshot(principals, inline, attached, group_names, tags, policies)

    def entity_policies(self, entity: Row[Any]) -> EntityPolicies:
        """The inline and attached policies of ``entity`` (a user's include its groups'), the document
        of its permissions boundary, and its tags."""
        with self._engine.connect() as conn:
            owners = [(entity.principal_id, entity.kind)]
            if entity.kind == USER:
                owners.extend(
                    (group_id, GROUP)
                    for group_id in conn.execute(
                        select(MEMBERS.c.group_id).where(MEMBERS.c.user_id == entity.principal_id)
                    ).scalars()
                )
            inline = [
                (name, document, kind)
                for owner_id, kind in owners
                for name, document in conn.execute(
                    select(INLINE.c.policy_name, INLINE.c.document).where(INLINE.c.owner_id == owner_id)
                ).all()
            ]
            managed = [
                (r.name, r.account_id, r.document)
                for r in conn.execute(
                    select(MANAGED.c.name, MANAGED.c.account_id, VERSIONS.c.document)
                    .join(ATTACHMENTS, ATTACHMENTS.c.policy_arn == MANAGED.c.arn)
                    .join(VERSIONS, VERSIONS.c.policy_arn == MANAGED.c.arn)
                    .where(ATTACHMENTS.c.owner_id.in_([o for o, _ in owners]))
                    .where(VERSIONS.c.version_id == MANAGED.c.default_version)
                ).all()
            ]
            boundary = None
            if entity.permissions_boundary:
                boundary = conn.execute(
                    select(VERSIONS.c.document)
                    .join(MANAGED, MANAGED.c.arn == VERSIONS.c.policy_arn)
                    .where(MANAGED.c.arn == entity.permissions_boundary)
                    .where(VERSIONS.c.version_id == MANAGED.c.default_version)
                ).scalar()
            return EntityPolicies(inline, managed, boundary, tags_of(conn, entity.principal_id))
