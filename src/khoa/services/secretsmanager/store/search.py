"""ListSecrets' and BatchGetSecretValue's filtered, sorted pages: the filters as SQL, and the exact
word checks of "all" and "description" on the rows that SQL finds.

Paging is keyset-based on the sort column plus the secret id, so page N costs what page 1 costs no
matter how many secrets are stored. Filters reaching here were checked (listing.check_filters).

What one request may cost is bounded, whatever its filters (10 filters of 10 values of up to 512
characters, some 25,000 words, are valid): repeated filters, values and words are matched once; the
SQL looks for a bounded number of the words (``_SQL_WORDS``), the longest of each value, which is
only a superset of the matches and the exact check on the rows decides; and that check is a sorted
look-up per word of the value, made once per secret. A listing whose statement or word set is large,
or whose exact check reads more than one batch of secrets, runs on a request thread rather than on
the event loop (khoa.blocking).
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Engine, Select, and_, exists, func, not_, or_, select

from khoa.blocking import refuse_on_the_loop
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
# The filters whose values are matched word by word, decided exactly on the rows (see _WordValue).
_WORD_FILTERS = ("all", "description")
# Words of "all" and "description" values the SQL looks for, in one statement and per value (the
# longest: the most selective). The SQL is only a superset of the matches, so leaving words out of it
# changes what the exact check reads, never what is found. Each word is a few LIKEs (and, for "all",
# a subquery on the tags); a statement of 100,000 of them took 25 s to build and plan.
_SQL_WORDS = 32
_SQL_WORDS_PER_VALUE = 3
# Past these, a listing runs on a request thread (khoa.blocking): SQL conditions (one per value
# compared, one per word looked for) and distinct words the exact check looks up on each secret.
_LOOP_CONDITIONS = 48
_LOOP_WORDS = 64


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


@dataclass(frozen=True)
class _WordValue:
    """One value of an "all" or "description" filter, as it is matched: ``wanted`` are its distinct
    words, lowercase and sorted, less any that is the beginning of another of them (a word of the
    secret that starts with the longer one starts with the shorter one too, so only the longer one
    needs looking for; a value with no words keeps none); ``negate`` is its "!".

    AWS's documentation calls the description filter a prefix match and says "all" breaks the value
    into words and searches all attributes for matches, which could mean any word. Khoa follows what AWS
    answers, as recorded by tests run against AWS (moto's test_list_secrets.py, LocalStack's
    test_list_secrets_filtering): both filters match word by word, and every word of the value must be
    found ("d t" finds a description "DescTwo", "a secret" does not find "asecret"). The words of an
    "all" value may be found in different attributes (a word of the name, another of a tag): AWS's
    recorded answers do not tell the two readings apart, and its documentation says all attributes are
    searched.
    """

    negate: bool
    wanted: tuple[str, ...]

    @classmethod
    def of(cls, value: str) -> _WordValue:
        negate = value.startswith("!")
        distinct = sorted(set(words(value[1:] if negate else value)))
        # in sorted order, a word that begins another is followed by one that begins with it
        kept = tuple(
            word
            for i, word in enumerate(distinct)
            if i + 1 == len(distinct) or not distinct[i + 1].startswith(word)
        )
        return cls(negate, kept)

    def matches(self, have: _Words) -> bool:
        """Whether a secret whose words are ``have`` matches: every wanted word starts one of its words
        (not case-sensitive); "!" negates; a value with no words ("+") matches nothing."""
        found = bool(self.wanted) and all(have.started(w) for w in self.wanted)
        return found != self.negate

    def sql_words(self, count: int) -> list[str]:
        """The ``count`` longest wanted words (the most selective), for the SQL's superset."""
        return sorted(self.wanted, key=lambda w: (-len(w), w))[:count]


class _Words:
    """The words of a secret's attributes, sorted, answering "does one of them start with this word?"
    with one binary search (the first word not below it starts with it if any does), each answer kept
    for the other values of the request that look for the same word."""

    __slots__ = ("_answers", "_sorted")

    def __init__(self, attributes: Iterable[str]) -> None:
        # no word spans a space, so the attributes are split as one text
        self._sorted = sorted(set(words(" ".join(attributes))))
        self._answers: dict[str, bool] = {}

    def started(self, word: str) -> bool:
        answer = self._answers.get(word)
        if answer is None:
            i = bisect_left(self._sorted, word)
            answer = i < len(self._sorted) and self._sorted[i].startswith(word)
            self._answers[word] = answer
        return answer


@dataclass(frozen=True)
class _Plan:
    """How a request's filters are decided: ``conditions`` in SQL (ANDed), then ``word_filters``
    exactly on the rows found (a secret must match a value of each); ``cost`` is the number of SQL
    conditions and ``words`` the distinct words the exact check may look up on each row."""

    conditions: list[ColumnElement[bool]]
    word_filters: list[tuple[str, tuple[_WordValue, ...]]]
    cost: int
    words: int


def _distinct(values: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(dict.fromkeys(values))


def _condition(key: str, value: str) -> ColumnElement[bool]:
    """The SQL for one value of a filter that is not matched word by word."""
    negate = value.startswith("!")
    value = value[1:] if negate else value
    condition: ColumnElement[bool]
    if key == "name":
        condition = _starts_with(SECRETS.c.name, value)
    elif key == "tag-key":
        condition = _tag_exists(_starts_with(TAGS.c.tag_key, value))
    elif key == "tag-value":
        condition = _tag_exists(_starts_with(TAGS.c.tag_value, value))
    elif key == "primary-region":
        condition = _starts_with(func.coalesce(SECRETS.c.primary_region, SECRETS.c.region), value)
    else:  # owning-service
        condition = _starts_with(func.coalesce(SECRETS.c.owning_service, ""), value)
    return not_(condition) if negate else condition


def _word_condition(key: str, word: str) -> ColumnElement[bool]:
    """A superset of the secrets with a word starting with ``word`` in the description ("description")
    or in the name, the description, a tag key or a tag value ("all"): ``word`` is somewhere in one of
    them. The rows found are checked exactly (_WordValue)."""
    description = func.lower(func.coalesce(SECRETS.c.description, ""))
    if key == "description":
        return _contains(word, [description])
    tag_texts = [func.lower(TAGS.c.tag_key), func.lower(TAGS.c.tag_value)]
    return or_(
        _contains(word, [func.lower(SECRETS.c.name), description]), _tag_exists(_contains(word, tag_texts))
    )


def _word_filter_condition(key: str, values: tuple[_WordValue, ...], per_value: int) -> ColumnElement[bool]:
    """The SQL superset of a word filter whose values are not negated: OR across its values, each the
    AND of its ``per_value`` longest words (a value with no words matches nothing)."""
    parts = [
        and_(*[_word_condition(key, w) for w in value.sql_words(per_value)])
        for value in values
        if value.wanted
    ]
    return or_(*parts) if parts else _NOTHING


def _plan(filters: list[dict[str, Any]]) -> _Plan:
    """AND across filters, OR across the values of one filter; a filter or value given twice counts
    once."""
    conditions: list[ColumnElement[bool]] = []
    word_filters: list[tuple[str, tuple[_WordValue, ...]]] = []
    cost = 0
    for key, values in _distinct((item["Key"], _distinct(item["Values"])) for item in filters):
        if key in _WORD_FILTERS:
            word_filters.append((key, _distinct(_WordValue.of(v) for v in values)))
        else:
            conditions.append(or_(*[_condition(key, v) for v in values]))
            cost += len(values)
    word_filters = list(_distinct(word_filters))
    # The words the SQL looks for: the SQL can only narrow to a superset of the matches, so a filter
    # with a negated value has none. First one word per value, the filters with fewest values first,
    # while _SQL_WORDS lasts; then a second and a third word per value, as long as it lasts. A filter
    # left out is decided by the exact check alone.
    narrowing = [(key, values) for key, values in word_filters if not any(v.negate for v in values)]
    by_size = sorted(range(len(narrowing)), key=lambda i: len(narrowing[i][1]))
    budget = _SQL_WORDS
    per_value: dict[int, int] = {}
    for count in range(1, _SQL_WORDS_PER_VALUE + 1):
        for index in by_size:
            if per_value.get(index, 0) != count - 1:
                continue  # left out in an earlier round
            more = sum(1 for value in narrowing[index][1] if len(value.wanted) >= count)
            if more <= budget:
                per_value[index] = count
                budget -= more
    for index, count in sorted(per_value.items()):
        key, values = narrowing[index]
        conditions.append(_word_filter_condition(key, values, count))
    checked = {word for _key, values in word_filters for value in values for word in value.wanted}
    return _Plan(conditions, word_filters, cost + _SQL_WORDS - budget, len(checked))


def _row_check(plan: _Plan) -> RowCheck | None:
    word_filters = plan.word_filters
    if not word_filters:
        return None

    def check(record: SecretRecord, tags: list[dict[str, str]]) -> bool:
        # each secret's words are split and sorted once, and only for the filters asked for
        seen: dict[str, _Words] = {}

        def have(key: str) -> _Words:
            if key not in seen:
                description = record.description or ""
                if key == "all":
                    texts = [record.name, description, *[t["Key"] for t in tags], *[t["Value"] for t in tags]]
                    seen[key] = _Words(texts)
                else:
                    seen[key] = _Words([description])
            return seen[key]

        return all(any(v.matches(have(key)) for v in values) for key, values in word_filters)

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
    plan = _plan(filters)
    if plan.cost > _LOOP_CONDITIONS or plan.words > _LOOP_WORDS:
        refuse_on_the_loop("a listing with many filter values")
    for condition in plan.conditions:
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
    check = _row_check(plan)
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
        if offset:
            # each secret read is checked in Python: past the first batch, not on the event loop
            refuse_on_the_loop("a filtered listing reading many secrets")
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
