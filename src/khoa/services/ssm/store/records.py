"""Parameter Store's tables, the rows the stores hand to handlers (plain values, no connections), and
the lock every writer of a parameter's versions or labels takes first (:func:`lock`)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import Row, select, update
from sqlalchemy.engine import Connection

from khoa.storage import schema

PARAMS = schema.ssm_parameters
VERSIONS = schema.ssm_parameter_versions
LABELS = schema.ssm_labels
TAGS = schema.ssm_tags


def lock(conn: Connection, param_id: str) -> int | None:
    """Start a change to a parameter's versions or labels by updating its row (to what it holds):
    concurrent writers of the same parameter wait here (a row lock on PostgreSQL; on SQLite the write
    lock and the writers' turn, which a transaction takes at its first write, not at a read), so
    what is read next is current. The parameter's current version; None if it was deleted."""
    locked = conn.execute(
        update(PARAMS).where(PARAMS.c.param_id == param_id).values(version=PARAMS.c.version)
    )
    if locked.rowcount != 1:
        return None
    return int(conn.execute(select(PARAMS.c.version).where(PARAMS.c.param_id == param_id)).scalar_one())


@dataclass(frozen=True)
class ParameterRow:
    """A parameter: its identity, current version number, tier and policies document."""

    param_id: str
    name: str
    version: int
    tier: str
    policies: str | None


@dataclass(frozen=True)
class NewVersion:
    """What PutParameter writes as a parameter's next version; the store numbers it. ``tier`` and
    ``policies`` are also the parameter's own from then on."""

    param_type: str
    value: str | None
    ciphertext: bytes | None
    key_id: str | None
    description: str | None
    allowed_pattern: str | None
    data_type: str
    tier: str
    policies: str | None
    modified_at: float
    modified_by: str


@dataclass(frozen=True)
class VersionRow(NewVersion):
    """One stored version of a parameter: what was written (a SecureString's value only as
    ciphertext), with the number the store gave it."""

    version: int

    @classmethod
    def from_row(cls, row: Row[Any]) -> VersionRow:
        return cls(**{name: getattr(row, name) for name in _VERSION_COLUMNS})


_VERSION_COLUMNS = tuple(field.name for field in fields(VersionRow))  # named as the table's columns
