"""Tags of parameters: at most fifty each, the quota checked inside the writing transaction."""

from __future__ import annotations

from sqlalchemy import Engine, delete, insert, select, update

from khoa.services.ssm import errors
from khoa.services.ssm.store.records import TAGS

MAX_TAGS = 50


class TagStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def of(self, param_id: str) -> dict[str, str]:
        """The parameter's tags, key to value, in key order."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(TAGS.c.tag_key, TAGS.c.tag_value)
                .where(TAGS.c.param_id == param_id)
                .order_by(TAGS.c.tag_key)
            ).all()
        return {key: value for key, value in rows}

    def add(self, param_id: str, tags: dict[str, str]) -> None:
        """Add or replace tags. More than ``MAX_TAGS`` in all raises TooManyTagsError, counted inside
        the writing transaction together with the tags already there."""
        with self._engine.begin() as conn:
            existing = set(conn.execute(select(TAGS.c.tag_key).where(TAGS.c.param_id == param_id)).scalars())
            if len(existing | set(tags)) > MAX_TAGS:
                raise errors.too_many_tags(MAX_TAGS)
            for key, value in tags.items():
                if key in existing:
                    conn.execute(
                        update(TAGS)
                        .where(TAGS.c.param_id == param_id)
                        .where(TAGS.c.tag_key == key)
                        .values(tag_value=value)
                    )
                else:
                    conn.execute(insert(TAGS).values(param_id=param_id, tag_key=key, tag_value=value))

    def remove(self, param_id: str, keys: list[str]) -> None:
        """Remove the tags with these keys; keys the parameter doesn't have are ignored."""
        with self._engine.begin() as conn:
            conn.execute(delete(TAGS).where(TAGS.c.param_id == param_id).where(TAGS.c.tag_key.in_(keys)))
