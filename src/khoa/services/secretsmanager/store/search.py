"""ListSecrets' and BatchGetSecretValue's filtered, sorted pages: the filters as SQL, and the exact
word checks of "all" and "description" on the rows that SQL finds.

Paging is keyset-based on the sort column plus the secret id, so page N costs what page 1 costs no
matter how many secrets are stored. Filters reaching here were checked (listing.check_filters).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from sqlalchemy import ColumnElement, Engine, Select, and_, exists, func, not_, or_, select

from khoa.services.secretsmanager.store.records import SecretRecord
from khoa.services.secretsmanager.store.tables import SECRETS, TAGS, tags_of_many

_SORT_COLUMNS = {
    "created-date": SECRETS.c.created_at,
    "last-changed-date": SECRETS.c.last_changed_at,
    "last-accessed-date": SECRETS.c.last_accessed_at,
    "name": SECRETS.c.name,
}
_SORT_ATTRIBUTES = {
    "created-date": "created_at",
    "last-changed-date": "last_changed_at",
    "last-accessed-date": "last_accessed_at",
    "name": "name",
}
_CHECK_BATCH = 200
# Where a page stops: the sort value and secret id of its last secret (the next page starts after it).
Keyset = tuple[Any, str]
RowCheck = Callable[[SecretRecord, list[dict[str, str]]], bool]
# The filters whose values are matched word by word, decided exactly on the rows (see _matches_words).
_WORD_FILTERS = ("all", "description")


def _like_prefix(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _starts_with(column: Any, value: str) -> ColumnElement[bool]:
    """Case-sensitive prefix match on every database (SQLite's LIKE ignores ASCII case): LIKE lets
    PostgreSQL use an index, the substring comparison makes the match exact."""
    return and_(column.like(_like_prefix(value), escape="\\"), func.substr(column, 1, len(value)) == value)


_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


def words(text: str) -> list[str]:
    """Split text into the words the "all" and "description" filters match: runs of letters or digits,
    also split where lowercase turns to uppercase (``credsDatabase#892`` → creds, database, 892)."""
    return [w.lower() for w in _WORD.findall(text)]


def _tag_exists(condition: ColumnElement[bool]) -> ColumnElement[bool]:
    return exists().where(TAGS.c.secret_id == SECRETS.c.secret_id).where(condition)


def _contains(word: str, columns: list[Any]) -> ColumnElement[bool]:
    """``word`` (lowercase) is somewhere in one of ``columns`` (lowercased)."""
    pattern = "%" + _like_prefix(word)
    return or_(*[column.like(pattern, escape="\\") for column in columns])


_NOTHING = SECRETS.c.secret_id.is_(None)  # a condition no secret meets


def _condition(key: str, value: str) -> ColumnElement[bool] | None:
    """The SQL for one filter value; None where only the exact check on the rows decides
    (:func:`_row_check`)."""
    negate = value.startswith("!")
    value = value[1:] if negate else value
    condition: ColumnElement[bool]
    if key == "name":
        condition = _starts_with(SECRETS.c.name, value)
    elif key == "description":
        # Words, not a prefix of the whole description: the SQL finds a superset (each word is somewhere
        # in the description), the rows found are checked exactly (_matches_words); negated values can
        # only be decided on the rows.
        if negate:
            return None
        description = func.lower(func.coalesce(SECRETS.c.description, ""))
        wanted = words(value)
        condition = and_(*[_contains(w, [description]) for w in wanted]) if wanted else _NOTHING
    elif key == "tag-key":
        condition = _tag_exists(_starts_with(TAGS.c.tag_key, value))
    elif key == "tag-value":
        condition = _tag_exists(_starts_with(TAGS.c.tag_value, value))
    elif key == "primary-region":
        condition = _starts_with(func.coalesce(SECRETS.c.primary_region, SECRETS.c.region), value)
    elif key == "owning-service":
        condition = _starts_with(func.coalesce(SECRETS.c.owning_service, ""), value)
    else:
        # "all": the same superset over the name, the description and the tags (each word is in one of
        # them), checked exactly on the rows found.
        if negate:
            return None
        name = func.lower(SECRETS.c.name)
        description = func.lower(func.coalesce(SECRETS.c.description, ""))
        tag_texts = [func.lower(TAGS.c.tag_key), func.lower(TAGS.c.tag_value)]
        wanted = words(value)
        per_word = [
            or_(_contains(w, [name, description]), _tag_exists(_contains(w, tag_texts))) for w in wanted
        ]
        condition = and_(*per_word) if per_word else _NOTHING
    return not_(condition) if negate else condition


def _filter_conditions(filters: list[dict[str, Any]]) -> list[ColumnElement[bool]]:
    """AND across filters, OR across the values of one filter."""
    conditions = []
    for item in filters:
        parts = [_condition(item["Key"], v) for v in item["Values"]]
        if any(part is None for part in parts):
            continue  # an exact check on the rows decides this filter
        conditions.append(or_(*[p for p in parts if p is not None]))
    return conditions


def _matches_words(value: str, attributes: list[str]) -> bool:
    """Whether a secret matches one value of an "all" or "description" filter: every word of the value
    starts some word of the ``attributes`` (not case-sensitive); "!" negates; a value with no words
    ("+") matches nothing.

    AWS's documentation calls the description filter a prefix match and says "all" breaks the value
    into words and searches all attributes for matches, which could mean any word. Khoa follows what AWS
    answers, as recorded by tests run against AWS (moto's test_list_secrets.py, LocalStack's
    test_list_secrets_filtering): both filters match word by word, and every word of the value must be
    found ("d t" finds a description "DescTwo", "a secret" does not find "asecret"). The words of an
    "all" value may be found in different attributes (a word of the name, another of a tag): AWS's
    recorded answers do not tell the two readings apart, and its documentation says all attributes are
    searched.
    """
    negate = value.startswith("!")
    wanted = words(value[1:] if negate else value)
    have = [w for attribute in attributes for w in words(attribute)]
    found = bool(wanted) and all(any(h.startswith(w) for h in have) for w in wanted)
    return found != negate


def _row_check(filters: list[dict[str, Any]]) -> RowCheck | None:
    word_filters = [
        (item["Key"], item.get("Values") or []) for item in filters if item.get("Key") in _WORD_FILTERS
    ]
    if not word_filters:
        return None

    def check(record: SecretRecord, tags: list[dict[str, str]]) -> bool:
        description = [record.description or ""]
        everything = [record.name, *description, *[t["Key"] for t in tags], *[t["Value"] for t in tags]]
        return all(
            any(_matches_words(v, everything if key == "all" else description) for v in values)
            for key, values in word_filters
        )

    return check


def page(
    engine: Engine,
    account_id: str,
    region: str,
    filters: list[dict[str, Any]],
    *,
    include_deleted: bool,
    limit: int,
    after: Keyset | None,
    sort_by: str,
    descending: bool,
) -> tuple[list[SecretRecord], Keyset | None]:
    """Up to ``limit`` secrets of the account and region that pass ``filters``, in order, starting after
    ``after``; and where the next page starts, if there is one."""
    column = _SORT_COLUMNS[sort_by]
    key = func.coalesce(column, -1.0) if sort_by == "last-accessed-date" else column
    query = select(SECRETS).where(SECRETS.c.account_id == account_id).where(SECRETS.c.region == region)
    if not include_deleted:
        query = query.where(SECRETS.c.deleted_at.is_(None))
    for condition in _filter_conditions(filters):
        query = query.where(condition)
    if after is not None:
        sort_value, secret_id = after
        if descending:
            query = query.where(
                or_(key < sort_value, and_(key == sort_value, SECRETS.c.secret_id < secret_id))
            )
        else:
            query = query.where(
                or_(key > sort_value, and_(key == sort_value, SECRETS.c.secret_id > secret_id))
            )
    order = (key.desc(), SECRETS.c.secret_id.desc()) if descending else (key.asc(), SECRETS.c.secret_id.asc())
    query = query.order_by(*order)
    check = _row_check(filters)
    if check is None:
        with engine.connect() as conn:
            rows = conn.execute(query.limit(limit + 1)).all()
        found = [SecretRecord.from_row(r) for r in rows]
    else:
        found = _checked_rows(engine, query, check, limit + 1)
    records = found[:limit]
    if len(found) <= limit:
        return records, None
    last = records[-1]
    value = getattr(last, _SORT_ATTRIBUTES[sort_by])
    return records, (-1.0 if value is None else value, last.secret_id)


def _checked_rows(engine: Engine, query: Select[Any], check: RowCheck, wanted: int) -> list[SecretRecord]:
    """Rows of ``query`` (already ordered) that pass ``check``, read in batches until ``wanted`` pass."""
    found: list[SecretRecord] = []
    offset = 0
    while len(found) < wanted:
        with engine.connect() as conn:
            rows = conn.execute(query.limit(_CHECK_BATCH).offset(offset)).all()
        batch = [SecretRecord.from_row(r) for r in rows]
        ids = [r.secret_id for r in batch]
        if ids:
            with engine.connect() as conn:
                tags = tags_of_many(conn, ids)
        else:
            tags = {}
        found.extend(r for r in batch if check(r, tags[r.secret_id]))
        if len(rows) < _CHECK_BATCH:
            break
        offset += _CHECK_BATCH
    return found[:wanted]
