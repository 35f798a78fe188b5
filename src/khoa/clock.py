"""The clock every domain decision reads (creation dates, deletion windows, rotation schedules).

Tests and the ``--dev`` server can move it forward to make background work come due; SigV4 skew checks
deliberately use the real wall clock instead, so advancing time never weakens authentication.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

MAX_OFFSET = timedelta(days=1000 * 365)


class Clock:
    def __init__(self) -> None:
        self._offset = timedelta(0)

    def now(self) -> datetime:
        offset = self._offset
        return _now(UTC) + offset if offset else _now(UTC)  # adding a zero offset would only copy

    def advance(self, delta: timedelta) -> None:
        if delta < timedelta(0):
            raise ValueError("the clock only moves forward")
        if self._offset + delta > MAX_OFFSET:
            raise ValueError("the clock moves at most 1,000 years ahead")  # datetime ends in year 9999
        self._offset += delta

    @property
    def offset(self) -> timedelta:
        return self._offset


_now = datetime.now
_fromtimestamp = datetime.fromtimestamp


def wall_clock() -> datetime:
    return _now(UTC)


def to_epoch(moment: datetime) -> float:
    return moment.timestamp()


def from_epoch(value: float | None) -> datetime | None:
    return None if value is None else _fromtimestamp(value, UTC)
