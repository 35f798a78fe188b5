"""Tags of KMS keys (the tags a new key is created with are written by ``KeyStore.insert``)."""

from __future__ import annotations

from sqlalchemy import Engine, delete, insert, select, update

from khoa.protocol.errors import AWSError
from khoa.services.kms import errors
from khoa.storage import schema

MAX_TAGS_PER_KEY = 50
_TAGS = schema.kms_tags


def too_many_tags() -> AWSError:
    """The TagException for a key that would have more than ``MAX_TAGS_PER_KEY`` tags."""
    return errors.tag_error(f"A KMS key can have at most {MAX_TAGS_PER_KEY} tags")


class TagStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def of(self, key_id: str) -> dict[str, str]:
        """Every tag of the key, key → value."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(_TAGS.c.tag_key, _TAGS.c.tag_value).where(_TAGS.c.key_id == key_id)
            ).all()
        return {r[0]: r[1] for r in rows}

    def put(self, key_id: str, tags: dict[str, str]) -> None:
        """Add or overwrite tags. The quota is checked against the stored tags inside the writing
        transaction; more than ``MAX_TAGS_PER_KEY`` in all raises TagException and writes nothing."""
        with self._engine.begin() as conn:
            existing = set(conn.execute(select(_TAGS.c.tag_key).where(_TAGS.c.key_id == key_id)).scalars())
            if len(existing | set(tags)) > MAX_TAGS_PER_KEY:
                raise too_many_tags()
            for tag_key, value in tags.items():
                if tag_key in existing:
                    conn.execute(
                        update(_TAGS)
                        .where(_TAGS.c.key_id == key_id)
                        .where(_TAGS.c.tag_key == tag_key)
                        .values(tag_value=value)
                    )
                else:
                    conn.execute(insert(_TAGS).values(key_id=key_id, tag_key=tag_key, tag_value=value))

    def remove(self, key_id: str, tag_keys: list[str]) -> None:
        with self._engine.begin() as conn:
            conn.execute(delete(_TAGS).where(_TAGS.c.key_id == key_id).where(_TAGS.c.tag_key.in_(tag_keys)))

    def page(self, key_id: str, limit: int, offset: int) -> list[tuple[str, str]]:
        """Up to ``limit`` (tag key, value) pairs of the key, by tag key, from ``offset``."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(_TAGS.c.tag_key, _TAGS.c.tag_value)
                .where(_TAGS.c.key_id == key_id)
                .order_by(_TAGS.c.tag_key)
                .limit(limit)
                .offset(offset)
            ).all()
        return [(r[0], r[1]) for r in rows]
