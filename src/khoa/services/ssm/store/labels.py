"""Version labels: each label of a parameter is on one of its versions at a time, and a version
carries at most ``MAX_LABELS_PER_VERSION``. Both hold under concurrency: a change reads the labels
and checks the version under the parameter's lock (:func:`records.lock`), in the transaction that
writes."""

from __future__ import annotations

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.engine import Connection

from khoa.services.ssm import errors
from khoa.services.ssm.store.records import LABELS, VERSIONS, lock

MAX_LABELS_PER_VERSION = 10


class LabelStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def of(self, param_id: str) -> dict[str, int]:
        """The parameter's labels and the version each is on."""
        with self._engine.connect() as conn:
            return _labels(conn, param_id)

    def attach(self, param_id: str, name: str, version: int | None, labels: list[str]) -> int:
        """Put ``labels`` on ``version`` (None: the parameter's current version) in one transaction,
        moving those on another version of the parameter; returns the version labelled.
        ParameterNotFound if the parameter is gone, ParameterVersionNotFound if the version is,
        ParameterVersionLabelLimitExceeded if the version would carry more than
        ``MAX_LABELS_PER_VERSION`` (then nothing changes)."""
        with self._engine.begin() as conn:
            number = _locked_version(conn, param_id, name, version)
            current = _labels(conn, param_id)
            after = {**current, **dict.fromkeys(labels, number)}
            if sum(1 for on in after.values() if on == number) > MAX_LABELS_PER_VERSION:
                raise errors.code(
                    "ParameterVersionLabelLimitExceeded",
                    "A parameter version can have maximum 10 labels.Move one or more labels to another "
                    "version and try again.",
                )
            for label in dict.fromkeys(labels):
                if label not in current:
                    conn.execute(insert(LABELS).values(param_id=param_id, label=label, version=number))
                elif current[label] != number:
                    conn.execute(
                        update(LABELS)
                        .where(LABELS.c.param_id == param_id)
                        .where(LABELS.c.label == label)
                        .values(version=number)
                    )
        return number

    def detach(self, param_id: str, name: str, version: int, labels: list[str]) -> list[str]:
        """Take those of ``labels`` that are on ``version`` off it, in one transaction; returns them
        (once each, in the order given). ParameterNotFound / ParameterVersionNotFound as attach."""
        with self._engine.begin() as conn:
            _locked_version(conn, param_id, name, version)
            current = _labels(conn, param_id)
            removed = [label for label in dict.fromkeys(labels) if current.get(label) == version]
            for label in removed:
                conn.execute(
                    delete(LABELS).where(LABELS.c.param_id == param_id).where(LABELS.c.label == label)
                )
        return removed


def _labels(conn: Connection, param_id: str) -> dict[str, int]:
    rows = conn.execute(select(LABELS.c.label, LABELS.c.version).where(LABELS.c.param_id == param_id)).all()
    return {label: number for label, number in rows}


def _locked_version(conn: Connection, param_id: str, name: str, version: int | None) -> int:
    """Lock the parameter; ``version`` (None: its current one) once it is known to exist."""
    latest = lock(conn, param_id)
    if latest is None:
        raise errors.not_found()
    number = latest if version is None else version
    found = conn.execute(
        select(VERSIONS.c.version).where(VERSIONS.c.param_id == param_id).where(VERSIONS.c.version == number)
    ).first()
    if found is None:
        raise errors.version_not_found(
            f"Systems Manager could not find version {number} of {name}. Verify the version and try again."
        )
    return number
