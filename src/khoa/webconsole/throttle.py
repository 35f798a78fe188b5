"""Failed console sign-ins, counted per client address: past a limit the address must wait.

A secret access key cannot be guessed, but a form that answers every guess is still a way to make the
server sign, evaluate and record calls as fast as a script can post. After ``limit`` refused sign-ins
within ``window`` seconds an address is answered 429 until the window has passed. Counted per worker
process (in memory): a brake, not an account lockout, so it never locks a principal out from
elsewhere.
"""

from __future__ import annotations

import threading
import time
from collections import deque

LIMIT = 10
WINDOW_SECONDS = 60.0
_TRACKED = 10_000  # addresses remembered at most (the oldest are forgotten first)


class FailedSignIns:
    def __init__(self, limit: int = LIMIT, window_seconds: float = WINDOW_SECONDS) -> None:
        self.limit = limit
        self.window = window_seconds
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()  # console pages run on several threads

    def blocked(self, address: str, now: float | None = None) -> bool:
        """Whether ``address`` has used up its failed sign-ins for now."""
        now = time.monotonic() if now is None else now
        with self._lock:
            recent = self._failures.get(address)
            if recent is None:
                return False
            while recent and recent[0] <= now - self.window:
                recent.popleft()
            if not recent:
                del self._failures[address]
                return False
            return len(recent) >= self.limit

    def failed(self, address: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            if address not in self._failures and len(self._failures) >= _TRACKED:
                del self._failures[next(iter(self._failures))]
            self._failures.setdefault(address, deque(maxlen=self.limit)).append(now)
