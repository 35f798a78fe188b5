"""The clock every domain decision reads (creation dates, deletion windows, rotation schedules).

Tests and the ``--dev`` server can move it forward to make background work come due; SigV4 skew checks
deliberately use the real wall clock instead, so advancing time never weakens authentication.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class Clock:
    def __init__(self) -> None:
        self._offset = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self._offset

    def advance(self, delta: timedelta) -> None:
        if delta < timedelta(0):
            raise ValueError("the clock only moves forward")
        self._offset += delta

    @property
    def offset(self) -> timedelta:
        return self._offset


def wall_clock() -> datetime:
    return datetime.now(UTC)


def to_epoch(moment: datetime) -> float:
    return moment.timestamp()


def from_epoch(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)
