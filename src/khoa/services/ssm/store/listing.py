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
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, Engine, and_, exists, false, func, literal, or_, select, true
from sqlalchemy.sql.elements import KeyedColumnElement

from khoa.services.ssm.store.records import LABELS, PARAMS, TAGS, VERSIONS, ParameterRow, VersionRow


@dataclass(frozen=True)
class Filter:
    """One condition on the parameters listed, already validated by the handler: ``key`` is Name, Path,
    Type, KeyId, Tier, DataType, Label or ``tag:<tag key>``, and ``option`` is given (the handler
    fills in the default)."""

    key: str
    option: str
    values: tuple[str, ...]


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


def _recursive(path: str) -> ColumnElement[bool]:
    path = _normalise_path(path)
    if path == "/":
        return true()  # the root holds every parameter, flat names included
    return _begins_with(PARAMS.c.name, path + "/")


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
    return or_(*[or_(_begins_with(PARAMS.c.name, v), _begins_with(PARAMS.c.name, "/" + v)) for v in stripped])


def _condition(item: Filter) -> ColumnElement[bool]:
    key, option, values = item.key, item.option, item.values
    if key.startswith("tag:"):
        if "\x00" in key:
            return false()
        condition = exists().where(TAGS.c.param_id == PARAMS.c.param_id).where(TAGS.c.tag_key == key[4:])
        if values:
            condition = condition.where(_match(TAGS.c.tag_value, option, values))
        return condition
    if key == "Name":
        return _name_condition(option, values)
    if key == "Path":
        if option == "OneLevel":
            return _one_level(values)
        return or_(*[_recursive(v) for v in values])
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


class ListingStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def page(
        self, account_id: str, region: str, filters: list[Filter], after: str | None, limit: int
    ) -> tuple[list[tuple[ParameterRow, VersionRow]], bool]:
        """Up to ``limit`` of the account's parameters in the region that meet every filter, each with
        its current version, in name order from the first name after ``after``; and whether more
        follow (one row more is read to know, in the same statement)."""
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
        for item in filters:
            query = query.where(_condition(item))
        if after is not None:
            query = query.where(PARAMS.c.name > after)
        with self._engine.connect() as conn:
            rows = conn.execute(query.order_by(PARAMS.c.name).limit(limit + 1)).all()
        page = [(ParameterRow(r[0], r[1], r[2], r[3], r[4]), VersionRow.from_row(r)) for r in rows[:limit]]
        return page, len(rows) > limit
