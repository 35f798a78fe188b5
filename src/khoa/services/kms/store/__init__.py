"""Where every SQL statement and transaction of KMS lives; handlers call these intention-revealing
methods and never see a connection.

One store per kind of thing: ``keys`` (keys, their sealed material versions, and the per-process
caches of key rows, opened material and alias targets), ``aliases``, ``grants``, ``tags``,
``imports`` (import tokens' wrapping keys) and ``usage`` (the audit-trail read behind
GetKeyLastUsage). A write that must be atomic is one method with one transaction: a new key with its
material and tags (``KeyStore.insert``), a key destroyed with everything that names it
(``KeyStore.destroy``), the tag quota checked inside the tag write (``TagStore.put``).
"""

from __future__ import annotations

from sqlalchemy import Engine

from khoa.audit.usage import UsageReader
from khoa.cache import METADATA_SECONDS
from khoa.crypto.barrier import Barrier
from khoa.services.kms.store.aliases import AliasRecord, AliasStore
from khoa.services.kms.store.custom_key_stores import CustomKeyStoreRecord, CustomKeyStoreStore
from khoa.services.kms.store.grants import GrantStore
from khoa.services.kms.store.imports import ImportParameters, ImportStore
from khoa.services.kms.store.keys import (
    KeyChanged,
    KeyRecord,
    KeyStore,
    MaterialMismatch,
    VersionLimitReached,
    VersionRecord,
    key_arn,
    new_material_id,
)
from khoa.services.kms.store.tags import MAX_TAGS_PER_KEY, TagStore, too_many_tags

__all__ = [
    "MAX_TAGS_PER_KEY",
    "AliasRecord",
    "AliasStore",
    "CustomKeyStoreRecord",
    "CustomKeyStoreStore",
    "GrantStore",
    "ImportParameters",
    "ImportStore",
    "KeyChanged",
    "KeyRecord",
    "KeyStore",
    "KmsStore",
    "MaterialMismatch",
    "TagStore",
    "VersionLimitReached",
    "VersionRecord",
    "key_arn",
    "new_material_id",
    "too_many_tags",
]


class KmsStore:
    """All of KMS's storage, over one database engine; key material is sealed with ``barrier`` and
    the key store's caches live ``cache_seconds``."""

    def __init__(self, engine: Engine, barrier: Barrier, cache_seconds: float = METADATA_SECONDS) -> None:
        self.keys = KeyStore(engine, barrier, cache_seconds)
        self.aliases = AliasStore(engine, self.keys.alias_targets, cache_seconds)
        self.grants = GrantStore(engine)
        self.tags = TagStore(engine, cache_seconds)
        self.imports = ImportStore(engine)
        self.usage = UsageReader(engine)  # the last-use tables the leader keeps from the trail
        self.custom_key_stores = CustomKeyStoreStore(engine, barrier)

    def clear_caches(self) -> None:
        """Empty this process's caches of key rows, opened material, aliases and tags."""
        self.keys.clear_cache()
        self.aliases.clear_cache()
        self.tags.clear_cache()
