"""Request and audit event identifiers.

Every API call takes a request ID and an audit event ID. ``uuid.uuid4()`` asks the kernel for 16
random bytes each time, and ``os.urandom`` releases the GIL around that system call: on a busy
server each release lets the audit writer's thread take the interpreter from the event loop. An
:class:`IdSource` draws the same kernel randomness 4 KiB at a time instead.

Audit event IDs are time-ordered (RFC 9562 UUID version 7: 48 bits of Unix milliseconds, then
random bits), so each new event lands at the right-hand end of the ``event_id`` index rather than
on a random page of it: with random IDs every group commit rewrote one index page per event.
CloudTrail only promises that an eventID is a GUID; a version 7 UUID is one.

Both forms are assembled from hexadecimal text rather than through a 128-bit integer (this runs
twice per call): the pool is kept as hex digits, the version is a literal digit, and the variant's
two bits replace the top two bits of one random digit (``_VARIANT``).
"""

from __future__ import annotations

import os
import threading
import time

_POOL_BYTES = 4096
_MILLIS_MASK = (1 << 48) - 1
# A random hex digit with its top two bits replaced by RFC 9562's variant, 0b10.
_VARIANT = {f"{n:x}": "89ab"[n & 0b11] for n in range(16)}


def time_ordered_uuid(entropy: bytes, now_ns: int | None = None) -> str:
    """A version 7 UUID from 10 bytes of ``entropy`` (12 + 62 random bits are used)."""
    millis = (time.time_ns() if now_ns is None else now_ns) // 1_000_000
    return _time_ordered(entropy[:10].hex(), _head(millis))


def _head(millis: int) -> str:
    """What a version 7 UUID of this millisecond begins with: the 48-bit timestamp, the version digit."""
    stamp = f"{millis & _MILLIS_MASK:012x}"
    return f"{stamp[:8]}-{stamp[8:]}-7"


def _time_ordered(digits: str, head: str) -> str:
    """A version 7 UUID from its ``head`` and 20 random hex ``digits``: the low 12 bits of the first
    four digits are rand_a, the low 62 bits of the last sixteen are rand_b (the same bits
    ``time_ordered_uuid`` always took from its 10 bytes)."""
    return f"{head}{digits[1:4]}-{_VARIANT[digits[4]]}{digits[5:8]}-{digits[8:20]}"


def new_event_id() -> str:
    """A time-ordered event ID for work done outside a request (background jobs, alerts)."""
    return time_ordered_uuid(os.urandom(10))


class IdSource:
    """Random and time-ordered UUIDs from a pool of kernel randomness, refilled 4 KiB at a time
    (kept as hex digits: two per byte)."""

    def __init__(self) -> None:
        self._pool = ""
        self._offset = 0
        self._lock = threading.Lock()
        # The latest millisecond an event ID was made in, and its head (replaced whole, so threads
        # never see a mismatched pair).
        self._latest: tuple[int, str] = (-1, "")

    def _take(self, size: int) -> str:
        """``size`` random bytes, as ``2 * size`` hex digits."""
        digits = 2 * size
        with self._lock:
            start = self._offset
            if start + digits > len(self._pool):
                self._pool = os.urandom(_POOL_BYTES).hex()
                start = 0
            self._offset = start + digits
            return self._pool[start : start + digits]

    def request_id(self) -> str:
        """A random (version 4) UUID, the form of AWS's request IDs."""
        h = self._take(16)
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"

    def event_id(self) -> str:
        millis = time.time_ns() // 1_000_000
        latest = self._latest
        if latest[0] != millis:
            latest = (millis, _head(millis))
            self._latest = latest
        return _time_ordered(self._take(10), latest[1])
