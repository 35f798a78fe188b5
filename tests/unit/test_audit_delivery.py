"""The leader's reading of the trail, on SQLite and PostgreSQL alike: delivery to log files takes a
backlog in windows of sequence numbers, each event once and in order, across gaps small and large;
the alert store_engine's reader and retention take windows the same way; and on PostgreSQL no statement
any of them makes reads more than its window, even from a table the server never analysed (a scan
and sort of the whole undelivered range per batch made a backlog cost its square)."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert

from khoa.alerts.reader import TrailReader
from khoa.audit import delivery as delivery_module
from khoa.audit.delivery import GAP_SECONDS, Delivery
from khoa.audit.files import AuditFiles
from khoa.audit.retention import apply_retention
from khoa.audit.usage import UsageTracker
from khoa.storage import schema
from tests.support.pgplans import add_unanalysed_events, most_rows_scanned, statements_on

ACCOUNT = "111122223333"
T0 = 1_780_000_000.0
WINDOW = 40


def _add(store_engine: Engine, seqs: list[int], region: str = "us-east-1") -> None:
    rows = [
        {
            "seq": seq,
            "event_id": f"00000000-0000-4000-8000-{seq:012d}",
            "account_id": ACCOUNT,
            "region": region,
            "event_time": T0 + seq,
            "event_source": "kms.amazonaws.com",
            "event_name": "Encrypt",
            "read_only": True,
            "record": json.dumps({"eventID": f"e{seq}", "awsRegion": region}, separators=(",", ":")),
        }
        for seq in seqs
    ]
    with store_engine.begin() as conn:
        conn.execute(insert(schema.audit_events), rows)


def _delivered(directory: Path) -> list[list[int]]:
    """The sequence numbers in each log file, files in the order of their first event."""
    files = [
        [int(r["eventID"][1:]) for r in json.loads(gzip.decompress(path.read_bytes()))["Records"]]
        for path in directory.glob("AWSLogs/**/*.json.gz")
    ]
    return sorted(files)


def _windowed(engine: Engine, directory: Path, monkeypatch: pytest.MonkeyPatch) -> Delivery:
    """Delivery into ``directory`` in windows of WINDOW sequence numbers (files of as many events)."""
    monkeypatch.setattr(delivery_module, "MAX_RECORDS_PER_FILE", WINDOW)
    return Delivery(engine, AuditFiles(engine, directory), renew=lambda: None)


def test_a_backlog_is_delivered_in_windows_each_event_once_across_gaps(
    store_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "audit"
    delivery = _windowed(store_engine, directory, monkeypatch)
    # A run, two numbers not committed yet, a jump longer than a window (still waited for), and a
    # jump longer than anyone waits for (rows removed, numbers burnt).
    seqs = [*range(1, 101), *range(103, 151), *range(400, 451), *range(5000, 5011)]
    _add(store_engine, seqs)
    delivery.deliver(T0, 5010)
    files = _delivered(directory)
    assert sorted(seq for file in files for seq in file) == seqs
    assert all(file == sorted(file) and 0 < len(file) <= WINDOW for file in files)
    state = delivery.state()
    assert state.delivered_seq == 5010
    held = set(state.held)
    assert {101, 102, 151, 399, 451} <= held and not held & {480, 4999}

    _add(store_engine, [101, 300], region="eu-west-1")  # two late commits
    delivery.deliver(T0 + 1, 5010)
    assert sorted(seq for file in _delivered(directory) for seq in file) == sorted([*seqs, 101, 300])
    assert {101, 300}.isdisjoint(delivery.state().held)
    delivery.deliver(T0 + GAP_SECONDS + 2, 5010)  # the rest is given up
    assert delivery.state().held == {}


def test_a_watermark_below_the_newest_event_leaves_the_rest_for_later(
    store_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "audit"
    delivery = _windowed(store_engine, directory, monkeypatch)
    _add(store_engine, list(range(1, 201)))
    delivery.deliver(T0, 90)
    assert [seq for file in _delivered(directory) for seq in file] == list(range(1, 91))
    assert delivery.state().delivered_seq == 90 and delivery.state().held == {}
    delivery.deliver(T0, 200)
    assert sorted(seq for file in _delivered(directory) for seq in file) == list(range(1, 201))


def test_the_alert_reader_reads_windows_from_the_first_event_after_the_cursor(store_engine: Engine) -> None:
    _add(store_engine, [*range(1, 11), *range(15, 21)])
    reader = TrailReader(store_engine.dialect)
    with store_engine.connect() as conn:
        assert [seqs for seqs, _ in [reader.read(conn, 0, 8)]] == [list(range(1, 9))]
        seqs, events = reader.read(conn, 8, 8)
        assert seqs == [9, 10, 15, 16] and {e.seq for e in events} <= set(seqs)
        assert reader.read(conn, 10, 8)[0] == list(range(15, 21))
        assert reader.read(conn, 20, 8) == ([], [])


@pytest.mark.parametrize("store_engine", ["postgresql"], indirect=True)
def test_delivery_never_has_postgresql_read_the_whole_backlog(store_engine: Engine, tmp_path: Path) -> None:
    add_unanalysed_events(store_engine, 30000, account=ACCOUNT, t0=T0)
    with statements_on(store_engine, "audit_events") as statements:
        Delivery(store_engine, AuditFiles(store_engine, tmp_path / "audit"), renew=lambda: None).deliver(
            T0, 30000
        )
    assert statements
    assert most_rows_scanned(store_engine, statements) <= delivery_module.MAX_RECORDS_PER_FILE


@pytest.mark.parametrize("store_engine", ["postgresql"], indirect=True)
def test_the_alert_reader_never_has_postgresql_read_the_whole_backlog(store_engine: Engine) -> None:
    add_unanalysed_events(store_engine, 30000, account=ACCOUNT, t0=T0)
    reader = TrailReader(store_engine.dialect)
    values = {"after": 10, "first": 11, "last": 5010}
    statements: list[tuple[str, Any]] = []
    for prepared in (reader._first, reader._span, reader._seqs, reader._events):
        params = {**prepared.constants, **values}
        names = prepared.names
        statements.append((prepared.sql, params if names is None else tuple(params[n] for n in names)))
    assert most_rows_scanned(store_engine, statements) <= 5000


@pytest.mark.parametrize("store_engine", ["postgresql"], indirect=True)
def test_retention_never_has_postgresql_read_the_whole_trail(store_engine: Engine, tmp_path: Path) -> None:
    add_unanalysed_events(store_engine, 30000, account=ACCOUNT, t0=T0)  # one a second from T0
    delivery = Delivery(store_engine, AuditFiles(store_engine, tmp_path / "audit"), renew=lambda: None)
    delivery.deliver(T0, 30000)
    UsageTracker(store_engine).run(datetime.fromtimestamp(T0, UTC))  # retention keeps uncounted events
    # Expired: the first 12,000 (more than two windows).
    with statements_on(store_engine, "audit_events", ("SELECT", "DELETE")) as statements:
        assert apply_retention(store_engine, delivery, 1.0, T0 + 86400 + 12000.5) == 12000
    assert most_rows_scanned(store_engine, statements) <= 5000
