"""Following a table numbered by a sequence while its writers commit out of order ("held gaps").

PostgreSQL hands out a sequence number when a row is inserted but shows the row only when its
transaction commits, so with several writers 7 can be visible before 6. A reader that remembers only
"the highest number read" passes 6 and never reads it. A :class:`SequenceCursor` also remembers the
numbers it passed that were missing, each with the time it stops waiting for it (the transaction was
rolled back, or took a number and never used it), so a late commit is still read, and read once.

There are two ways to move, for two kinds of reader:

:meth:`SequenceCursor.advance`
    For readers that take rows as they come (audit log files, alert rules): every row found is
    ready, the cursor moves past the gaps and holds them; a late row is ready when it appears, after
    rows with higher numbers. The held gaps are part of the reader's persisted state.
:meth:`SequenceCursor.advance_in_order`
    For readers that promise sequence order (the change stream, whose clients resume from the last
    id they saw; webhooks): only the unbroken run after the position is ready; a gap stops the run
    until it fills or is given up. The position alone is enough to persist: after a restart a reader
    just waits for the gap in front of it again.

Both give up on a gap after :attr:`GapPolicy.give_up_seconds`, do not wait for a jump of more than
:attr:`GapPolicy.max_gap` numbers (not a commit race: rows removed, or numbers burnt by a failed
bulk insert), and hold at most :attr:`GapPolicy.max_held` numbers. SQLite hands out rowids in commit
order (one writer at a time), so there a reader never waits.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

log = logging.getLogger("khoa.sequence")


@dataclass(frozen=True)
class GapPolicy:
    """How long and for how much a reader waits (``name`` says whose cursor, in log messages)."""

    name: str
    give_up_seconds: float
    max_gap: int = 1000
    max_held: int = 10_000


@dataclass(frozen=True)
class SequenceCursor:
    """Where a reader is: ``position``, the highest number it has moved past, and ``held``, the
    numbers it still looks for with the time it gives up on each (below the position for
    :meth:`advance`, above it for :meth:`advance_in_order`)."""

    position: int = 0
    held: Mapping[int, float] = field(default_factory=dict)

    # -- persisted form --------------------------------------------------------------------------
    def held_pairs(self) -> list[list[float]]:
        """The held numbers as ``[[seq, give_up_at], ...]`` in sequence order (the form the audit
        delivery row and the alert state store)."""
        return sorted([seq, give_up] for seq, give_up in self.held.items())

    @classmethod
    def from_pairs(cls, position: int, pairs: Iterable[Iterable[float]]) -> SequenceCursor:
        held: dict[int, float] = {}
        for seq, give_up in (tuple(pair) for pair in pairs):
            held[int(seq)] = float(give_up)
        return cls(int(position), held)

    # -- moving ----------------------------------------------------------------------------------
    def wanted(self) -> list[int]:
        """The held numbers, to look for again on the next read."""
        return sorted(self.held)

    def hold(self, seq: int, until: float) -> SequenceCursor:
        """Hold a number that was found but is not ready yet (the alert engine's events that have
        no outcome yet), to be offered again until ``until``."""
        return replace(self, held={**self.held, seq: until})

    def advance(
        self, found: Iterable[int], now: float, policy: GapPolicy, *, upto: int | None = None
    ) -> tuple[SequenceCursor, list[int]]:
        """Take the numbers of one read - rows after the position, and held numbers that appeared -
        and return the new cursor and the numbers ready now, ascending.

        The position moves to the highest number found, or to ``upto`` when the caller read
        everything up to it; every number missing below the new position is held. A held number
        that was found is ready (even once its time is up: better late than never); one that was
        not found is dropped when its time is up. A number at or below the position that was not
        held is never ready again.
        """
        seen = set(found)
        ready = sorted(seq for seq in seen if seq > self.position or seq in self.held)
        held = {seq: give_up for seq, give_up in self.held.items() if seq not in seen and give_up > now}
        fresh = [seq for seq in ready if seq > self.position]
        top = max([self.position, *fresh, *([upto] if upto is not None else [])])
        expected = self.position + 1
        for seq in [*fresh, top + 1]:
            missing = seq - expected
            if 0 < missing <= policy.max_gap:
                for gap in range(expected, seq):
                    held.setdefault(gap, now + policy.give_up_seconds)
            elif missing > 0 and self.position > 0:
                log.warning(
                    "%s: not waiting for %d missing sequence numbers from %d", policy.name, missing, expected
                )
            expected = seq + 1
        return SequenceCursor(top, _capped(held, policy)), ready

    def advance_in_order(
        self, found: Iterable[int], now: float, policy: GapPolicy
    ) -> tuple[SequenceCursor, list[int]]:
        """Take the numbers of one read after the position and return the new cursor and the
        unbroken run of numbers ready now, ascending; the run stops before the first gap still
        waited for. Numbers after that gap are not ready: the caller reads them again next time."""
        seen = sorted({seq for seq in found if seq > self.position})
        present = set(seen)
        held = {seq: t for seq, t in self.held.items() if seq > self.position and seq not in present}
        expected = self.position + 1
        for seq in seen:  # every gap below the newest number found starts its wait now, together
            if 0 < seq - expected <= policy.max_gap:
                for gap in range(expected, seq):
                    held.setdefault(gap, now + policy.give_up_seconds)
            expected = seq + 1
        waited = iter(sorted(gap for gap, give_up in held.items() if give_up > now))
        first_waited = next(waited, None)
        position = self.position
        ready: list[int] = []
        for seq in seen:
            while first_waited is not None and first_waited <= position:
                first_waited = next(waited, None)
            if first_waited is not None and first_waited < seq:
                position = first_waited - 1  # the gaps below it are given up
                break
            if seq > position + 1:
                log.warning(
                    "%s: gave up waiting for sequence numbers %d to %d", policy.name, position + 1, seq - 1
                )
            ready.append(seq)
            position = seq
        held = {seq: give_up for seq, give_up in held.items() if seq > position}
        return SequenceCursor(position, _capped(held, policy)), ready


def _capped(held: dict[int, float], policy: GapPolicy) -> dict[int, float]:
    """At most ``max_held`` numbers, keeping the newest (the oldest are the likeliest to be gone)."""
    if len(held) <= policy.max_held:
        return held
    log.warning("%s: more than %d held sequence numbers; dropping the oldest", policy.name, policy.max_held)
    return dict(sorted(held.items())[-policy.max_held :])
