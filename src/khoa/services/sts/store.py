"""Where STS's SQL lives: the role an AssumeRole names, the managed session policies it passes, and
the sessions it starts (secrets sealed by the barrier, tokens kept only as digests)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Row, select

from khoa.auth.sessions import SessionCredentials, issue_session
from khoa.crypto.barrier import Barrier
from khoa.crypto.fingerprint import Fingerprinter
from khoa.storage import schema


class StsStore:
    def __init__(self, engine: Engine, barrier: Barrier, fingerprinter: Fingerprinter | None = None) -> None:
        self._engine = engine
        self._barrier = barrier
        self._fingerprinter = fingerprinter  # new sessions' leak fingerprints (khoa-leaks)

    def role(self, account_id: str, role_arn: str) -> Row[Any] | None:
        """The role of ``account_id`` with exactly this ARN (path included), if any."""
        table = schema.iam_principals
        with self._engine.connect() as conn:
            return conn.execute(
                select(table)
                .where(table.c.account_id == account_id)
                .where(table.c.kind == "role")
                .where(table.c.arn == role_arn)
            ).first()

    def tags(self, principal_id: str) -> dict[str, str]:
        """The tags of the user or role ``principal_id`` (AssumeRole's aws:ResourceTag facts)."""
        table = schema.iam_tags
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(table.c.tag_key, table.c.tag_value).where(table.c.owner_id == principal_id)
            ).all()
        return {key: value for key, value in rows}

    def policy_document(self, policy_arn: str, account_id: str) -> str | None:
        """The default version's document of ``account_id``'s customer-managed policy ``policy_arn``."""
        managed = schema.iam_managed_policies
        versions = schema.iam_policy_versions
        with self._engine.connect() as conn:
            document = conn.execute(
                select(versions.c.document)
                .join(managed, managed.c.arn == versions.c.policy_arn)
                .where(managed.c.arn == policy_arn)
                .where(managed.c.account_id == account_id)
                .where(versions.c.version_id == managed.c.default_version)
            ).scalar()
        return None if document is None else str(document)

    def start_session(
        self,
        *,
        account_id: str,
        role_id: str,
        role_arn: str,
        session_name: str,
        now: datetime,
        duration_seconds: int,
        session_policy: str | None,
        session_tags: dict[str, str] | None,
        source_identity: str | None,
        transitive_tag_keys: list[str] | None = None,
    ) -> SessionCredentials:
        """Store a new role session and return its credentials (the only time the secret is seen)."""
        return issue_session(
            self._engine,
            self._barrier,
            account_id=account_id,
            role_id=role_id,
            role_arn=role_arn,
            session_name=session_name,
            now=now,
            duration_seconds=duration_seconds,
            session_policy=session_policy,
            session_tags=session_tags,
            source_identity=source_identity,
            transitive_tag_keys=transitive_tag_keys,
            fingerprinter=self._fingerprinter,
        )
