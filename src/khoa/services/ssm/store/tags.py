"""Tags of parameters: at most fifty each, the quota checked inside the writing transaction."""

from __future__ import annotations

from sqlalchemy import Engine, delete, insert, select, update

from khoa.cache import METADATA_SECONDS, MISSING, TTLCache
from khoa.services.ssm import errors
from khoa.services.ssm.store.records import TAGS
from khoa.storage.database import in_chunks

MAX_TAGS = 50


class TagStore:
    """Tag reads are cached ``cache_seconds`` (KHOA_METADATA_CACHE_SECONDS): every call an IAM
    principal makes on a parameter reads its tags for the policy context (aws:ResourceTag). Parameter
    Store's writes empty this process's caches (ParameterStore.invalidate_all); a tag change also
    moves the node's revocation epoch, which empties every process's caches (khoa.server.pipeline)."""

    def __init__(self, engine: Engine, cache_seconds: float = METADATA_SECONDS) -> None:
        self._engine = engine
        self._cache: TTLCache[str, dict[str, str]] = TTLCache(cache_seconds)

    def of(self, param_id: str) -> dict[str, str]:
        """The parameter's tags, key to value, in key order (the caller's own copy)."""
        cached = self._cache.get(param_id)
        if cached is not MISSING:
            return dict(cached)
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(TAGS.c.tag_key, TAGS.c.tag_value)
                .where(TAGS.c.param_id == param_id)
                .order_by(TAGS.c.tag_key)
            ).all()
        tags = {key: value for key, value in rows}
        self._cache.put(param_id, dict(tags))
        return tags

    def clear_cache(self) -> None:
        self._cache.clear()

    def add(self, param_id: str, tags: dict[str, str]) -> None:
        """Add or replace tags. More than ``MAX_TAGS`` in all raises TooManyTagsError, counted inside
        the writing transaction together with the tags already there."""
        self._cache.invalidate(param_id)
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
        self._cache.invalidate(param_id)

    def remove(self, param_id: str, keys: list[str]) -> None:
        """Remove the tags with these keys; keys the parameter doesn't have are ignored. Any number of
        keys (RemoveTagsFromResource's have no maximum), in one transaction of bounded statements."""
        self._cache.invalidate(param_id)
        with self._engine.begin() as conn:
            for chunk in in_chunks(keys):
                conn.execute(delete(TAGS).where(TAGS.c.param_id == param_id).where(TAGS.c.tag_key.in_(chunk)))
        self._cache.invalidate(param_id)
