"""Request and audit event identifiers.

Every API call takes a request ID and an audit event ID. ``uuid.uuid4()`` asks the kernel for 16
random bytes each time, and ``os.urandom`` releases the GIL around that system call: on a busy
server each release lets the audit writer's thread take the interpreter from the event loop. An
:class:`IdSource` draws the same kernel randomness 4 KiB at a time instead.

Audit event IDs are time-ordered (RFC 9562 UUID version 7: 48 bits of Unix milliseconds, then
random bits), so each new event lands at the right-hand end of the ``event_id`` index rather than
on a random page of it: with random IDs every group commit rewrote one index page per event.
CloudTrail only promises that an eventID is a GUID; a version 7 UUID is one.
"""

from __future__ import annotations

import os
import threading
import time

_POOL_BYTES = 4096
_RAND_A_MASK = (1 << 12) - 1
_RAND_B_MASK = (1 << 62) - 1
_VERSION_4 = ~(0xF000 << 64) & ~(0xC000 << 48), 0x4000 << 64 | 0x8000 << 48  # (keep mask, set bits)


def _text(value: int) -> str:
    """A 128-bit UUID value in its 8-4-4-4-12 form (what str(uuid.UUID(int=value)) gives, faster)."""
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def time_ordered_uuid(entropy: bytes, now_ns: int | None = None) -> str:
    """A version 7 UUID from 10 bytes of ``entropy`` (12 + 62 random bits are used)."""
    millis = (time.time_ns() if now_ns is None else now_ns) // 1_000_000
    rand = int.from_bytes(entropy[:10], "big")
    value = (
        (millis & ((1 << 48) - 1)) << 80
        | 0x7 << 76
        | ((rand >> 64) & _RAND_A_MASK) << 64
        | 0b10 << 62
        | (rand & _RAND_B_MASK)
    )
    return _text(value)


def new_event_id() -> str:
    """A time-ordered event ID for work done outside a request (background jobs, alerts)."""
    return time_ordered_uuid(os.urandom(10))


class IdSource:
    """Random and time-ordered UUIDs from a pool of kernel randomness, refilled 4 KiB at a time."""

    def __init__(self) -> None:
        self._pool = b""
        self._offset = 0
        self._lock = threading.Lock()

    def _take(self, size: int) -> bytes:
        with self._lock:
            if self._offset + size > len(self._pool):
                self._pool = os.urandom(_POOL_BYTES)
                self._offset = 0
            start = self._offset
            self._offset += size
            return self._pool[start : start + size]

    def request_id(self) -> str:
        """A random (version 4) UUID, the form of AWS's request IDs."""
        keep, version = _VERSION_4
        return _text(int.from_bytes(self._take(16), "big") & keep | version)

    def event_id(self) -> str:
        return time_ordered_uuid(self._take(10))
