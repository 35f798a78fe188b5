"""Tags of users, roles and customer-managed policies (keys are case-insensitive)."""

from __future__ import annotations

from sqlalchemy import Engine

from khoa.services.iam.store.tables import remove_tags, tags_of, write_tags


class TagStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def of(self, owner_id: str) -> list[dict[str, str]]:
        """The owner's tags as IAM returns them (``Key``/``Value``), ordered by key."""
        with self._engine.connect() as conn:
            return tags_of(conn, owner_id)

    def tag(self, owner_id: str, tags: list[dict[str, str]], quota_name: str) -> None:
        """Add or replace tags; more than fifty in all raises the ``quota_name`` LimitExceeded."""
        with self._engine.begin() as conn:
            write_tags(conn, owner_id, tags, quota_name)

    def untag(self, owner_id: str, keys: list[str]) -> None:
        with self._engine.begin() as conn:
            remove_tags(conn, owner_id, keys)
