"""Reading change events in sequence order, each once, for the change stream and the webhooks.

Both promise their receivers sequence order, so both wait at a gap in the numbers (an event whose
transaction has not committed yet) instead of passing it: see :mod:`khoa.sequence`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select

from khoa.sequence import GapPolicy, SequenceCursor
from khoa.storage import schema

_EVENTS = schema.change_events
# A change event is published in a transaction of its own (one INSERT), so a number missing for
# this long belonged to a transaction that rolled back.
GAP_SECONDS = 15.0
SCAN = 1000  # sequence numbers (of every secret and account) looked at per read


def gap_policy(reader: str, give_up_seconds: float = GAP_SECONDS) -> GapPolicy:
    return GapPolicy(reader, give_up_seconds)


def read_in_order(
    engine: Engine,
    cursor: SequenceCursor,
    now: float,
    policy: GapPolicy,
    *,
    where: Any = None,
    limit: int | None = None,
    upto: int | None = None,
) -> tuple[SequenceCursor, list[Any]]:
    """The change events after ``cursor`` that are ready to go out in sequence order (those matching
    ``where``; at most ``limit`` of them; none numbered above ``upto``), and the cursor past them.

    The numbers of every event are read first (the primary key alone), so a gap is seen whichever
    secret or account the missing event belongs to; then the matching rows up to the end of the
    unbroken run. A row that appears between the two statements is a gap given up on: it is sent.
    """
    c = _EVENTS.c
    with engine.connect() as conn:
        numbers = select(c.seq).where(c.seq > cursor.position)
        if upto is not None:
            numbers = numbers.where(c.seq <= upto)
        seqs = conn.execute(numbers.order_by(c.seq).limit(SCAN)).scalars()
        moved, ready = cursor.advance_in_order(seqs, now, policy)
        if not ready:
            return moved, []
        query = select(_EVENTS).where(c.seq > cursor.position, c.seq <= moved.position)
        if where is not None:
            query = query.where(where)
        rows = list(conn.execute(query.order_by(c.seq).limit(limit)).all())
    if limit is not None and len(rows) == limit:
        moved = SequenceCursor(rows[-1].seq, moved.held)  # the rest of the run on the next read
    return moved, rows
