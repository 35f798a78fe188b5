"""Users, groups and roles (one ``iam_principals`` table, by kind), group membership, and the checks
that keep an entity from being deleted while something still refers to it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, Row, delete, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from khoa.access.forgotten import follow_rename, forget_principal, names_role, names_user
from khoa.protocol.errors import AWSError
from khoa.services.iam import errors
from khoa.services.iam.names import GROUP, LABEL, ROLE, USER
from khoa.services.iam.store.policies import hold_in_use
from khoa.services.iam.store.tables import (
    ACCESS_KEYS,
    ACCOUNTS,
    ATTACHMENTS,
    INLINE,
    MEMBERS,
    PRINCIPALS,
    TAGS,
    has_any,
    lock_principal,
    tags_of,
    write_tags,
)
from khoa.storage import fingerprints, schema

# Per-account quotas, counted inside the creating transaction.
QUOTAS = {USER: ("UsersPerAccount", 5000), GROUP: ("GroupsPerAccount", 300), ROLE: ("RolesPerAccount", 1000)}
MAX_GROUPS_PER_USER = 10


def _exists(kind: str, name: str) -> AWSError:
    return errors.already_exists(f"{LABEL[kind]} with name {name} already exists.")


class EntityStore:
    """Reads and writes of users, groups, roles and memberships; names are case-insensitive."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def find(self, account_id: str, kind: str, name: str) -> Row[Any] | None:
        with self._engine.connect() as conn:
            return _find(conn, account_id, kind, name)

    def by_id(self, principal_id: str) -> Row[Any] | None:
        with self._engine.connect() as conn:
            return _by_id(conn, principal_id)

    def listing(self, account_id: str, kind: str, path_prefix: str | None) -> list[Row[Any]]:
        """The account's entities of ``kind`` under ``path_prefix``, by name."""
        with self._engine.connect() as conn:
            rows = list(
                conn.execute(
                    select(PRINCIPALS)
                    .where(PRINCIPALS.c.account_id == account_id)
                    .where(PRINCIPALS.c.kind == kind)
                    .order_by(PRINCIPALS.c.name_lower)
                ).all()
            )
        return [r for r in rows if r.path.startswith(path_prefix)] if path_prefix else rows

    def create(
        self,
        kind: str,
        account_id: str,
        name: str,
        attributes: dict[str, Any],
        tags: list[dict[str, str]] | None = None,
        tags_quota: str = "",
    ) -> tuple[Row[Any], list[dict[str, str]]]:
        """Store a new entity (``attributes``: its other columns) with its tags, in one transaction
        that also checks the name is free and the account's quota; returns the row and its tags."""
        quota, limit = QUOTAS[kind]
        try:
            with self._engine.begin() as conn:
                if attributes.get("permissions_boundary"):
                    hold_in_use(conn, attributes["permissions_boundary"])
                if _find(conn, account_id, kind, name) is not None:
                    raise _exists(kind, name)
                if _count(conn, account_id, kind) >= limit:
                    raise errors.quota(quota, limit)
                conn.execute(
                    insert(PRINCIPALS).values(
                        account_id=account_id, kind=kind, name=name, name_lower=name.lower(), **attributes
                    )
                )
                principal_id = attributes["principal_id"]
                write_tags(conn, principal_id, tags or [], tags_quota)
                row = _by_id(conn, principal_id)
                assert row is not None
                return row, tags_of(conn, principal_id)
        except IntegrityError:
            raise _exists(kind, name) from None

    def rename(self, entity: Row[Any], name: str, path: str, arn: str) -> None:
        """Give a user or group a new name and/or path (a user's access keys follow it)."""
        kind = entity.kind
        try:
            with self._engine.begin() as conn:
                if name.lower() != entity.name_lower and _find(conn, entity.account_id, kind, name):
                    raise _exists(kind, name)
                conn.execute(
                    update(PRINCIPALS)
                    .where(PRINCIPALS.c.principal_id == entity.principal_id)
                    .values(name=name, name_lower=name.lower(), path=path, arn=arn)
                )
                if kind == USER:
                    conn.execute(
                        update(ACCESS_KEYS)
                        .where(ACCESS_KEYS.c.account_id == entity.account_id)
                        .where(ACCESS_KEYS.c.principal_kind == "IAMUser")
                        .where(func.lower(ACCESS_KEYS.c.principal_name) == entity.name_lower)
                        .values(principal_name=name)
                    )
                    fingerprints.renamed(conn, entity.arn, arn)  # leak matches name the user as it is now
                    if arn != entity.arn:  # what named the user names it still; its old name is free
                        follow_rename(conn, entity.name, entity.arn, arn)
        except IntegrityError:
            raise _exists(kind, name) from None

    def update_role(self, role_id: str, values: dict[str, Any]) -> None:
        """Change a role's description, maximum session duration and/or trust policy."""
        with self._engine.begin() as conn:
            conn.execute(update(PRINCIPALS).where(PRINCIPALS.c.principal_id == role_id).values(**values))

    def set_boundary(self, principal_id: str, policy_arn: str | None) -> None:
        """Set (or with None remove) a user's or role's permissions boundary."""
        with self._engine.begin() as conn:
            if policy_arn is not None:
                hold_in_use(conn, policy_arn)  # not deleted meanwhile, nor while this commits
            conn.execute(
                update(PRINCIPALS)
                .where(PRINCIPALS.c.principal_id == principal_id)
                .values(permissions_boundary=policy_arn)
            )

    def delete_user(self, user: Row[Any]) -> None:
        """Delete a user that has no access keys, policies or group memberships left (DeleteConflict)."""
        owner = user.principal_id
        with self._engine.begin() as conn:
            if _by_id(conn, owner) is None:
                raise errors.entity_not_found(USER, user.name)
            if has_any(
                conn,
                select(ACCESS_KEYS.c.access_key_id)
                .where(ACCESS_KEYS.c.account_id == user.account_id)
                .where(ACCESS_KEYS.c.principal_kind == "IAMUser")
                .where(func.lower(ACCESS_KEYS.c.principal_name) == user.name_lower),
            ):
                raise errors.delete_conflict("Cannot delete entity, must delete access keys first.")
            _refuse_if_has_policies(conn, owner)
            if has_any(conn, select(MEMBERS.c.group_id).where(MEMBERS.c.user_id == owner)):
                raise errors.delete_conflict("Cannot delete entity, must remove users from group first.")
            conn.execute(delete(TAGS).where(TAGS.c.owner_id == owner))
            conn.execute(delete(PRINCIPALS).where(PRINCIPALS.c.principal_id == owner))
            # a user created later with this name must not inherit what named this one
            forget_principal(conn, user.name, names_user(user.arn), owner)

    def delete_group(self, group: Row[Any]) -> None:
        """Delete a group that has no members or policies left (DeleteConflict otherwise)."""
        owner = group.principal_id
        with self._engine.begin() as conn:
            if has_any(conn, select(MEMBERS.c.user_id).where(MEMBERS.c.group_id == owner)):
                raise errors.delete_conflict("Cannot delete entity, must remove users from group first.")
            _refuse_if_has_policies(conn, owner)
            conn.execute(delete(PRINCIPALS).where(PRINCIPALS.c.principal_id == owner))

    def delete_role(self, role: Row[Any]) -> None:
        """Delete a role that has no policies left (DeleteConflict otherwise), with its tags."""
        owner = role.principal_id
        with self._engine.begin() as conn:
            _refuse_if_has_policies(conn, owner)
            conn.execute(delete(TAGS).where(TAGS.c.owner_id == owner))
            conn.execute(delete(PRINCIPALS).where(PRINCIPALS.c.principal_id == owner))
            # a role created later with this name must not inherit what named this one
            forget_principal(conn, role.name, names_role(role.account_id, role.name), owner)

    def add_member(self, group_id: str, user_id: str) -> None:
        """Add a user to a group (already a member is not an error); at most ten groups per user."""
        try:
            with self._engine.begin() as conn:
                lock_principal(conn, user_id)
                conn.execute(insert(MEMBERS).values(group_id=group_id, user_id=user_id))
                memberships = conn.execute(
                    select(func.count()).select_from(MEMBERS).where(MEMBERS.c.user_id == user_id)
                ).scalar_one()
                if memberships > MAX_GROUPS_PER_USER:
                    raise errors.quota("GroupsPerUser", MAX_GROUPS_PER_USER)
        except IntegrityError:
            pass  # added concurrently: the membership exists either way

    def remove_member(self, group_id: str, user_id: str) -> bool:
        """Remove a user from a group; False when the user was not in it."""
        with self._engine.begin() as conn:
            removed = conn.execute(
                delete(MEMBERS).where(MEMBERS.c.group_id == group_id).where(MEMBERS.c.user_id == user_id)
            ).rowcount
        return bool(removed)

    def members(self, group_id: str) -> list[Row[Any]]:
        """A group's users, by name."""
        with self._engine.connect() as conn:
            return list(
                conn.execute(
                    select(PRINCIPALS)
                    .join(MEMBERS, MEMBERS.c.user_id == PRINCIPALS.c.principal_id)
                    .where(MEMBERS.c.group_id == group_id)
                    .order_by(PRINCIPALS.c.name_lower)
                ).all()
            )

    def groups_of(self, user_id: str) -> list[Row[Any]]:
        """The groups a user belongs to, by name."""
        with self._engine.connect() as conn:
            return list(
                conn.execute(
                    select(PRINCIPALS)
                    .join(MEMBERS, MEMBERS.c.group_id == PRINCIPALS.c.principal_id)
                    .where(MEMBERS.c.user_id == user_id)
                    .order_by(PRINCIPALS.c.name_lower)
                ).all()
            )

    def account_created_at(self, account_id: str) -> float | None:
        """When the account was created: GetUser by the root reports it as the root's CreateDate."""
        with self._engine.connect() as conn:
            created = conn.execute(
                select(ACCOUNTS.c.created_at).where(ACCOUNTS.c.account_id == account_id)
            ).scalar()
        return None if created is None else float(created)

    def role_last_used(self, role_id: str) -> float | None:
        """When the role was last assumed (its latest STS session); None when it never was."""
        sessions = schema.sts_sessions
        with self._engine.connect() as conn:
            last = conn.execute(
                select(func.max(sessions.c.created_at)).where(sessions.c.role_id == role_id)
            ).scalar()
        return None if last is None else float(last)


def _find(conn: Connection, account_id: str, kind: str, name: str) -> Row[Any] | None:
    return conn.execute(
        select(PRINCIPALS)
        .where(PRINCIPALS.c.account_id == account_id)
        .where(PRINCIPALS.c.kind == kind)
        .where(PRINCIPALS.c.name_lower == name.lower())
    ).first()


def _by_id(conn: Connection, principal_id: str) -> Row[Any] | None:
    return conn.execute(select(PRINCIPALS).where(PRINCIPALS.c.principal_id == principal_id)).first()


def _count(conn: Connection, account_id: str, kind: str) -> int:
    return int(
        conn.execute(
            select(func.count())
            .select_from(PRINCIPALS)
            .where(PRINCIPALS.c.account_id == account_id)
            .where(PRINCIPALS.c.kind == kind)
        ).scalar_one()
    )


def _refuse_if_has_policies(conn: Connection, owner_id: str) -> None:
    if has_any(conn, select(INLINE.c.policy_name).where(INLINE.c.owner_id == owner_id)):
        raise errors.delete_conflict("Cannot delete entity, must delete policies first.")
    if has_any(conn, select(ATTACHMENTS.c.policy_arn).where(ATTACHMENTS.c.owner_id == owner_id)):
        raise errors.delete_conflict("Cannot delete entity, must detach all policies first.")
