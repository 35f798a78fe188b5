"""What grants an entity permissions: its inline policies and its managed-policy attachments (and who
uses a managed policy, as attachment or as permissions boundary)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, Row, delete, func, insert, select
from sqlalchemy.exc import IntegrityError

from khoa.services.iam import documents, errors
from khoa.services.iam.store.policies import hold_in_use
from khoa.services.iam.store.tables import ATTACHMENTS, INLINE, MANAGED, PRINCIPALS, lock_principal

MAX_ATTACHED = 10


class PermissionStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    # -- inline policies ---------------------------------------------------------------------------------

    def put_inline(self, owner: Row[Any], policy_name: str, document: str, size_limit: int) -> None:
        """Add or replace an inline policy, refusing (LimitExceeded) when the owner's inline policies
        together would exceed ``size_limit`` characters other than whitespace."""
        owner_id = owner.principal_id
        with self._engine.begin() as conn:
            others = conn.execute(
                select(INLINE.c.document)
                .where(INLINE.c.owner_id == owner_id)
                .where(INLINE.c.policy_name != policy_name)
            ).scalars()
            if sum(documents.size(d) for d in others) + documents.size(document) > size_limit:
                raise errors.limit_exceeded(
                    f"Maximum policy size of {size_limit} bytes exceeded for {owner.kind} {owner.name}"
                )
            conn.execute(
                delete(INLINE).where(INLINE.c.owner_id == owner_id).where(INLINE.c.policy_name == policy_name)
            )
            conn.execute(insert(INLINE).values(owner_id=owner_id, policy_name=policy_name, document=document))

    def inline_document(self, owner_id: str, policy_name: str) -> str | None:
        with self._engine.connect() as conn:
            document = conn.execute(
                select(INLINE.c.document)
                .where(INLINE.c.owner_id == owner_id)
                .where(INLINE.c.policy_name == policy_name)
            ).scalar()
        return None if document is None else str(document)

    def delete_inline(self, owner_id: str, policy_name: str) -> bool:
        """Delete an inline policy; False when there was none of that name."""
        with self._engine.begin() as conn:
            deleted = conn.execute(
                delete(INLINE).where(INLINE.c.owner_id == owner_id).where(INLINE.c.policy_name == policy_name)
            ).rowcount
        return bool(deleted)

    def inline_names(self, owner_id: str) -> list[str]:
        with self._engine.connect() as conn:
            return list(
                conn.execute(
                    select(INLINE.c.policy_name)
                    .where(INLINE.c.owner_id == owner_id)
                    .order_by(INLINE.c.policy_name)
                ).scalars()
            )

    # -- managed policy attachments ----------------------------------------------------------------------

    def attach(self, owner_id: str, policy_arn: str, quota_name: str) -> None:
        """Attach a managed policy (attaching twice is not an error); at most ``MAX_ATTACHED``."""
        try:
            with self._engine.begin() as conn:
                lock_principal(conn, owner_id)
                hold_in_use(conn, policy_arn)  # not deleted meanwhile, nor while this commits
                conn.execute(insert(ATTACHMENTS).values(owner_id=owner_id, policy_arn=policy_arn))
                attached = conn.execute(
                    select(func.count()).select_from(ATTACHMENTS).where(ATTACHMENTS.c.owner_id == owner_id)
                ).scalar_one()
                if attached > MAX_ATTACHED:
                    raise errors.quota(quota_name, MAX_ATTACHED)
        except IntegrityError:
            pass  # attached concurrently: attaching twice is not an error

    def detach(self, owner_id: str, policy_arn: str) -> bool:
        """Detach a managed policy; False when it was not attached."""
        with self._engine.begin() as conn:
            removed = conn.execute(
                delete(ATTACHMENTS)
                .where(ATTACHMENTS.c.owner_id == owner_id)
                .where(ATTACHMENTS.c.policy_arn == policy_arn)
            ).rowcount
        return bool(removed)

    def attached(self, owner_id: str) -> list[Row[Any]]:
        """The managed policies attached to an entity (name, arn, path), by name."""
        with self._engine.connect() as conn:
            return list(
                conn.execute(
                    select(MANAGED.c.name, MANAGED.c.arn, MANAGED.c.path)
                    .join(ATTACHMENTS, ATTACHMENTS.c.policy_arn == MANAGED.c.arn)
                    .where(ATTACHMENTS.c.owner_id == owner_id)
                    .order_by(func.lower(MANAGED.c.name))
                ).all()
            )

    def users_of_policy(
        self, account_id: str, policy_arn: str, *, as_attachment: bool, as_boundary: bool
    ) -> list[Row[Any]]:
        """The account's entities that have the policy attached and/or use it as their boundary
        (each once, in no particular order)."""
        found: dict[str, Row[Any]] = {}
        with self._engine.connect() as conn:
            if as_attachment:
                for row in conn.execute(
                    select(PRINCIPALS)
                    .join(ATTACHMENTS, ATTACHMENTS.c.owner_id == PRINCIPALS.c.principal_id)
                    .where(ATTACHMENTS.c.policy_arn == policy_arn)
                    .where(PRINCIPALS.c.account_id == account_id)
                ).all():
                    found[row.principal_id] = row
            if as_boundary:
                for row in conn.execute(
                    select(PRINCIPALS)
                    .where(PRINCIPALS.c.permissions_boundary == policy_arn)
                    .where(PRINCIPALS.c.account_id == account_id)
                ).all():
                    found[row.principal_id] = row
        return list(found.values())
