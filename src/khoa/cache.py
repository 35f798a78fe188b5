"""The one time-bounded cache behind every per-process cache of the hot path.

Used for access keys (``KHOA_CREDENTIAL_CACHE_SECONDS``), callers' IAM policies
(``KHOA_POLICY_CACHE_SECONDS``) and KMS key rows, aliases, secret and parameter metadata
(``KHOA_METADATA_CACHE_SECONDS``); README "Cache lifetimes" says what each lifetime bounds. Each
process invalidates its own entries when it writes, and ``Runtime.clear_caches`` empties them all when
the node's revocation epoch moves; entries written by other processes expire within the lifetime, so a
change made on one node is seen on every node within that time — the same eventual consistency AWS
documents for KMS key state and Secrets Manager.

A lookup is one dict get and one clock read: these caches are hit on every request. cachetools'
``TTLCache`` was the alternative: its lookup also reorders an LRU list and reads the clock through a
Python-level timer object (a hit measured ~1.1 µs with cachetools 8.0.0 against ~0.14 µs here, timeit,
Python 3.11), and nothing here needs LRU order: a full cache is simply emptied.
"""

from __future__ import annotations

import enum
from time import monotonic
from typing import Final, Generic, Literal, TypeVar

K = TypeVar("K")
V = TypeVar("V")

# KHOA_METADATA_CACHE_SECONDS' default (declared in khoa.settings; the stores' default for tests).
METADATA_SECONDS: Final = 1.0


class Missing(enum.Enum):
    """What :meth:`TTLCache.get` returns for a key it does not hold (``None`` is a value worth caching:
    "no such key"). Compare with ``is MISSING``; type checkers narrow on it."""

    MISSING = enum.auto()


MISSING: Final = Missing.MISSING


class TTLCache(Generic[K, V]):
    """Entries live ``ttl`` seconds (0: nothing is kept); at ``max_size`` entries the cache is emptied."""

    __slots__ = ("_entries", "max_size", "ttl")

    def __init__(self, ttl: float, max_size: int = 100_000) -> None:
        self.ttl = ttl
        self.max_size = max_size
        self._entries: dict[K, tuple[float, V]] = {}

    def get(self, key: K) -> V | Literal[Missing.MISSING]:
        entry = self._entries.get(key)
        if entry is None or entry[0] <= monotonic():
            return MISSING
        return entry[1]

    def put(self, key: K, value: V) -> None:
        if self.ttl <= 0:
            return
        if len(self._entries) >= self.max_size:
            self._entries.clear()
        self._entries[key] = (monotonic() + self.ttl, value)

    def invalidate(self, key: K) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


R = TypeVar("R")


def private_copy(record: R) -> R:
    """A shallow copy of a cached record (a plain dataclass) for a caller that may change its fields:
    the cache's own entry stays as stored. Four times cheaper than ``dataclasses.replace``, which
    runs ``__init__`` field by field (a hit is taken on every request)."""
    copied = object.__new__(type(record))
    copied.__dict__.update(record.__dict__)
    return copied
