"""A tiny time-bounded cache for hot reads (key rows, aliases, secret metadata).

Each process invalidates its own entries when it writes; entries written by other processes expire
within the TTL (one second by default), so a change made on one node is seen on every node within
that time — the same eventual consistency AWS documents for KMS key state and Secrets Manager.
"""

from __future__ import annotations

import time
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")
DEFAULT_TTL_SECONDS = 1.0


class _Missing:
    pass


MISSING = _Missing()


class TTLCache(Generic[K, V]):
    def __init__(self, ttl: float = DEFAULT_TTL_SECONDS, max_size: int = 100_000) -> None:
        self.ttl = ttl
        self.max_size = max_size
        self._entries: dict[K, tuple[float, V]] = {}

    def get(self, key: K) -> V | _Missing:
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            return MISSING
        return entry[1]

    def put(self, key: K, value: V) -> None:
        if self.ttl <= 0:
            return
        if len(self._entries) >= self.max_size:
            self._entries.clear()
        self._entries[key] = (time.monotonic() + self.ttl, value)

    def invalidate(self, key: K) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()
