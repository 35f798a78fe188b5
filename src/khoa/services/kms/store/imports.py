"""Import parameters (GetParametersForImport): the sealed wrapping key behind each import token.

The wrapping private key arrives here already sealed by the barrier; nothing here sees it in the clear.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, delete, insert, select

from khoa.storage import schema

_PARAMS = schema.kms_import_parameters


@dataclass(frozen=True)
class ImportParameters:
    token_id: str
    key_id: str
    wrapping_algorithm: str
    wrapping_key_sealed: bytes
    valid_to: float


class ImportStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def add(self, parameters: ImportParameters) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                insert(_PARAMS).values(
                    token_id=parameters.token_id,
                    key_id=parameters.key_id,
                    wrapping_algorithm=parameters.wrapping_algorithm,
                    wrapping_key_sealed=parameters.wrapping_key_sealed,
                    valid_to=parameters.valid_to,
                )
            )

    def find(self, token_id: str) -> ImportParameters | None:
        """The parameters an import token names, whichever key they were issued for."""
        with self._engine.connect() as conn:
            row = conn.execute(select(_PARAMS).where(_PARAMS.c.token_id == token_id)).first()
        if row is None:
            return None
        return ImportParameters(
            row.token_id, row.key_id, row.wrapping_algorithm, row.wrapping_key_sealed, row.valid_to
        )

    def forget_key(self, key_id: str) -> None:
        """Drop every import token issued for the key (its imported material was deleted)."""
        with self._engine.begin() as conn:
            conn.execute(delete(_PARAMS).where(_PARAMS.c.key_id == key_id))
