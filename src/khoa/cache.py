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

Entries are refreshed ahead of their expiry, so that reads served from the caches on the event loop
do not all miss together when an entry lapses (each such miss moves its whole call to a request
thread: khoa.blocking; ~1% of GetSecretValue calls on PostgreSQL did, and they made its p99). In the
last quarter of an entry's life (:data:`REFRESH_SHARE`), the first read on the event loop that finds
it treats it as missing and so loads it afresh on a request thread, where the call, run again, loads
the key once more (the refresh this read claimed) and stores the new value; meanwhile the other reads
on the loop go on using the entry, which has not expired. Nothing is ever served past its lifetime:
a refresh only makes an entry younger, and a read off the loop whose key nobody claimed uses the
entry as it is.

An entry read from the database must never outlive a clear that came after the read began. On
PostgreSQL reads run on request threads, so without care a thread could read a row, the revoking
call commit and its node clear the caches, and only then the thread store the row it read: the node
that acknowledged the revocation would go on allowing for the entry's lifetime (README: a revocation
takes effect "at once on the node that made it"). So each cache counts its clears and invalidations
(ticks of one process-wide counter), and a value is stored only if nothing cleared the cache, or
invalidated its key, since its load began:

- :meth:`TTLCache.load` (key, loader) is the way to fill a cache: it takes the tick, calls the loader
  and stores its value only if the tick still stands;
- the older pattern, ``get`` (a miss) then the database, then ``put``, is kept as safe: a miss
  remembers, for the thread that missed, when it happened, and that thread's ``put`` of the key is
  dropped if the cache was cleared (or the key invalidated) since. A ``put`` with no miss before it
  on its thread stores its value as is: the caller vouches that it is current.
"""

from __future__ import annotations

import enum
import itertools
import threading
from collections.abc import Callable
from time import monotonic
from typing import Final, Generic, Literal, TypeVar

from khoa.blocking import is_on_the_loop

K = TypeVar("K")
V = TypeVar("V")

# KHOA_METADATA_CACHE_SECONDS' default (declared in khoa.settings; the stores' default for tests).
METADATA_SECONDS: Final = 1.0

# Ticks of every cache of the process: when a load began, when a cache was cleared or a key
# invalidated (``next`` on a count is atomic under the GIL; a tick is never handed out twice).
_TICKS = itertools.count(1)
# The misses a thread remembers (per cache) until their put: loads never nest this deep, and the
# oldest are those of reads abandoned without a put (a read tried on the event loop that went on to a
# request thread: khoa.blocking).
ARMED_PER_THREAD: Final = 64
# The last share of an entry's lifetime in which a read on the event loop has it refreshed.
REFRESH_SHARE: Final = 0.25
# Keys whose invalidation a cache remembers one by one (they matter only to loads in flight); past
# this many they are forgotten as one clear of the loads in flight (their entries stay).
INVALIDATIONS_KEPT: Final = 1024


class Missing(enum.Enum):
    """What :meth:`TTLCache.get` returns for a key it does not hold (``None`` is a value worth caching:
    "no such key"). Compare with ``is MISSING``; type checkers narrow on it."""

    MISSING = enum.auto()


MISSING: Final = Missing.MISSING


class TTLCache(Generic[K, V]):
    """Entries live ``ttl`` seconds (0: nothing is kept); at ``max_size`` entries the cache is emptied.

    A value loaded while the cache was cleared, or its key invalidated, is not stored (see the module
    docstring): fill the cache with :meth:`load`, or with ``get`` then ``put`` on one thread."""

    __slots__ = (
        "_claims",
        "_cleared",
        "_entries",
        "_invalidated",
        "_lock",
        "_misses",
        "_window",
        "max_size",
        "ttl",
    )

    def __init__(self, ttl: float, max_size: int = 100_000) -> None:
        self.ttl = ttl
        self.max_size = max_size
        self._entries: dict[K, tuple[float, V]] = {}
        # The last part of an entry's life in which it is refreshed ahead (see the module docstring),
        # and the keys whose refresh a read on the loop has claimed (key → when).
        self._window = ttl * REFRESH_SHARE
        self._claims: dict[K, float] = {}
        self._lock = threading.Lock()  # a store's check and write, against a clear or invalidation
        self._cleared = next(_TICKS)  # the tick of the latest clear
        self._invalidated: dict[K, int] = {}  # key → the tick of its latest invalidation since then
        self._misses = threading.local()  # .keys: key → the tick of this thread's latest miss of it

    def get(self, key: K) -> V | Literal[Missing.MISSING]:
        entry = self._entries.get(key)
        if entry is not None:
            now = monotonic()
            left = entry[0] - now
            if left > self._window or (left > 0 and not self._refreshes(key, now)):
                return entry[1]
        self._missed(key)
        return MISSING

    def load(self, key: K, loader: Callable[[], V]) -> V:
        """The key's value: the entry's, or ``loader()``'s, stored unless the cache was cleared or the
        key invalidated while the loader ran (the value is returned either way: it is what the
        database said when asked, but it may no longer be true for the next request)."""
        entry = self._entries.get(key)
        if entry is not None:
            now = monotonic()
            left = entry[0] - now
            if left > self._window or (left > 0 and not self._refreshes(key, now)):
                return entry[1]
        started = next(_TICKS)
        value = loader()
        self._store(key, value, started)
        return value

    def put(self, key: K, value: V) -> None:
        """Store ``value``; dropped if this thread missed the key (``get``) before the cache was last
        cleared or the key invalidated. Prefer :meth:`load`."""
        misses: dict[K, int] | None = getattr(self._misses, "keys", None)
        started = misses.pop(key, None) if misses else None
        self._store(key, value, started)

    def _refreshes(self, key: K, now: float) -> bool:
        """Whether a read of ``key``, whose entry is in the last part of its life, loads it afresh: on
        the event loop, the first read to find it so (it claims the refresh, and goes to a request
        thread to load); off the loop, a read whose key a read on the loop claimed (that call, run
        again there). A claim lapses after the refresh window (a refresh that failed)."""
        claimed = self._claims.get(key)
        if not is_on_the_loop():
            return claimed is not None
        if claimed is not None and now - claimed < self._window:
            return False  # another call is refreshing it: the entry is still good meanwhile
        if len(self._claims) >= INVALIDATIONS_KEPT:
            self._claims.clear()
        self._claims[key] = now
        return True

    def _missed(self, key: K) -> None:
        misses: dict[K, int] | None = getattr(self._misses, "keys", None)
        if misses is None:
            misses = self._misses.keys = {}
        misses.pop(key, None)  # (the newest last)
        misses[key] = next(_TICKS)
        if len(misses) > ARMED_PER_THREAD:
            del misses[next(iter(misses))]

    def _store(self, key: K, value: V, started: int | None) -> None:
        """Store unless a clear or an invalidation of the key came after tick ``started`` (None: the
        caller vouches that the value is current)."""
        if self.ttl <= 0:
            return
        with self._lock:
            if started is not None and (self._cleared > started or self._invalidated.get(key, 0) > started):
                return
            if len(self._entries) >= self.max_size:
                self._entries.clear()
            self._entries[key] = (monotonic() + self.ttl, value)
            self._claims.pop(key, None)

    def invalidate(self, key: K) -> None:
        """Forget the key's entry, and any value of it being loaded now."""
        with self._lock:
            self._entries.pop(key, None)
            self._claims.pop(key, None)
            if len(self._invalidated) >= INVALIDATIONS_KEPT:
                self._forget_invalidations()
            self._invalidated[key] = next(_TICKS)

    def clear(self) -> None:
        """Forget every entry, and every value being loaded now."""
        with self._lock:
            self._entries.clear()
            self._claims.clear()
            self._forget_invalidations()

    def _forget_invalidations(self) -> None:
        # (under the lock) one tick later than each of them, so it stands for them all
        self._invalidated.clear()
        self._cleared = next(_TICKS)

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
