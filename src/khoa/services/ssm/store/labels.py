"""Version labels: each label of a parameter is on one of its versions at a time."""

from __future__ import annotations

from sqlalchemy import Engine, delete, insert, select, update

from khoa.services.ssm.store.records import LABELS


class LabelStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def of(self, param_id: str) -> dict[str, int]:
        """The parameter's labels and the version each is on."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(LABELS.c.label, LABELS.c.version).where(LABELS.c.param_id == param_id)
            ).all()
        return {label: version for label, version in rows}

    def attach(self, param_id: str, version: int, added: list[str], moved: list[str]) -> None:
        """Put labels on ``version`` in one transaction: ``added`` are new to the parameter, ``moved``
        are on another of its versions now."""
        with self._engine.begin() as conn:
            for label in added:
                conn.execute(insert(LABELS).values(param_id=param_id, label=label, version=version))
            for label in moved:
                conn.execute(
                    update(LABELS)
                    .where(LABELS.c.param_id == param_id)
                    .where(LABELS.c.label == label)
                    .values(version=version)
                )

    def detach(self, param_id: str, labels: list[str]) -> None:
        """Take these labels off the parameter, in one transaction."""
        with self._engine.begin() as conn:
            for label in labels:
                conn.execute(
                    delete(LABELS).where(LABELS.c.param_id == param_id).where(LABELS.c.label == label)
                )
