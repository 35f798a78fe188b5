"""Rate-limited logging for errors that repeat on every request or pass.

During an outage (a database that refuses, a full disk) the same failure happens on every request:
logging a traceback each time floods the log (megabytes a minute) and buries the first, useful
report. A :class:`LogLimiter` logs the first occurrence of each kind of error in full, then at most
once per interval, saying how many were left out since the previous line.

Each user holds its own limiter (no module-level state); it is thread-safe, since the audit writer,
the job runner and the event loop all log through their own threads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_INTERVAL_SECONDS = 60.0
# Keys kept at most (an error's key is chosen by its caller: a fixed site name plus an exception type).
_MAX_KEYS = 256


@dataclass
class _Seen:
    logged_at: float
    suppressed: int = 0


class LogLimiter:
    """Logs each key at most once per ``interval`` seconds, with a count of the lines left out."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = DEFAULT_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self._seen: dict[str, _Seen] = {}
        self._lock = threading.Lock()

    def _admit(self, key: str) -> int | None:
        """None to stay quiet; otherwise how many occurrences were left out before this one."""
        now = self.clock()
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen.logged_at < self.interval:
                seen.suppressed += 1
                return None
            suppressed = seen.suppressed if seen is not None else 0
            if seen is None and len(self._seen) >= _MAX_KEYS:
                self._seen.pop(next(iter(self._seen)))
            self._seen[key] = _Seen(now)
            return suppressed

    def log(self, level: int, key: str, message: str, *args: object, exc_info: bool = False) -> bool:
        """Log ``message % args`` unless ``key`` was logged within the interval; True when logged.

        A traceback (``exc_info``) is attached only to the lines that are logged, so one per interval.
        """
        suppressed = self._admit(key)
        if suppressed is None:
            return False
        if suppressed:
            message += " (and %d more like it in the last %.0f s)"
            args = (*args, suppressed, self.interval)
        self.logger.log(level, message, *args, exc_info=exc_info)
        return True

    def error(self, key: str, message: str, *args: object) -> bool:
        return self.log(logging.ERROR, key, message, *args)

    def warning(self, key: str, message: str, *args: object) -> bool:
        return self.log(logging.WARNING, key, message, *args)

    def exception(self, key: str, message: str, *args: object) -> bool:
        """Like :meth:`logging.Logger.exception`: an ERROR with the current traceback."""
        return self.log(logging.ERROR, key, message, *args, exc_info=True)

    def recovered(self, key: str, message: str, *args: object) -> None:
        """Forget ``key`` (its failure is over), logging ``message`` at INFO if it had been seen, so the
        next failure is reported in full at once."""
        with self._lock:
            seen = self._seen.pop(key, None)
        if seen is not None:
            if seen.suppressed:
                message += " (after %d more failures not logged)"
                args = (*args, seen.suppressed)
            self.logger.info(message, *args)
