"""Parameter Store's tables and the rows the stores hand to handlers (plain values, no connections)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row

from khoa.storage import schema

PARAMS = schema.ssm_parameters
VERSIONS = schema.ssm_parameter_versions
LABELS = schema.ssm_labels
TAGS = schema.ssm_tags


@dataclass(frozen=True)
class ParameterRow:
    """A parameter: its identity, current version number, tier and policies document."""

    param_id: str
    name: str
    version: int
    tier: str
    policies: str | None


@dataclass(frozen=True)
class VersionRow:
    """One stored version of a parameter (a SecureString's value only as ciphertext)."""

    version: int
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

    @classmethod
    def from_row(cls, row: Row[Any]) -> VersionRow:
        return cls(
            row.version,
            row.param_type,
            row.value,
            row.ciphertext,
            row.key_id,
            row.description,
            row.allowed_pattern,
            row.data_type,
            row.tier,
            row.policies,
            row.modified_at,
            row.modified_by,
        )


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
