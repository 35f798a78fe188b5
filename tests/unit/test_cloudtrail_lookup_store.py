"""LookupEvents' reads, on SQLite and PostgreSQL alike: newest first by event time then sequence
number, pages that neither skip nor repeat an event (events of one second included), a Region's
events only; and on PostgreSQL a page reads its own rows and no more, with or without a time range,
from a table the server never analysed (the old index gave the events but not their order, so every
page read and sorted all of the account's events)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, insert

from khoa.services.cloudtrail import store as store_module
from khoa.services.cloudtrail.store import TrailStore
from khoa.storage import schema
from tests.support.pgplans import add_unanalysed_events, most_rows_scanned, statements_on

ACCOUNT = "111122223333"
T0 = 1_780_000_000.0


def _add(store_engine: Engine, events: list[tuple[int, float, str]], name: str = "Encrypt") -> None:
    """Events as (sequence number, event time, Region), all named ``name``."""
    with store_engine.begin() as conn:
        conn.execute(
            insert(schema.audit_events),
            [
                {
                    "seq": seq,
                    "event_id": f"e-{seq}",
                    "account_id": ACCOUNT,
                    "region": region,
                    "event_time": at,
                    "event_source": "kms.amazonaws.com",
                    "event_name": name,
                    "read_only": True,
                    "record": "{}",
                }
                for seq, at, region in events
            ],
        )


def test_pages_go_newest_first_and_neither_skip_nor_repeat(store_engine: Engine) -> None:
    # Sequence numbers and times disagree a little (numbers are handed out at commit), and six
    # events share one second.
    events = [(seq, T0 + seq // 6, "us-east-1") for seq in range(1, 40)]
    events += [(40, T0 + 1, "us-east-1"), (41, T0 + 3, "eu-west-1")]
    _add(store_engine, events)
    store = TrailStore(store_engine)
    pages: list[list[int]] = []
    before = None
    while True:
        rows = store.events(ACCOUNT, "us-east-1", before=before, limit=4).rows
        if not rows:
            break
        pages.append([row.seq for row in rows])
        before = (rows[-1].event_time, rows[-1].seq)
    got = [seq for page in pages for seq in page]
    expected = [
        seq for seq, _, _ in sorted((e for e in events if e[2] == "us-east-1"), key=lambda e: (-e[1], -e[0]))
    ]
    assert got == expected and len(set(got)) == len(got) and 41 not in got

    ranged = store.events(
        ACCOUNT,
        "us-east-1",
        start=datetime.fromtimestamp(T0 + 2, UTC),
        end=datetime.fromtimestamp(T0 + 3, UTC),
        limit=100,
    ).rows
    assert [row.seq for row in ranged] == [e for e in expected if T0 + 2 <= T0 + e // 6 <= T0 + 3 and e != 40]


@pytest.mark.parametrize("store_engine", ["postgresql"], indirect=True)
def test_a_page_reads_its_own_rows_on_postgresql(store_engine: Engine) -> None:
    add_unanalysed_events(store_engine, 30000, account=ACCOUNT, t0=T0, regions=("us-east-1", "eu-west-1"))
    store = TrailStore(store_engine)
    with statements_on(store_engine, "audit_events") as statements:
        first = store.events(ACCOUNT, "us-east-1", limit=51).rows
        store.events(ACCOUNT, "us-east-1", before=(first[-1].event_time, first[-1].seq), limit=51)
        store.events(
            ACCOUNT,
            "eu-west-1",
            start=datetime.fromtimestamp(T0 + 1000, UTC),
            end=datetime.fromtimestamp(T0 + 20000, UTC),
            limit=51,
        )
    assert [row.seq for row in first] == list(range(30000, 30000 - 102, -2))
    # A page of 51 in one of two Regions: about twice that many index entries, never the table.
    assert most_rows_scanned(store_engine, statements) <= 2 * 51 + 2


def test_a_lookup_attribute_page_reads_at_most_its_budget_and_paging_goes_on(
    store_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "SCAN_BUDGET", 7)
    _add(store_engine, [(seq, T0 + seq // 3, "us-east-1") for seq in range(1, 60) if seq % 11])
    _add(store_engine, [(seq, T0 + seq // 3, "us-east-1") for seq in range(11, 60, 11)], name="Decrypt")
    store = TrailStore(store_engine)
    pages: list[list[int]] = []
    before = None
    while True:
        page = store.events(ACCOUNT, "us-east-1", attribute=("EventName", "Decrypt"), before=before, limit=3)
        pages.append([row.seq for row in page.rows])
        if len(page.rows) == 3:
            before = (page.rows[-1].event_time, page.rows[-1].seq)
        elif page.scanned_to is not None:
            before = page.scanned_to
        else:
            break
    assert [seq for page in pages for seq in page] == [55, 44, 33, 22, 11]
    assert [] in pages and all(len(page) <= 3 for page in pages)  # short pages that go on


@pytest.mark.parametrize("store_engine", ["postgresql"], indirect=True)
def test_a_rare_lookup_attribute_never_has_postgresql_read_the_whole_trail(store_engine: Engine) -> None:
    add_unanalysed_events(store_engine, 30000, account=ACCOUNT, t0=T0)
    store = TrailStore(store_engine)
    with statements_on(store_engine, "audit_events") as statements:
        page = store.events(ACCOUNT, "us-east-1", attribute=("ResourceName", "arn:aws:kms:never"), limit=51)
    assert page.rows == [] and page.scanned_to == (
        T0 + 30001 - store_module.SCAN_BUDGET,
        30001 - store_module.SCAN_BUDGET,
    )
    assert most_rows_scanned(store_engine, statements) <= store_module.SCAN_BUDGET
