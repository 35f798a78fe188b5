"""Managed policies and their versions: the account's own, and the AWS-managed ones of the catalogue
(stored on first use under the pseudo-account ``aws``, so attachments resolve through one table)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, Row, delete, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from khoa.access import aws_managed
from khoa.protocol.errors import AWSError
from khoa.services.iam import errors
from khoa.services.iam.names import parse_policy_arn
from khoa.services.iam.store.tables import (
    ATTACHMENTS,
    MANAGED,
    PRINCIPALS,
    TAGS,
    VERSIONS,
    tags_of,
    write_tags,
)

MAX_VERSIONS = 5
MAX_POLICIES = 1500


@dataclass(frozen=True)
class PolicyRecord:
    """A managed policy with what its response shows beyond its row: how many of the account's
    entities use it (attached, as boundary) and its tags."""

    row: Row[Any]
    attached: int
    boundaries: int
    tags: list[dict[str, str]] = field(default_factory=list)


class PolicyStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def find(self, arn: str) -> Row[Any] | None:
        with self._engine.connect() as conn:
            return _find(conn, arn)

    def aws_managed(self, arn: str) -> Row[Any] | None:
        """The stored row of an AWS-managed policy from the catalogue (stored on first use), else None."""
        name = aws_managed.name_of(arn)
        if name is None:
            return None
        row = self.find(arn)
        if row is not None:
            return row
        description, document = aws_managed.CATALOGUE[name]
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    insert(MANAGED).values(
                        arn=arn,
                        policy_id=aws_managed.policy_id(name),
                        account_id=aws_managed.ACCOUNT,
                        name=name,
                        path="/",
                        description=description,
                        default_version="v1",
                        next_version=2,
                        created_at=aws_managed.CREATED,
                        updated_at=aws_managed.CREATED,
                    )
                )
                conn.execute(
                    insert(VERSIONS).values(
                        policy_arn=arn, version_id="v1", document=document, created_at=aws_managed.CREATED
                    )
                )
        except IntegrityError:
            pass  # another request stored it first
        return self.find(arn)

    def store_aws_managed(self) -> None:
        """Make sure every AWS-managed policy of the catalogue is stored (ListPolicies shows them all)."""
        for name in aws_managed.CATALOGUE:
            self.aws_managed(aws_managed.arn_of(name))

    def describe(self, policy: Row[Any], account_id: str) -> PolicyRecord:
        """``policy`` with its use by ``account_id``'s entities and its tags (GetPolicy)."""
        with self._engine.connect() as conn:
            attached, boundaries = usage(conn, account_id, policy.arn)
            return PolicyRecord(policy, attached, boundaries, tags_of(conn, policy.policy_id))

    def create(
        self,
        account_id: str,
        values: dict[str, Any],
        document: str,
        tags: list[dict[str, str]],
    ) -> PolicyRecord:
        """Store a new customer-managed policy (``values``: arn, policy_id, name, path, description,
        created_at) with ``document`` as its default version v1, and its tags; refuses a name the
        account already uses (names are case-insensitive) and more than ``MAX_POLICIES``."""
        name, arn = values["name"], values["arn"]
        exists = errors.already_exists(
            f"A policy called {name} already exists. Duplicate names are not allowed."
        )
        created = values["created_at"]
        try:
            with self._engine.begin() as conn:
                same_name = conn.execute(
                    select(MANAGED.c.arn)
                    .where(MANAGED.c.account_id == account_id)
                    .where(func.lower(MANAGED.c.name) == name.lower())
                ).first()
                if same_name is not None:
                    raise exists
                total = conn.execute(
                    select(func.count()).select_from(MANAGED).where(MANAGED.c.account_id == account_id)
                ).scalar_one()
                if total >= MAX_POLICIES:
                    raise errors.quota("PoliciesPerAccount", MAX_POLICIES)
                conn.execute(
                    insert(MANAGED).values(
                        account_id=account_id,
                        default_version="v1",
                        next_version=2,
                        updated_at=created,
                        **values,
                    )
                )
                conn.execute(
                    insert(VERSIONS).values(
                        policy_arn=arn, version_id="v1", document=document, created_at=created
                    )
                )
                write_tags(conn, values["policy_id"], tags, "TagsPerPolicy")
                row = _find(conn, arn)
                assert row is not None
                attached, boundaries = usage(conn, account_id, arn)
                return PolicyRecord(row, attached, boundaries, tags_of(conn, row.policy_id))
        except IntegrityError:
            raise exists from None

    def delete(self, policy: Row[Any], account_id: str) -> None:
        """Delete a policy no entity uses and that has only its default version left, with its tags."""
        arn = policy.arn
        with self._engine.begin() as conn:
            _lock(conn, arn)  # a version created meanwhile is counted
            attached, boundaries = usage(conn, account_id, arn)
            if attached or boundaries:
                raise errors.delete_conflict("Cannot delete a policy attached to entities.")
            versions = conn.execute(
                select(func.count()).select_from(VERSIONS).where(VERSIONS.c.policy_arn == arn)
            ).scalar_one()
            if versions > 1:
                raise errors.delete_conflict(
                    "This policy has more than one version. Before you delete a policy, you must delete "
                    "the policy's versions. The default version is deleted with the policy."
                )
            conn.execute(delete(VERSIONS).where(VERSIONS.c.policy_arn == arn))
            conn.execute(delete(TAGS).where(TAGS.c.owner_id == policy.policy_id))
            conn.execute(delete(MANAGED).where(MANAGED.c.arn == arn))

    def listing(self, owners: list[str], account_id: str) -> list[PolicyRecord]:
        """The policies of ``owners`` (account IDs and/or ``aws``) by name, with their use by
        ``account_id``'s entities (no tags: ListPolicies does not show them)."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(MANAGED).where(MANAGED.c.account_id.in_(owners)).order_by(func.lower(MANAGED.c.name))
            ).all()
            return [PolicyRecord(row, *usage(conn, account_id, row.arn)) for row in rows]

    def create_version(self, arn: str, document: str, make_default: bool, created_at: float) -> str:
        """Add a version (at most ``MAX_VERSIONS``), optionally as the default; returns its ID. The
        policy's row is locked first, so concurrent calls number their versions one after the other
        and count each other's."""
        try:
            with self._engine.begin() as conn:
                current = _lock(conn, arn)
                versions = conn.execute(
                    select(func.count()).select_from(VERSIONS).where(VERSIONS.c.policy_arn == arn)
                ).scalar_one()
                if versions >= MAX_VERSIONS:
                    raise errors.limit_exceeded(
                        "A managed policy can have up to 5 versions. Before you create a new version, you "
                        "must delete an existing version."
                    )
                version_id = f"v{current.next_version}"
                conn.execute(
                    insert(VERSIONS).values(
                        policy_arn=arn, version_id=version_id, document=document, created_at=created_at
                    )
                )
                values: dict[str, Any] = {"next_version": current.next_version + 1, "updated_at": created_at}
                if make_default:
                    values["default_version"] = version_id
                conn.execute(update(MANAGED).where(MANAGED.c.arn == arn).values(**values))
        except IntegrityError:
            # Not reached while every writer of the policy's versions locks its row first; a writer
            # that did not (an older node during an upgrade) is answered as IAM answers a conflict.
            raise errors.concurrent_modification() from None
        return version_id

    def version(self, arn: str, version_id: str) -> Row[Any]:
        """One version of a policy; NoSuchEntity when there is none."""
        with self._engine.connect() as conn:
            return _version(conn, arn, version_id)

    def versions(self, arn: str) -> list[Row[Any]]:
        with self._engine.connect() as conn:
            return list(conn.execute(select(VERSIONS).where(VERSIONS.c.policy_arn == arn)).all())

    def delete_version(self, arn: str, version_id: str) -> None:
        """Delete a version that exists (NoSuchEntity) and is not the default (DeleteConflict), judged
        under the policy's lock: a concurrent SetDefaultPolicyVersion of the same version either comes
        first (and this is refused) or finds the version gone."""
        with self._engine.begin() as conn:
            current = _lock(conn, arn)
            _version(conn, arn, version_id)
            if current.default_version == version_id:
                raise errors.delete_conflict("Cannot delete the default version of a policy.")
            conn.execute(
                delete(VERSIONS)
                .where(VERSIONS.c.policy_arn == arn)
                .where(VERSIONS.c.version_id == version_id)
            )

    def set_default_version(self, arn: str, version_id: str) -> None:
        """Make an existing version the one that takes effect (checked under the policy's lock, so the
        default never names a version deleted meanwhile)."""
        with self._engine.begin() as conn:
            _lock(conn, arn)
            _version(conn, arn, version_id)
            conn.execute(update(MANAGED).where(MANAGED.c.arn == arn).values(default_version=version_id))


def _lock(conn: Connection, arn: str) -> Row[Any]:
    """Start a change to a managed policy or its versions by updating its row (to what it holds):
    concurrent writers of the same policy wait here (a row lock on PostgreSQL; on SQLite the write lock
    and the writers' turn, which a transaction takes at its first write, not at a read), so what is
    read next is current. The policy as it is now; NoSuchEntity if it was deleted."""
    return lock_policy(conn, arn, errors.policy_not_found)


def hold_in_use(conn: Connection, arn: str) -> None:
    """In a transaction that starts to use the managed policy ``arn`` (attaching it, making it a
    boundary): a customer-managed one is locked (:func:`lock_policy`), so a DeletePolicy either
    finished first (NoSuchEntity, "does not exist or is not attachable") or counts the new use and
    refuses with DeleteConflict. Without it both committed, and the use outlived the policy: a policy
    created again under the same name later applied to whoever still named it."""
    if parse_policy_arn(arn)[0] != aws_managed.ACCOUNT:
        lock_policy(conn, arn, errors.policy_not_attachable)


def lock_policy(conn: Connection, arn: str, missing: Callable[[str], AWSError]) -> Row[Any]:
    """:func:`_lock` for a transaction that starts to use a customer-managed policy (attaching it,
    making it a boundary): a DeletePolicy either finishes first (``missing`` is raised) or counts
    the new use and refuses. AWS-managed policies are never deleted and need no lock."""
    locked = conn.execute(
        update(MANAGED).where(MANAGED.c.arn == arn).values(next_version=MANAGED.c.next_version)
    )
    current = _find(conn, arn) if locked.rowcount == 1 else None
    if current is None:
        raise missing(arn)
    return current


def _find(conn: Connection, arn: str) -> Row[Any] | None:
    return conn.execute(select(MANAGED).where(MANAGED.c.arn == arn)).first()


def _version(conn: Connection, arn: str, version_id: str) -> Row[Any]:
    row = conn.execute(
        select(VERSIONS).where(VERSIONS.c.policy_arn == arn).where(VERSIONS.c.version_id == version_id)
    ).first()
    if row is None:
        raise errors.policy_version_not_found(arn, version_id)
    return row


def usage(conn: Connection, account_id: str, arn: str) -> tuple[int, int]:
    """How many of this account's entities have the policy attached, and use it as their boundary."""
    attached = conn.execute(
        select(func.count())
        .select_from(ATTACHMENTS.join(PRINCIPALS, PRINCIPALS.c.principal_id == ATTACHMENTS.c.owner_id))
        .where(ATTACHMENTS.c.policy_arn == arn)
        .where(PRINCIPALS.c.account_id == account_id)
    ).scalar_one()
    boundaries = conn.execute(
        select(func.count())
        .select_from(PRINCIPALS)
        .where(PRINCIPALS.c.permissions_boundary == arn)
        .where(PRINCIPALS.c.account_id == account_id)
    ).scalar_one()
    return int(attached), int(boundaries)
