"""What PostgreSQL reads to run a statement: for tests that a query reads its page or window and
not the whole table, on a table the server never analysed (a fresh installation, or autovacuum off,
where the planner guesses and a guess that sorts everything costs in proportion to the table)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Engine, event, text


def add_unanalysed_events(
    engine: Engine,
    count: int,
    *,
    account: str,
    t0: float,
    regions: tuple[str, ...] = ("us-east-1",),
    first: int = 1,
) -> None:
    """``count`` audit events numbered from ``first``, one second apart from ``t0`` (at number 0),
    spread over ``regions`` in turn, inserted in one statement (so the planner has no statistics for
    them)."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO audit_events (seq, event_id, account_id, region, event_time, event_source,"
                " event_name, read_only, record) SELECT g, 'e-' || g, :account,"
                " (CAST(:regions AS text[]))[1 + g % :region_count], :t0 + g,"
                " 'kms.amazonaws.com', 'Encrypt', true, '{\"eventID\":\"e' || g || '\"}'"
                " FROM generate_series(CAST(:first AS bigint),"
                " CAST(:first AS bigint) + CAST(:count AS bigint) - 1) AS g"
            ),
            {
                "account": account,
                "t0": t0,
                "count": count,
                "first": first,
                "regions": list(regions),
                "region_count": len(regions),
            },
        )


@contextlib.contextmanager
def statements_on(
    engine: Engine, table: str, verbs: tuple[str, ...] = ("SELECT",)
) -> Iterator[list[tuple[str, Any]]]:
    """The statements starting with one of ``verbs`` (with their parameters) that name ``table``,
    run through ``engine`` while the block runs."""
    statements: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith(verbs) and table in statement:
            statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", capture)


def _scanned(plan: dict[str, Any]) -> Iterator[int]:
    """The rows each scan node of an executed plan read: those it produced and those its filter
    removed."""
    if "Scan" in plan["Node Type"]:
        read = (
            plan["Actual Rows"]
            + plan.get("Rows Removed by Filter", 0)
            + plan.get("Rows Removed by Index Recheck", 0)
        )
        yield int(read) * int(plan["Actual Loops"])
    for child in plan.get("Plans", []):
        yield from _scanned(child)


def most_rows_scanned(engine: Engine, statements: list[tuple[str, Any]]) -> int:
    """The most rows any scan of any of ``statements`` read, as PostgreSQL executes them (in a
    transaction rolled back at the end: a DELETE explained removes nothing)."""
    most = 0
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        for statement, parameters in statements:
            cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", parameters)
            [[plans]] = cursor.fetchall()
            most = max(most, *_scanned(plans[0]["Plan"]))
    finally:
        connection.close()
    return most
