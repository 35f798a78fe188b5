"""The per-principal rate limit of khoa-leaks: a token bucket per caller, kept in the database.

CheckLeakedValues is an oracle (it answers whether a guess is a value Khoa holds), so a caller gets
``capacity`` calls at once and ``capacity`` more every ``period`` seconds; beyond that the call is
refused with ThrottlingException (recorded in the trail like any refused call, where the
``leak-check-burst`` alert rule sees it). The bucket is a row (store.take_token), so the rate is the
principal's whichever process or node answers. The caller is its identity (authtable.rate_key): all
sessions of a role share the role's bucket.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

from khoa.services.leaks import errors
from khoa.services.leaks.store import LeakStore

DEFAULT_CAPACITY = 20
DEFAULT_PERIOD_SECONDS = 10.0


class RateLimiter:
    """Token buckets keyed by identity (a user's, role's or root's ARN); ``take`` raises
    ThrottlingException when one is empty."""

    def __init__(
        self,
        store: LeakStore,
        capacity: int = DEFAULT_CAPACITY,
        period_seconds: float = DEFAULT_PERIOD_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.capacity = float(capacity)
        self.rate = capacity / period_seconds  # tokens per second
        self._clock = clock

    def take(self, principal: str) -> None:
        key = hashlib.sha256(principal.encode()).hexdigest()
        if not self.store.take_token(key, self._clock(), self.capacity, self.rate):
            raise errors.throttled()
