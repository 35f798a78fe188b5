"""Tags of KMS keys (the tags a new key is created with are written by ``KeyStore.insert``)."""

from __future__ import annotations

from sqlalchemy import Engine, delete, insert, select, update

from khoa.cache import METADATA_SECONDS, MISSING, TTLCache
from khoa.protocol.errors import AWSError
from khoa.services.kms import errors
from khoa.storage import schema
from khoa.storage.database import in_chunks

MAX_TAGS_PER_KEY = 50
# A policy names a tag key without case (aws:ResourceTag/env): two keys differing only in case would
# leave one value unchecked by it.
CASE_VARIANTS = "Tag keys must differ by more than case: a policy condition cannot tell them apart."
_TAGS = schema.kms_tags
_KEYS = schema.kms_keys


def too_many_tags() -> AWSError:
    """The TagException for a key that would have more than ``MAX_TAGS_PER_KEY`` tags."""
    return errors.tag_error(f"A KMS key can have at most {MAX_TAGS_PER_KEY} tags")


class TagStore:
    """Tag reads are cached ``cache_seconds`` (KHOA_METADATA_CACHE_SECONDS): every call an IAM
    principal makes on a key reads its tags for the policy context (aws:ResourceTag). This process's
    writes forget the key's entry; a tag change also moves the node's revocation epoch, which empties
    every process's caches (khoa.server.pipeline)."""

    def __init__(self, engine: Engine, cache_seconds: float = METADATA_SECONDS) -> None:
        self._engine = engine
        self._cache: TTLCache[str, dict[str, str]] = TTLCache(cache_seconds)

    def of(self, key_id: str) -> dict[str, str]:
        """Every tag of the key, key → value (the caller's own copy)."""
        cached = self._cache.get(key_id)
        if cached is not MISSING:
            return dict(cached)
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(_TAGS.c.tag_key, _TAGS.c.tag_value).where(_TAGS.c.key_id == key_id)
            ).all()
        tags = {r[0]: r[1] for r in rows}
        self._cache.put(key_id, dict(tags))
        return tags

    def clear_cache(self) -> None:
        self._cache.clear()

    def put(self, key_id: str, tags: dict[str, str]) -> None:
        """Add or overwrite tags. The quota is checked against the stored tags inside the writing
        transaction; more than ``MAX_TAGS_PER_KEY`` in all raises TagException and writes nothing.
        Its first statement locks the key's row (a write that changes nothing: on PostgreSQL the row
        lock, on SQLite the database's write lock), so the tags it counts are those no concurrent
        TagResource can add to before it commits (two calls of 30 tags each left a key with 60)."""
        self._cache.invalidate(key_id)
        with self._engine.begin() as conn:
            conn.execute(update(_KEYS).where(_KEYS.c.key_id == key_id).values(state=_KEYS.c.state))
            existing = set(conn.execute(select(_TAGS.c.tag_key).where(_TAGS.c.key_id == key_id)).scalars())
            if len(existing | set(tags)) > MAX_TAGS_PER_KEY:
                raise too_many_tags()
            held = {key.lower(): key for key in existing}
            if any(held.get(key.lower(), key) != key for key in tags):
                raise errors.tag_error(CASE_VARIANTS)
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
        self._cache.invalidate(key_id)

    def remove(self, key_id: str, tag_keys: list[str]) -> None:
        """Remove the tags ``tag_keys`` (any number: UntagResource's have no maximum), in one
        transaction of bounded statements (in_chunks)."""
        self._cache.invalidate(key_id)
        with self._engine.begin() as conn:
            for chunk in in_chunks(tag_keys):
                conn.execute(delete(_TAGS).where(_TAGS.c.key_id == key_id).where(_TAGS.c.tag_key.in_(chunk)))
        self._cache.invalidate(key_id)

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
