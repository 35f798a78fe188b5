"""The last-use tables kept from the audit trail (khoa.audit.usage), on SQLite and PostgreSQL: what
counts as a use, the newest use winning, answers that include events the tracker has not reached,
late commits, retention, a restarted sequence, and (on PostgreSQL, without statistics) that neither
the tracker nor a question reads more of the trail than its window or tail."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, delete, func, insert, select

from khoa.audit import cursors
from khoa.audit import usage as usage_module
from khoa.audit.delivery import Delivery
from khoa.audit.files import AuditFiles
from khoa.audit.retention import apply_retention
from khoa.audit.usage import UsageReader, UsageTracker
from khoa.storage import schema
from tests.support.pgplans import add_unanalysed_events, most_rows_scanned, statements_on

ACCOUNT = "111122223333"
OTHER = "444455556666"
T0 = 1_780_000_000.0
KEY_A = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/aaaaaaaa-0000-4000-8000-000000000001"
KEY_B = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/bbbbbbbb-0000-4000-8000-000000000002"
USER_KEY = "AKIAEXAMPLE000000001"
SESSION_KEY = "ASIAEXAMPLE000000001"
ALICE = f"arn:aws:iam::{ACCOUNT}:user/alice"
BOB = f"arn:aws:iam::{ACCOUNT}:role/bob"


def _event(
    seq: int, *, name: str = "Decrypt", keys: tuple[str, ...] = (KEY_A,), **fields: Any
) -> dict[str, Any]:
    values: dict[str, Any] = {
        "seq": seq,
        "event_id": f"00000000-0000-4000-8000-{seq:012d}",
        "account_id": ACCOUNT,
        "region": "us-east-1",
        "event_time": T0 + seq,
        "event_source": "kms.amazonaws.com",
        "event_name": name,
        "read_only": True,
        "resource_names": "\n".join(keys) or None,
        "access_key_id": USER_KEY,
        "principal_arn": ALICE,
        "error_code": None,
        "record": json.dumps({"eventID": f"e{seq}", "requestID": f"request-{seq}"}),
    }
    values.update(fields)
    return values


def _add(engine: Engine, *events: dict[str, Any]) -> None:
    with engine.begin() as conn:
        conn.execute(insert(schema.audit_events), list(events))


def _track(engine: Engine, at: float = T0 + 10_000) -> None:
    UsageTracker(engine).run(datetime.fromtimestamp(at, UTC))


def _stored(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            arn: seq
            for arn, seq in conn.execute(
                select(schema.audit_key_usage.c.key_arn, schema.audit_key_usage.c.seq)
            )
        }


def test_what_counts_as_a_use_and_the_newest_wins(store_engine: Engine) -> None:
    _add(
        store_engine,
        _event(1, keys=(KEY_A,)),
        _event(2, name="ReEncrypt", keys=(KEY_A, KEY_B)),  # both keys used
        _event(3, keys=(KEY_B,), error_code="AccessDeniedException"),  # failed: not a use
        _event(4, name="DescribeKey", keys=(KEY_B,)),  # not cryptographic
        _event(
            5,
            event_source="secretsmanager.amazonaws.com",
            name="GetSecretValue",
            keys=(),
            access_key_id=SESSION_KEY,
        ),
        _event(6, name="Encrypt", keys=(KEY_A,), account_id=OTHER, access_key_id="AKIAOTHER00000000001"),
        # Failed to authenticate: claims a key (made up, or the user's without its secret).
        _event(
            7,
            name="Encrypt",
            keys=(),
            access_key_id="AKIAMADEUP0000000001",
            principal_arn=None,
            error_code="x",
        ),
        _event(8, name="Encrypt", keys=(), access_key_id=USER_KEY, principal_arn=None, error_code="x"),
    )
    reader = UsageReader(store_engine)
    before = (reader.key_last_use(KEY_A, T0), reader.key_last_use(KEY_B, T0))
    user_before = reader.access_key_last_use(ACCOUNT, USER_KEY)
    assert reader.access_key_last_use(ACCOUNT, "AKIAMADEUP0000000001") is None
    _track(store_engine)
    after = (reader.key_last_use(KEY_A, T0), reader.key_last_use(KEY_B, T0))
    assert before == after  # the tail and the table give one answer
    a, b = after
    assert a is not None and (a.seq, a.operation, a.request_id, a.event_id) == (
        6,
        "Encrypt",
        "request-6",
        "00000000-0000-4000-8000-000000000006",
    )
    assert b is not None and (b.seq, b.operation) == (2, "ReEncrypt")
    assert _stored(store_engine) == {KEY_A: 6, KEY_B: 2}
    assert reader.key_last_use(KEY_A, T0 + 7) is None  # before tracking started (the key's creation)

    user = reader.access_key_last_use(ACCOUNT, USER_KEY)
    assert user is not None and (user.seq, user.event_source, user.region) == (
        4,
        "kms.amazonaws.com",
        "us-east-1",
    )
    assert user == user_before  # not the call that claimed the key without its secret
    assert reader.access_key_last_use(ACCOUNT, "AKIAMADEUP0000000001") is None
    assert reader.access_key_last_use(OTHER, USER_KEY) is None  # another account's trail
    with store_engine.connect() as conn:
        tracked = set(conn.execute(select(schema.audit_access_key_usage.c.access_key_id)).scalars())
    assert tracked == {USER_KEY, "AKIAOTHER00000000001"}  # nor session keys, nor made-up ones


def test_principals_that_used_access_since_a_time(store_engine: Engine) -> None:
    _add(
        store_engine,
        _event(1, principal_arn=ALICE),
        _event(
            2, name="GetSecretValue", event_source="secretsmanager.amazonaws.com", keys=(), principal_arn=BOB
        ),
        _event(3, name="Decrypt", principal_arn="arn:aws:iam::1:user/denied", error_code="AccessDenied"),
        _event(4, name="DescribeKey", principal_arn="arn:aws:iam::1:user/reader"),
        _event(5, name="Encrypt", principal_arn=None),
    )
    reader = UsageReader(store_engine)
    assert reader.principals_used_since(T0) == {ALICE, BOB}  # from the events not counted yet
    _track(store_engine)
    assert reader.principals_used_since(T0) == {ALICE, BOB}  # from the table
    assert reader.principals_used_since(T0 + 1.5) == {BOB}
    _add(store_engine, _event(6, principal_arn=ALICE))
    assert reader.principals_used_since(T0 + 1.5) == {ALICE, BOB}
    with store_engine.connect() as conn:
        kept = dict(
            conn.execute(
                select(schema.audit_principal_usage.c.principal_arn, schema.audit_principal_usage.c.seq)
            ).all()
        )
    assert kept == {ALICE: 1, BOB: 2}


def test_a_question_sees_events_the_tracker_has_not_reached(store_engine: Engine) -> None:
    _add(store_engine, _event(1, keys=(KEY_A,)))
    _track(store_engine)
    _add(store_engine, _event(2, name="Sign", keys=(KEY_A,)), _event(3, name="Verify", keys=(KEY_B,)))
    reader = UsageReader(store_engine)
    a, b = reader.key_last_use(KEY_A, T0), reader.key_last_use(KEY_B, T0)
    assert a is not None and a.operation == "Sign" and _stored(store_engine)[KEY_A] == 1
    assert b is not None and b.operation == "Verify"
    assert set(reader.keys_last_use([KEY_A, KEY_B, "arn:aws:kms:us-east-1:1:key/never"])) == {KEY_A, KEY_B}
    assert reader.keys_last_use([KEY_A])[KEY_A].seq == 2


def test_an_older_event_never_replaces_a_newer_use(store_engine: Engine) -> None:
    _add(store_engine, _event(1, keys=(KEY_A,), event_time=T0 + 500))
    _track(store_engine)
    _add(store_engine, _event(2, keys=(KEY_A,), event_time=T0 + 100))  # recorded late, happened earlier
    _track(store_engine)
    use = UsageReader(store_engine).key_last_use(KEY_A, T0)
    assert use is not None and use.seq == 1 and _stored(store_engine)[KEY_A] == 1


def test_a_late_commit_is_counted_and_answered_meanwhile(store_engine: Engine) -> None:
    _add(store_engine, _event(1, keys=(KEY_A,)), _event(3, keys=(KEY_A,)))
    _track(store_engine)  # 2 is held: taken by a transaction that has not committed
    _add(store_engine, _event(2, keys=(KEY_B,)))
    assert UsageReader(store_engine).key_last_use(KEY_B, T0) is not None  # held numbers are read too
    _track(store_engine)
    assert _stored(store_engine) == {KEY_A: 3, KEY_B: 2}
    _add(store_engine, _event(4, keys=(KEY_A,)))
    _track(store_engine)
    assert _stored(store_engine)[KEY_A] == 4


def test_a_long_trail_is_counted_over_several_passes(
    store_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(usage_module, "WINDOW", 10)
    monkeypatch.setattr(usage_module, "MAX_WINDOWS_PER_PASS", 3)
    _add(store_engine, *(_event(seq, keys=(KEY_A if seq % 2 else KEY_B,)) for seq in range(1, 101)))
    _track(store_engine)
    assert usage_module.counted_until(store_engine) == 30
    for _ in range(3):
        _track(store_engine)
    assert usage_module.counted_until(store_engine) == 100
    assert _stored(store_engine) == {KEY_A: 99, KEY_B: 100}


def test_a_pass_stops_after_its_time_and_the_next_goes_on(
    store_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tracker shares the leader's main lane with the other jobs: a pass over a long backlog
    stops once its time is up (here at once, after its first window)."""
    monkeypatch.setattr(usage_module, "WINDOW", 10)
    monkeypatch.setattr(usage_module, "PASS_SECONDS", 0.0)
    _add(store_engine, *(_event(seq, keys=(KEY_A,)) for seq in range(1, 31)))
    _track(store_engine)
    assert usage_module.counted_until(store_engine) == 10
    _track(store_engine)
    _track(store_engine)
    assert usage_module.counted_until(store_engine) == 30
    assert _stored(store_engine) == {KEY_A: 30}


def test_retention_keeps_uncounted_events_and_the_answer_outlives_the_trail(
    store_engine: Engine, tmp_path: Path
) -> None:
    _add(store_engine, _event(1, keys=(KEY_A,)), _event(2, keys=(KEY_B,)))
    delivery = Delivery(store_engine, AuditFiles(store_engine, tmp_path / "audit"), renew=lambda: None)
    delivery.deliver(T0, 2)
    assert apply_retention(store_engine, delivery, 1.0, T0 + 3 * 86400) == 0  # not counted yet
    _track(store_engine)
    assert apply_retention(store_engine, delivery, 1.0, T0 + 3 * 86400) == 2
    reader = UsageReader(store_engine)
    a = reader.key_last_use(KEY_A, T0)
    assert a is not None and a.seq == 1 and a.request_id == "request-1"
    assert reader.access_key_last_use(ACCOUNT, USER_KEY) is not None


def test_counting_starts_again_when_the_sequence_does(store_engine: Engine) -> None:
    _add(store_engine, *(_event(seq, keys=(KEY_A,)) for seq in range(1, 6)))
    _track(store_engine)
    with store_engine.begin() as conn:
        conn.execute(delete(schema.audit_events))
    _add(store_engine, _event(1, keys=(KEY_A,), event_time=T0 + 900))  # numbering started again
    _track(store_engine)
    use = UsageReader(store_engine).key_last_use(KEY_A, T0)
    assert use is not None and use.event_time == T0 + 900
    assert usage_module.counted_until(store_engine) == 1


def test_a_second_tracker_with_a_stale_cursor_counts_nothing_twice(
    store_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    _add(store_engine, _event(1, keys=(KEY_A,)))
    first, second = UsageTracker(store_engine), UsageTracker(store_engine)
    assert first.step(T0, 1) is False  # counted everything up to 1

    def stale(conn: Any) -> Any:  # the cursor as it was before the first tracker moved it
        return cursors.StoredCursor(usage_module.SequenceCursor(), None)

    monkeypatch.setattr(usage_module, "_read_cursor", stale)
    assert second.step(T0, 1) is False  # its first-ever insert of the cursor conflicts
    monkeypatch.undo()
    assert usage_module.counted_until(store_engine) == 1
    with store_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.audit_key_usage)).scalar() == 1


@pytest.mark.parametrize("store_engine", ["postgresql"], indirect=True)
def test_neither_tracker_nor_question_has_postgresql_read_the_whole_trail(store_engine: Engine) -> None:
    add_unanalysed_events(store_engine, 30000, account=ACCOUNT, t0=T0)
    _add(store_engine, _event(30001, keys=(KEY_A,)))
    with statements_on(store_engine, "audit_events") as statements:
        _track(store_engine, T0 + 40_000)
    assert usage_module.counted_until(store_engine) == 30001
    assert most_rows_scanned(store_engine, statements) <= usage_module.WINDOW
    add_unanalysed_events(store_engine, 15000, account=ACCOUNT, t0=T0, first=30002)  # not counted yet
    reader = UsageReader(store_engine)
    with statements_on(store_engine, "audit_events") as statements:
        never = reader.key_last_use(KEY_B, T0)  # a key never used: the table and the uncounted tail
        used = reader.key_last_use(KEY_A, T0)
        unused_user = reader.access_key_last_use(ACCOUNT, "AKIANEVERUSED0000001")
        review = reader.keys_last_use([KEY_A, KEY_B])
        principals = reader.principals_used_since(T0)
    assert principals == {ALICE}
    assert never is None and used is not None and used.seq == 30001 and unused_user is None
    assert set(review) == {KEY_A}
    assert most_rows_scanned(store_engine, statements) <= usage_module.WINDOW


def test_a_question_too_far_behind_the_trail_is_refused_not_read(
    store_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(usage_module, "WINDOW", 10)
    _add(store_engine, *(_event(seq, keys=(KEY_A,)) for seq in range(1, 51)))
    bounded = UsageReader(store_engine, max_tail_windows=2)
    unbounded = UsageReader(store_engine, max_tail_windows=None)
    with pytest.raises(usage_module.UsageBehind) as behind:
        bounded.key_last_use(KEY_B, T0)
    assert (behind.value.code, behind.value.status) == ("ServiceUnavailableException", 503)
    with pytest.raises(usage_module.UsageBehind):
        bounded.access_key_last_use(ACCOUNT, USER_KEY)
    assert unbounded.keys_last_use([KEY_A])[KEY_A].seq == 50  # khoa review reads it all
    _track(store_engine)
    _add(store_engine, *(_event(seq, keys=(KEY_A,)) for seq in range(51, 61)))
    used = bounded.key_last_use(KEY_A, T0)
    assert used is not None and used.seq == 60
    assert bounded.key_last_use(KEY_B, T0) is None
