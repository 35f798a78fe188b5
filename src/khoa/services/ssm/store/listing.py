"""Listing parameters for GetParametersByPath and DescribeParameters: filtered, name-ordered pages.

Paging is keyset-based on the parameter name and non-recursive listing uses the indexed parent path,
so a page costs the same whether the store holds a thousand parameters or a million.

Every comparison is case-sensitive on every database, as parameter names are in AWS ("Parameter names
are case sensitive", PutParameter's API reference): ``/prod`` is another hierarchy than ``/Prod``, and
GetParametersByPath is authorised on the path asked for, so a listing that matched ``/Prod/...`` for
``/prod`` would pass a Deny on ``parameter/Prod*``. SQLite's LIKE ignores ASCII case (PostgreSQL's does
not), so each prefix or substring match is the LIKE it was (narrowing the rows, from an index where
the database's collation allows) and an exact comparison, case-sensitive on SQLite and PostgreSQL
alike (see :func:`_begins_with` and :func:`_contains`).

What one listing may cost is bounded whatever its filters (up to 50 values of 1,024 characters each,
and any number of ``tag:`` filters, are valid): a value given twice, or implied by another of its
filter (a prefix that a shorter prefix already matches), is compared once; more ``tag:`` filters than
a parameter can have tags match nothing, with no query; tag values past ``_SQL_TAG_VALUES`` are
compared on the rows found rather than in SQL; and a statement that still compares many values one at
a time runs on a request thread rather than on the event loop (khoa.blocking): such a statement of
2,500 prefixes took two seconds to build and plan.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import ColumnElement, Engine, Row, and_, exists, false, func, literal, or_, select, true
from sqlalchemy.sql.elements import KeyedColumnElement
from sqlalchemy.sql.selectable import Exists

from khoa.blocking import refuse_on_the_loop
from khoa.services.ssm.store.records import LABELS, PARAMS, TAGS, VERSIONS, ParameterRow, VersionRow
from khoa.services.ssm.store.tags import MAX_TAGS

# Tag values a listing's SQL compares one at a time (BeginsWith): past it, the tag filters with the
# most values keep only their key in the SQL, and their values are compared on the rows it finds.
_SQL_TAG_VALUES = 50
# Values compared one at a time (each a LIKE and an exact comparison, or two) a statement may hold
# and still run on the event loop; past it, on a request thread (khoa.blocking).
_LOOP_TERMS = 64
# Rows read at a time when some tag filters are decided on the rows.
_CHECK_BATCH = 200


@dataclass(frozen=True)
class Filter:
    """One condition on the parameters listed, already validated by the handler: ``key`` is Name, Path,
    Type, KeyId, Tier, DataType, Label or ``tag:<tag key>``, and ``option`` is given (the handler
    fills in the default)."""

    key: str
    option: str
    values: tuple[str, ...]

    def reduced(self) -> Filter:
        """The same filter with each value compared once: no repeats, and (BeginsWith) no value that
        begins with another value of the filter, which matches whatever it matches."""
        values = tuple(dict.fromkeys(self.values))
        if self.option == "BeginsWith":
            values = tuple(_shortest_prefixes(values))
        return replace(self, values=values)

    def terms(self) -> int:
        """The values the filter's SQL compares one at a time (an IN list is one)."""
        if self.option == "Contains" or (self.key == "Name" and self.option == "BeginsWith"):
            return 2 * len(self.values)  # each with and without a leading "/"
        if self.option in ("BeginsWith", "Recursive"):
            return len(self.values)
        return 1


def _shortest_prefixes(values: Iterable[str]) -> list[str]:
    """``values`` less those that begin with another of them: a text that begins with the longer one
    begins with the shorter one too. In sorted order the texts that begin with one value follow it, so
    each value need only be held against the last one kept."""
    kept: list[str] = []
    for value in sorted(values):
        if not kept or not value.startswith(kept[-1]):
            kept.append(value)
    return kept


def _like(prefix: str, *, contains: bool = False) -> str:
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return ("%" if contains else "") + escaped + "%"


def _begins_with(column: ColumnElement[str], prefix: str) -> ColumnElement[bool]:
    """``column`` begins with ``prefix``, in case too. The LIKE is what the query had before (an index
    on the column serves it where the database can); ``substr(column, 1, n) = prefix`` makes the match
    exact: ``=`` is case-sensitive on both databases (SQLite's BINARY collation, PostgreSQL's
    deterministic ones), and both count ``n`` in characters, as ``len`` does."""
    if not prefix:
        return true()
    return and_(
        column.like(_like(prefix), escape="\\"),
        func.substr(column, 1, len(prefix)) == prefix,
    )


def _contains(column: ColumnElement[str], part: str) -> ColumnElement[bool]:
    """``column`` holds ``part`` somewhere, in case too: removing ``part`` changes the value only if it
    is there, and ``replace`` compares exactly on both databases (SQLite's instr and PostgreSQL's
    strpos would do the same, under two names)."""
    if not part:
        return true()
    return and_(
        column.like(_like(part, contains=True), escape="\\"),
        func.replace(column, part, "") != column,
    )


def _normalise_path(path: str) -> str:
    return path.rstrip("/") or "/"


def _recursive(paths: tuple[str, ...]) -> ColumnElement[bool]:
    wanted = {_normalise_path(p) for p in paths}
    if "/" in wanted:
        return true()  # the root holds every parameter, flat names included
    return or_(
        *[_begins_with(PARAMS.c.name, prefix) for prefix in _shortest_prefixes(p + "/" for p in wanted)]
    )


def _one_level(paths: tuple[str, ...]) -> ColumnElement[bool]:
    wanted = [_normalise_path(p) for p in paths]
    if "/" in wanted:
        wanted.append("")  # a flat name sits at the root level, as AWS lists it under "/"
    return PARAMS.c.parent_path.in_(wanted)


def _matchable(values: tuple[str, ...]) -> list[str]:
    """The filter values that can match anything stored. No parameter name, tag or label can hold a
    NUL (their patterns exclude it), and a NUL must never reach SQL: SQLite's LIKE stops reading a
    pattern at a NUL (``%\\x00%`` became ``%``, which matched every parameter) and PostgreSQL refuses
    NUL in text outright. Such a value matches nothing."""
    return [v for v in values if "\x00" not in v]


def _match(column: KeyedColumnElement[str], option: str, values: tuple[str, ...]) -> ColumnElement[bool]:
    matchable = _matchable(values)
    if not matchable:
        return false()
    if option == "BeginsWith":
        return or_(*[_begins_with(column, v) for v in matchable])
    return column.in_(matchable)


def _name_condition(option: str, values: tuple[str, ...]) -> ColumnElement[bool]:
    # AWS compares names as if each began with "/": "Name Equals foo" finds "/foo" too, and back.
    matchable = _matchable(values)
    if not matchable:
        return false()
    if option == "Contains":
        return or_(
            *[or_(_contains(PARAMS.c.name, v), _contains(literal("/") + PARAMS.c.name, v)) for v in matchable]
        )
    stripped = [v.lstrip("/") for v in matchable]
    if option == "Equals":
        return PARAMS.c.name.in_(sorted({*stripped, *("/" + v for v in stripped)}))
    return or_(
        *[
            or_(_begins_with(PARAMS.c.name, v), _begins_with(PARAMS.c.name, "/" + v))
            for v in _shortest_prefixes(stripped)
        ]
    )


def _has_tag(key: str) -> Exists:
    """The parameter has the tag ``key`` (a subquery more conditions may be added to)."""
    return exists().where(TAGS.c.param_id == PARAMS.c.param_id).where(TAGS.c.tag_key == key)


def _condition(item: Filter) -> ColumnElement[bool]:
    key, option, values = item.key, item.option, item.values
    if key.startswith("tag:"):
        if "\x00" in key:
            return false()
        condition = _has_tag(key[4:])
        if values:
            condition = condition.where(_match(TAGS.c.tag_value, option, values))
        return condition
    if key == "Name":
        return _name_condition(option, values)
    if key == "Path":
        if option == "OneLevel":
            return _one_level(values)
        return _recursive(values)
    if key == "Label":
        labels = _matchable(values)
        if not labels:
            return false()
        return exists().where(LABELS.c.param_id == PARAMS.c.param_id).where(LABELS.c.label.in_(labels))
    column = {
        "Type": VERSIONS.c.param_type,
        "KeyId": VERSIONS.c.key_id,
        "Tier": PARAMS.c.tier,
        "DataType": VERSIONS.c.data_type,
    }[key]
    return _match(column, option, values)


def _tag_matches(item: Filter, tags: dict[str, str]) -> bool:
    """What :func:`_condition` asks of a tag filter, asked of the parameter's tags (key to value)."""
    value = tags.get(item.key[4:])
    if value is None:
        return False
    if not item.values:
        return True
    matchable = _matchable(item.values)
    if item.option == "BeginsWith":
        return any(value.startswith(v) for v in matchable)
    return value in matchable


def _split(filters: list[Filter]) -> tuple[list[Filter], list[Filter]]:
    """The filters decided in SQL, and the tag filters whose values are compared on the rows the SQL
    finds (their key stays in the SQL): BeginsWith ones, those with most values first, past
    _SQL_TAG_VALUES values in the SQL."""
    prefixes = [
        f for f in filters if f.key.startswith("tag:") and f.option == "BeginsWith" and "\x00" not in f.key
    ]
    on_rows: list[Filter] = []
    budget = _SQL_TAG_VALUES
    for item in sorted(prefixes, key=lambda f: len(f.values)):
        if len(item.values) <= budget:
            budget -= len(item.values)
        else:
            on_rows.append(item)
    return [f for f in filters if f not in on_rows], on_rows


def _entry(row: Row[Any]) -> tuple[ParameterRow, VersionRow]:
    return ParameterRow(row[0], row[1], row[2], row[3], row[4]), VersionRow.from_row(row)


class ListingStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def page(
        self, account_id: str, region: str, filters: list[Filter], after: str | None, limit: int
    ) -> tuple[list[tuple[ParameterRow, VersionRow]], bool]:
        """Up to ``limit`` of the account's parameters in the region that meet every filter, each with
        its current version, in name order from the first name after ``after``; and whether more
        follow (one row more is read to know)."""
        filters = [item.reduced() for item in filters]
        if len({item.key for item in filters if item.key.startswith("tag:")}) > MAX_TAGS:
            # every tag filter names a tag the parameter must have, and none has more than MAX_TAGS
            return [], False
        in_sql, on_rows = _split(filters)
        if on_rows or sum(item.terms() for item in in_sql) > _LOOP_TERMS:
            refuse_on_the_loop("a listing with many filter values")
        query = (
            select(
                PARAMS.c.param_id, PARAMS.c.name, PARAMS.c.version, PARAMS.c.tier, PARAMS.c.policies, VERSIONS
            )
            .join(
                VERSIONS,
                and_(VERSIONS.c.param_id == PARAMS.c.param_id, VERSIONS.c.version == PARAMS.c.version),
            )
            .where(PARAMS.c.account_id == account_id)
            .where(PARAMS.c.region == region)
        )
        for item in in_sql:
            query = query.where(_condition(item))
        for item in on_rows:
            query = query.where(_has_tag(item.key[4:]))
        if after is not None:
            query = query.where(PARAMS.c.name > after)
        query = query.order_by(PARAMS.c.name)
        if not on_rows:
            with self._engine.connect() as conn:
                rows = conn.execute(query.limit(limit + 1)).all()
            return [_entry(r) for r in rows[:limit]], len(rows) > limit
        found = self._checked(query, on_rows, limit + 1)
        return found[:limit], len(found) > limit

    def _checked(
        self, query: Any, on_rows: list[Filter], wanted: int
    ) -> list[tuple[ParameterRow, VersionRow]]:
        """Rows of ``query`` (in name order) whose tags meet ``on_rows``, read in batches until
        ``wanted`` do or the rows end."""
        found: list[tuple[ParameterRow, VersionRow]] = []
        last: str | None = None
        while len(found) < wanted:
            batch = query if last is None else query.where(PARAMS.c.name > last)
            with self._engine.connect() as conn:
                rows = conn.execute(batch.limit(_CHECK_BATCH)).all()
                ids = [r[0] for r in rows]
                tags: dict[str, dict[str, str]] = {param_id: {} for param_id in ids}
                if ids:
                    for param_id, key, value in conn.execute(
                        select(TAGS.c.param_id, TAGS.c.tag_key, TAGS.c.tag_value).where(
                            TAGS.c.param_id.in_(ids)
                        )
                    ):
                        tags[param_id][key] = value
            found.extend(_entry(r) for r in rows if all(_tag_matches(item, tags[r[0]]) for item in on_rows))
            if len(rows) < _CHECK_BATCH:
                break
            last = rows[-1][1]
        return found[:wanted]
