"""Parameter Store persistence: parameters, their versions, labels and tags."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select

from khoa.cache import METADATA_SECONDS, MISSING, TTLCache
from khoa.storage import schema

PARAMS = schema.ssm_parameters
VERSIONS = schema.ssm_parameter_versions
LABELS = schema.ssm_labels
TAGS = schema.ssm_tags


@dataclass(frozen=True)
class ParameterRow:
    param_id: str
    name: str
    version: int
    tier: str
    policies: str | None


@dataclass(frozen=True)
class VersionRow:
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
    def from_row(cls, row: Any) -> VersionRow:
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


class ParameterStore:
    """Reads are cached for ``cache_seconds`` (KHOA_METADATA_CACHE_SECONDS, see khoa.cache); Parameter
    Store's writes clear the cache of this process before and after they run (see __init__.py)."""

    def __init__(self, engine: Engine, cache_seconds: float = METADATA_SECONDS) -> None:
        self.engine = engine
        self._rows: TTLCache[tuple[str, str, str], ParameterRow | None] = TTLCache(cache_seconds)
        self._versions: TTLCache[tuple[str, int], VersionRow | None] = TTLCache(cache_seconds)

    def invalidate_all(self) -> None:
        self._rows.clear()
        self._versions.clear()

    def get(self, account_id: str, region: str, name: str) -> ParameterRow | None:
        cached = self._rows.get((account_id, region, name))
        if cached is not MISSING:
            return cached
        row = self._get(account_id, region, name)
        self._rows.put((account_id, region, name), row)
        return row

    def _get(self, account_id: str, region: str, name: str) -> ParameterRow | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(PARAMS.c.param_id, PARAMS.c.name, PARAMS.c.version, PARAMS.c.tier, PARAMS.c.policies)
                .where(PARAMS.c.account_id == account_id)
                .where(PARAMS.c.region == region)
                .where(PARAMS.c.name == name)
            ).first()
        return None if row is None else ParameterRow(*row)

    def version(self, param_id: str, version: int) -> VersionRow | None:
        cached = self._versions.get((param_id, version))
        if cached is not MISSING:
            return cached
        with self.engine.connect() as conn:
            row = conn.execute(
                select(VERSIONS).where(VERSIONS.c.param_id == param_id).where(VERSIONS.c.version == version)
            ).first()
        result = None if row is None else VersionRow.from_row(row)
        self._versions.put((param_id, version), result)
        return result

    def versions(self, param_id: str) -> list[VersionRow]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(VERSIONS).where(VERSIONS.c.param_id == param_id).order_by(VERSIONS.c.version)
            ).all()
        return [VersionRow.from_row(r) for r in rows]

    def labels(self, param_id: str) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(LABELS.c.label, LABELS.c.version).where(LABELS.c.param_id == param_id)
            ).all()
        return {r[0]: r[1] for r in rows}
