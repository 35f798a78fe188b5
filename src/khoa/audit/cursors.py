"""The persisted cursors of the trail's followers (``audit_delivery``, one row per follower: "trail"
for log file delivery, "usage" for the last-use tables).

A follower reads its cursor, works, and moves it in the transaction that writes its work, only if
no other process moved it since the read (:func:`move`): a second leader, or one that lost its
lease mid-pass, cannot do the same work twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import Connection, insert, select, update

from khoa.sequence import SequenceCursor
from khoa.storage import schema

_CURSORS = schema.audit_delivery


@dataclass(frozen=True)
class StoredCursor:
    """A follower's cursor as read; ``stored``: the row's values, for the guarded move (None before
    the follower's first move)."""

    cursor: SequenceCursor
    stored: tuple[int, str] | None


def read(conn: Connection, name: str) -> StoredCursor:
    row = conn.execute(select(_CURSORS).where(_CURSORS.c.name == name)).first()
    if row is None:
        return StoredCursor(SequenceCursor(), None)
    cursor = SequenceCursor.from_pairs(row.delivered_seq, json.loads(row.held))
    return StoredCursor(cursor, (int(row.delivered_seq), row.held))


def move(
    conn: Connection, name: str, stored: tuple[int, str] | None, cursor: SequenceCursor, at: float
) -> bool:
    """Move the cursor to ``cursor``, only if it is still as ``stored`` was read; False when another
    process moved it first. A second first move fails on the key (IntegrityError)."""
    held = json.dumps(cursor.held_pairs())
    if stored is None:
        conn.execute(
            insert(_CURSORS).values(name=name, delivered_seq=cursor.position, held=held, updated_at=at)
        )
        return True
    moved = conn.execute(
        update(_CURSORS)
        .where(_CURSORS.c.name == name, _CURSORS.c.delivered_seq == stored[0], _CURSORS.c.held == stored[1])
        .values(delivered_seq=cursor.position, held=held, updated_at=at)
    ).rowcount
    return moved == 1
