"""What the rules read: the installation's metadata, loaded once per review with set-based queries.

Every loader is one query (or a few) over a whole table, filtered by account when the review is of
one account, and cached for the review, so rules that share data (secrets, keys, policies) read it
once. Nothing here unseals anything: secret values stay sealed; only ``String`` parameter values,
which are stored in the clear and are not secret, are read (by the rule that scans them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from sqlalchemy import Engine, and_, func, or_, select
from sqlalchemy.engine import Row
from sqlalchemy.sql.elements import ColumnElement

from khoa.crypto.barrier import Barrier
from khoa.settings import Settings
from khoa.storage import schema

DEFAULT_NAMING_PATTERN = (
    r"^[a-z0-9][a-z0-9-]*/[a-z0-9][a-z0-9._-]*/[a-z0-9][a-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._+=@-]*$"
)
DEFAULT_UNUSED_DAYS = 90
DAY = 86400.0

# JSON fields whose presence makes a secret a credential (Secrets Manager's rotation templates); only
# fields that are themselves secret are fingerprinted (khoa.crypto.fingerprint), so "password" is the
# one the leak fingerprints record for a credential secret.
CREDENTIAL_FIELDS = ("password", "passwd", "pwd", "secret_access_key", "client_secret", "private_key")
# Tags that say what a secret holds: SecretType (or Kind, Type) = credentials.
KIND_TAGS = ("secrettype", "secret-type", "kind", "type")
CREDENTIAL_KINDS = ("credentials", "credential", "database-credentials", "db-credentials", "password")
ENVIRONMENT_TAG = "environment"
PRODUCTION = ("prod", "production")


@dataclass(frozen=True)
class Options:
    account: str | None = None
    naming_pattern: str = DEFAULT_NAMING_PATTERN
    unused_days: float = DEFAULT_UNUSED_DAYS


def key_arn(region: str, account: str, key_id: str) -> str:
    return f"arn:aws:kms:{region}:{account}:key/{key_id}"


class Snapshot:
    """The installation as the rules see it (see the module docstring)."""

    def __init__(
        self, engine: Engine, settings: Settings, options: Options, now: float, barrier: Barrier | None = None
    ) -> None:
        self.engine = engine
        self.barrier = barrier  # the root key, when the reviewer holds it
        self.settings = settings
        self.options = options
        self.now = now
        self.naming = re.compile(options.naming_pattern)

    def rows(self, statement: Any) -> list[Row[Any]]:
        with self.engine.connect() as connection:
            return list(connection.execute(statement))

    def in_account(self, column: Any) -> ColumnElement[bool]:
        account = self.options.account
        return column == account if account is not None else column.is_not(None)

    # -- Secrets Manager ---------------------------------------------------------------------------

    @cached_property
    def secrets(self) -> list[Row[Any]]:
        c = schema.sm_secrets.c
        return self.rows(
            select(
                c.secret_id,
                c.account_id,
                c.region,
                c.name,
                c.arn,
                c.kms_key_id,
                c.created_at,
                c.rotation_enabled,
                c.rotation_rules,
                c.last_rotated_at,
                c.resource_policy,
                c.owning_service,
            ).where(c.deleted_at.is_(None), self.in_account(c.account_id))
        )

    @cached_property
    def secret_tags(self) -> dict[str, dict[str, str]]:
        """The tags the rules read (Environment and the kind tags), lower-cased keys, per secret id."""
        t, s = schema.sm_tags.c, schema.sm_secrets.c
        wanted = (ENVIRONMENT_TAG, *KIND_TAGS)
        tags: dict[str, dict[str, str]] = {}
        for secret_id, key, value in self.rows(
            select(t.secret_id, t.tag_key, t.tag_value)
            .join(schema.sm_secrets, s.secret_id == t.secret_id)
            .where(func.lower(t.tag_key).in_(wanted), s.deleted_at.is_(None), self.in_account(s.account_id))
        ):
            tags.setdefault(secret_id, {})[key.lower()] = value
        return tags

    @cached_property
    def credential_secrets(self) -> set[str]:
        """Secret ids that hold credentials: a current JSON value with a credential field (from the leak
        fingerprints' field names, so no value is unsealed), or a kind tag that says so."""
        f = schema.leak_fingerprints.c
        fields = func.lower(f.field)
        held = {
            row[0]
            for row in self.rows(
                select(f.resource_id)
                .where(
                    f.resource_type == "secret",
                    f.invalid_since.is_(None),
                    self.in_account(f.account_id),
                    or_(
                        fields.in_(CREDENTIAL_FIELDS),
                        *(fields.like(f"%.{name}") for name in CREDENTIAL_FIELDS),
                    ),
                )
                .distinct()
            )
        }
        for secret_id, tags in self.secret_tags.items():
            if any(tags.get(key, "").strip().lower() in CREDENTIAL_KINDS for key in KIND_TAGS):
                held.add(secret_id)
        return held

    def is_production(self, secret: Row[Any]) -> bool:
        name = secret.name.lower()
        if name.startswith(("prod/", "production/")):
            return True
        environment = self.secret_tags.get(secret.secret_id, {}).get(ENVIRONMENT_TAG, "")
        return environment.strip().lower() in PRODUCTION

    # -- KMS -------------------------------------------------------------------------------------

    @cached_property
    def keys(self) -> list[Row[Any]]:
        c = schema.kms_keys.c
        return self.rows(
            select(
                c.key_id,
                c.account_id,
                c.region,
                c.key_spec,
                c.key_usage,
                c.origin,
                c.key_manager,
                c.state,
                c.rotation_enabled,
                c.deletion_date,
                c.pending_window_days,
                c.policy,
            ).where(self.in_account(c.account_id))
        )

    @cached_property
    def keys_by_id(self) -> dict[str, Row[Any]]:
        return {key.key_id: key for key in self.keys}

    @cached_property
    def aliases(self) -> dict[tuple[str, str, str], str]:
        """(account, region, alias name) → target key id."""
        c = schema.kms_aliases.c
        return {
            (row.account_id, row.region, row.alias_name): row.target_key_id
            for row in self.rows(
                select(c.account_id, c.region, c.alias_name, c.target_key_id).where(
                    self.in_account(c.account_id)
                )
            )
        }

    def resolve_key(self, account: str, region: str, reference: str) -> Row[Any] | None:
        """The key a secret's KmsKeyId names (key id, key ARN, alias name or alias ARN), if known."""
        tail = reference.split(":")[-1] if reference.startswith("arn:") else reference
        if tail.startswith("key/"):
            tail = tail[4:]
        if tail.startswith("alias/"):
            target = self.aliases.get((account, region, tail))
            return self.keys_by_id.get(target) if target else None
        return self.keys_by_id.get(tail)

    @cached_property
    def grants(self) -> list[Row[Any]]:
        g, k = schema.kms_grants.c, schema.kms_keys.c
        return self.rows(
            select(g.grant_id, g.key_id, g.grantee_principal, g.operations, k.account_id, k.region)
            .join(schema.kms_keys, k.key_id == g.key_id)
            .where(self.in_account(k.account_id))
        )

    # -- IAM ---------------------------------------------------------------------------------------

    @cached_property
    def principals(self) -> dict[str, Row[Any]]:
        """IAM users, groups and roles by principal id."""
        c = schema.iam_principals.c
        return {
            row.principal_id: row
            for row in self.rows(
                select(c.principal_id, c.account_id, c.kind, c.name, c.arn, c.created_at).where(
                    self.in_account(c.account_id)
                )
            )
        }

    @cached_property
    def inline_policies(self) -> list[tuple[Row[Any], str, str]]:
        """(owner, policy name, document) of every inline policy of a user, group or role."""
        c, p = schema.iam_inline_policies.c, schema.iam_principals.c
        rows = self.rows(
            select(c.owner_id, c.policy_name, c.document)
            .join(schema.iam_principals, p.principal_id == c.owner_id)
            .where(self.in_account(p.account_id))
        )
        return [
            (self.principals[r.owner_id], r.policy_name, r.document)
            for r in rows
            if r.owner_id in self.principals
        ]

    @cached_property
    def managed_policies(self) -> dict[str, str]:
        """Customer managed policies' default versions: policy ARN → document."""
        m, v = schema.iam_managed_policies.c, schema.iam_policy_versions.c
        rows = self.rows(
            select(m.arn, v.document)
            .join(schema.iam_policy_versions, and_(v.policy_arn == m.arn, v.version_id == m.default_version))
            .where(self.in_account(m.account_id))
        )
        return {row.arn: row.document for row in rows}

    @cached_property
    def attachments(self) -> dict[str, list[str]]:
        """principal id → attached managed policy ARNs (customer and AWS managed)."""
        a = schema.iam_attachments.c
        attached: dict[str, list[str]] = {}
        for owner_id, policy_arn in self.rows(select(a.owner_id, a.policy_arn)):
            if owner_id in self.principals:
                attached.setdefault(owner_id, []).append(policy_arn)
        return attached

    @cached_property
    def group_members(self) -> dict[str, list[str]]:
        """group id → member user ids."""
        g = schema.iam_group_members.c
        members: dict[str, list[str]] = {}
        for group_id, user_id in self.rows(select(g.group_id, g.user_id)):
            if group_id in self.principals:
                members.setdefault(group_id, []).append(user_id)
        return members
