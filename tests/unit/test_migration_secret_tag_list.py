"""Revision 0013 (sm_secrets.tag_list) on a database holding secrets, on SQLite and PostgreSQL: the
secrets that have tags get a tag list, the others not, and no secret loses a version, label or tag
(copying sm_secrets on SQLite would delete them through ON DELETE CASCADE)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, inspect, text

from khoa.storage.database import _MIGRATIONS, create_database_engine

_TABLES = ("sm_secrets", "sm_versions", "sm_stages", "sm_tags")


def _to(engine: Engine, revision: str, *, down: bool = False) -> None:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, revision)


def _counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {t: conn.execute(text(f"SELECT COUNT(*) FROM {t}")).scalar_one() for t in _TABLES}


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: Any, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'khoa.db'}"
    else:
        url = request.getfixturevalue("private_postgres")
    engine = create_database_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


def test_upgrade_gives_tagged_secrets_a_tag_list_and_keeps_their_rows(engine: Engine) -> None:
    _to(engine, "0012")
    with engine.begin() as conn:
        for secret_id in ("tagged", "untagged"):
            conn.execute(
                text(
                    "INSERT INTO sm_secrets (secret_id, account_id, region, name, arn, created_at,"
                    " last_changed_at, rotation_enabled) VALUES (:s, '111122223333', 'us-east-1', :s, :s,"
                    " 0, 0, :f)"
                ),
                {"s": secret_id, "f": False},
            )
            conn.execute(
                text(
                    "INSERT INTO sm_versions (secret_id, version_id, created_at, value_kind, kms_key_arn,"
                    " encrypted_data_key, encrypted_value) VALUES (:s, 'v1', 0, 'string', 'k', :b, :b)"
                ),
                {"s": secret_id, "b": b"sealed"},
            )
            conn.execute(
                text("INSERT INTO sm_stages (secret_id, stage, version_id) VALUES (:s, 'AWSCURRENT', 'v1')"),
                {"s": secret_id},
            )
        conn.execute(
            text(
                "INSERT INTO sm_tags (secret_id, tag_key, tag_value, position) VALUES ('tagged', 'k', 'v', 1)"
            )
        )
    before = _counts(engine)

    _to(engine, "0013")
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT secret_id, tag_list FROM sm_secrets")).all()
    assert {secret_id: bool(flag) for secret_id, flag in rows} == {"tagged": True, "untagged": False}
    assert _counts(engine) == before

    _to(engine, "0012", down=True)
    assert "tag_list" not in {c["name"] for c in inspect(engine).get_columns("sm_secrets")}
    assert _counts(engine) == before
