"""Secrets Manager's store under concurrent writers on PostgreSQL, in chosen interleavings: one writer
is stopped at a chosen statement while the other runs until PostgreSQL shows it waiting on a lock."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from sqlalchemy import Engine, event, insert, select, text

from khoa.services.secretsmanager.store import NOTHING, SecretStore
from khoa.services.secretsmanager.store.tables import insert_version, write_stages
from khoa.storage import schema

ACCOUNT = "111122223333"


def _secret(engine: Engine, secret_id: str) -> None:
    """A secret with one version, labelled AWSCURRENT."""
    now = time.time()
    with engine.begin() as conn:
        conn.execute(
            insert(schema.sm_secrets).values(
                secret_id=secret_id,
                account_id=ACCOUNT,
                region="us-east-1",
                name=secret_id,
                arn=f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:{secret_id}-AbCdEf",
                created_at=now,
                last_changed_at=now,
                rotation_enabled=False,
            )
        )
        insert_version(conn, secret_id, "v1", NOTHING, now)
        write_stages(conn, secret_id, {}, {"AWSCURRENT": "v1"})


def _waiting_on_a_lock(engine: Engine, deadline: float) -> None:
    """Return once a session of this database waits on a lock (fail after ``deadline``)."""
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            waiting = conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            ).scalar()
        if waiting:
            return
        time.sleep(0.01)
    raise AssertionError("the other writer never waited on a lock")


@pytest.mark.parametrize("store_engine", ["postgresql"], indirect=True)
def test_a_forced_deletion_waits_for_a_put_holding_the_secret(store_engine: Engine) -> None:
    """PutSecretValue locks the secret's row, then writes a version and labels; DeleteSecret without
    recovery deleted the labels and versions first and only then the row. Each then waited on the
    other: PostgreSQL broke the deadlock by failing one of them (a 503). The deletion now locks the row
    first, so it waits for the put, then deletes what the put left."""
    _secret(store_engine, "s-1")
    store = SecretStore(store_engine, cache_seconds=0)
    outcome: list[BaseException | None] = []

    def destroy() -> None:
        try:
            store.destroy("s-1")
            outcome.append(None)
        except BaseException as error:  # noqa: BLE001 - the test asserts on it
            outcome.append(error)

    deleting = threading.Thread(target=destroy)
    armed = [True]

    def in_the_put(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        # the put holds the secret's row: start the deletion, and go on once it waits
        if armed[0] and statement.lstrip().upper().startswith("INSERT INTO SM_VERSIONS"):
            armed[0] = False
            deleting.start()
            _waiting_on_a_lock(store_engine, time.monotonic() + 30)

    def relabel(before: dict[str, str]) -> dict[str, str]:
        return {"AWSCURRENT": "v2", "AWSPREVIOUS": "v1"}

    event.listen(store_engine, "before_cursor_execute", in_the_put)
    try:
        after = store.add_version("s-1", "v2", NOTHING, relabel, time.time())
    finally:
        event.remove(store_engine, "before_cursor_execute", in_the_put)
        if not armed[0]:
            deleting.join(60)
    assert after == {"AWSCURRENT": "v2", "AWSPREVIOUS": "v1"}
    assert outcome == [None]
    with store_engine.connect() as conn:
        assert conn.execute(select(schema.sm_secrets.c.secret_id)).all() == []
        assert conn.execute(select(schema.sm_versions.c.version_id)).all() == []
