"""Where khoa-leaks' SQL lives: matching fingerprints, reading the state of what they are of, and the
backfill job's reads and writes (khoa.storage.fingerprints writes rows inside other stores' writes).

A fingerprint row says what a value was of; whether that value still works is read at check time
from the resource itself (the version's labels, the parameter's latest version, the key's status, the
session's expiry), so a check is right even for a change whose own write did not record it.

Besides fingerprints, :meth:`LeakStore.matches` finds access key ids by the rows' own key id (an id is
no secret, so it is not fingerprinted: check.py reports such a match as information only) and an
unexpired STS session by its token (by the SHA-256 digest the session keeps; the token is a secret).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Engine,
    Row,
    Select,
    String,
    and_,
    case,
    cast,
    exists,
    insert,
    literal,
    select,
    tuple_,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from khoa.storage import fingerprints, schema

_FP = schema.leak_fingerprints
_STAGES = schema.sm_stages
_SECRETS = schema.sm_secrets
_SM_VERSIONS = schema.sm_versions
_PARAMS = schema.ssm_parameters
_PARAM_VERSIONS = schema.ssm_parameter_versions
_KEYS = schema.access_keys
_SESSIONS = schema.sts_sessions
_PRINCIPALS = schema.iam_principals
_BUCKETS = schema.leak_rate_buckets
_MAX_IN = 500  # values in one IN (...) list
_CREDENTIALS = (fingerprints.ACCESS_KEY, fingerprints.STS_CREDENTIAL)

BY_FINGERPRINT = "fingerprint"  # the value's keyed fingerprint
BY_KEY_ID = "access-key-id"  # the value is a key id (not a secret)
BY_TOKEN = "session-token"  # the value is an unexpired STS session's token (a secret)


@dataclass
class FingerprintMatch:
    """A fingerprint row that matched, with the state of its resource as read now."""

    fingerprint: str
    resource_type: str
    resource_id: str
    resource_arn: str
    region: str
    version_id: str | None
    field: str | None
    access_key_id: str | None
    invalid_since: float | None
    expires_at: float | None
    stages: list[str]  # secret: the version's labels now
    current_version: int | None = None  # parameter: its latest version (None: deleted)
    superseded_at: float | None = None  # parameter: when the next version was written
    key_status: str | None = None  # access key: Active / Inactive (None: deleted)
    session_exists: bool = False  # STS: the session is still stored
    # what matched (BY_*); ``fingerprint`` is then the fingerprint, the key id or the token's digest
    matched_on: str = BY_FINGERPRINT


def _select_in(
    conn: Connection, query: Select[Any], column: ColumnElement[Any], values: Iterable[Any]
) -> list[Row[Any]]:
    """The rows of ``query`` whose ``column`` is one of ``values``, read with one ``IN (...)`` list of
    at most ``_MAX_IN`` distinct values per statement (databases bound the parameters of one)."""
    distinct = sorted(set(values))
    rows: list[Row[Any]] = []
    for start in range(0, len(distinct), _MAX_IN):
        rows.extend(conn.execute(query.where(column.in_(distinct[start : start + _MAX_IN]))).all())
    return rows


def _row_match(r: Row[Any], matched: str, matched_on: str = BY_FINGERPRINT) -> FingerprintMatch:
    """A fingerprint row as a match (its resource's state still to be read)."""
    return FingerprintMatch(
        fingerprint=matched,
        resource_type=r.resource_type,
        resource_id=r.resource_id,
        resource_arn=r.resource_arn,
        region=r.region,
        version_id=r.version_id,
        field=r.field,
        access_key_id=r.access_key_id,
        invalid_since=r.invalid_since,
        expires_at=r.expires_at,
        stages=[],
        matched_on=matched_on,
    )


def _ids(found: list[FingerprintMatch]) -> list[str]:
    return [m.resource_id for m in found]


def _value_by_id(
    conn: Connection,
    id_column: ColumnElement[Any],
    value_column: ColumnElement[Any],
    found: list[FingerprintMatch],
) -> dict[str, Any]:
    """``value_column`` of the resource of each of ``found`` that still exists, by resource id (the
    matches' state as it is now, whatever their rows recorded)."""
    query = select(id_column, value_column)
    return {resource_id: value for resource_id, value in _select_in(conn, query, id_column, _ids(found))}


class LeakStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    # -- checking ----------------------------------------------------------------------------------
    def matches(
        self,
        account_id: str,
        digests: list[str],
        key_ids: list[str] | None = None,
        token_digests: list[str] | None = None,
        now: float = 0.0,
    ) -> list[FingerprintMatch]:
        """Every fingerprint row of ``account_id`` (any Region) equal to one of ``digests``; one row
        per access key or STS credential of the account whose key id is one of ``key_ids``
        (``BY_KEY_ID``); every session of the account unexpired at ``now`` whose token's SHA-256 is
        one of ``token_digests`` (``BY_TOKEN``); each with the state of its resource."""
        key_ids, token_digests = key_ids or [], token_digests or []
        if not (digests or key_ids or token_digests):
            return []
        with self._engine.connect() as conn:
            mine = select(_FP).where(_FP.c.account_id == account_id)
            found = [_row_match(r, r.fingerprint) for r in _select_in(conn, mine, _FP.c.fingerprint, digests)]
            # a credential's rows have its key id as resource id (ix_leak_fingerprints_resource)
            credentials = mine.where(_FP.c.resource_type.in_(_CREDENTIALS)).order_by(_FP.c.row_id)
            by_id: dict[str, FingerprintMatch] = {}
            for r in _select_in(conn, credentials, _FP.c.resource_id, key_ids):
                by_id.setdefault(r.resource_id, _row_match(r, r.resource_id, BY_KEY_ID))
            found.extend(by_id.values())
            sessions = select(
                _SESSIONS.c.access_key_id,
                _SESSIONS.c.token_digest,
                _SESSIONS.c.role_arn,
                _SESSIONS.c.expires_at,
            ).where(_SESSIONS.c.expires_at > now, _SESSIONS.c.account_id == account_id)
            for r in _select_in(conn, sessions, _SESSIONS.c.token_digest, token_digests):
                found.append(
                    FingerprintMatch(
                        fingerprint=r.token_digest,
                        resource_type=fingerprints.STS_CREDENTIAL,
                        resource_id=r.access_key_id,
                        resource_arn=r.role_arn,
                        region="",
                        version_id=None,
                        field=None,
                        access_key_id=r.access_key_id,
                        invalid_since=None,
                        expires_at=r.expires_at,
                        stages=[],
                        matched_on=BY_TOKEN,
                    )
                )
            self._secret_state(conn, [m for m in found if m.resource_type == fingerprints.SECRET])
            self._parameter_state(conn, [m for m in found if m.resource_type == fingerprints.PARAMETER])
            self._key_state(conn, [m for m in found if m.resource_type == fingerprints.ACCESS_KEY])
            self._session_state(conn, [m for m in found if m.resource_type == fingerprints.STS_CREDENTIAL])
        return found

    @staticmethod
    def _secret_state(conn: Connection, found: list[FingerprintMatch]) -> None:
        labels: dict[tuple[str, str], list[str]] = {}
        query = select(_STAGES.c.secret_id, _STAGES.c.version_id, _STAGES.c.stage)
        for secret_id, version_id, stage in _select_in(conn, query, _STAGES.c.secret_id, _ids(found)):
            labels.setdefault((secret_id, version_id), []).append(stage)
        for m in found:
            m.stages = sorted(labels.get((m.resource_id, m.version_id or ""), []))

    @staticmethod
    def _parameter_state(conn: Connection, found: list[FingerprintMatch]) -> None:
        current = _value_by_id(conn, _PARAMS.c.param_id, _PARAMS.c.version, found)
        # the match's version (as a number) for each match whose parameter has a later version
        superseded: list[tuple[FingerprintMatch, int]] = []
        for m in found:
            m.current_version = current.get(m.resource_id)
            version = int(m.version_id or 0)
            if m.current_version is not None and m.current_version > version and m.invalid_since is None:
                superseded.append((m, version))
        if not superseded:
            return
        # One read of the later versions for all of them (instead of one per match); versions older
        # than the oldest match's cannot answer any of them.
        later: dict[str, list[tuple[int, float]]] = {}
        query = select(_PARAM_VERSIONS.c.param_id, _PARAM_VERSIONS.c.version, _PARAM_VERSIONS.c.modified_at)
        query = query.where(_PARAM_VERSIONS.c.version > min(version for _, version in superseded))
        ids = [m.resource_id for m, _ in superseded]
        for param_id, version, modified_at in _select_in(conn, query, _PARAM_VERSIONS.c.param_id, ids):
            later.setdefault(param_id, []).append((version, modified_at))
        for m, version in superseded:
            # when the next version was written: the earliest write of any version after the match's
            m.superseded_at = min((at for v, at in later.get(m.resource_id, []) if v > version), default=None)

    @staticmethod
    def _key_state(conn: Connection, found: list[FingerprintMatch]) -> None:
        status = _value_by_id(conn, _KEYS.c.access_key_id, _KEYS.c.status, found)
        for m in found:
            m.key_status = status.get(m.resource_id)

    @staticmethod
    def _session_state(conn: Connection, found: list[FingerprintMatch]) -> None:
        # only whether the session is stored counts (the match's own row carries its expiry)
        stored = _value_by_id(conn, _SESSIONS.c.access_key_id, _SESSIONS.c.expires_at, found)
        for m in found:
            m.session_exists = m.resource_id in stored

    # -- rate limit --------------------------------------------------------------------------------
    def take_token(self, key: str, now: float, capacity: float, rate: float) -> bool:
        """Take one token from bucket ``key`` (refilled at ``rate`` per second up to ``capacity``);
        False if it has none. One conditional UPDATE, so concurrent callers cannot both take the
        last token; a bucket's first call inserts it."""
        refilled = _BUCKETS.c.tokens + (literal(now) - _BUCKETS.c.updated_at) * rate
        level = case((refilled > capacity, literal(capacity)), else_=refilled)
        for _ in range(2):
            with self._engine.begin() as conn:
                taken = conn.execute(
                    update(_BUCKETS)
                    .where(_BUCKETS.c.key == key)
                    .where(level >= 1.0)
                    .values(tokens=level - 1.0, updated_at=now)
                )
                if taken.rowcount == 1:
                    return True
                known = conn.execute(select(_BUCKETS.c.key).where(_BUCKETS.c.key == key)).first()
                if known is not None:
                    return False
            try:
                with self._engine.begin() as conn:
                    conn.execute(insert(_BUCKETS).values(key=key, tokens=capacity - 1.0, updated_at=now))
                return True
            except IntegrityError:
                continue  # another call made the bucket first: take from it
        return False

    # -- backfill ----------------------------------------------------------------------------------
    def unfingerprinted_keys(self, limit: int) -> list[Row[Any]]:
        """Access keys without fingerprint rows: id, account, sealed secret, status, owner's ARN."""
        owner_arn = (
            select(_PRINCIPALS.c.arn)
            .where(_PRINCIPALS.c.account_id == _KEYS.c.account_id)
            .where(_PRINCIPALS.c.kind == "user")
            .where(_PRINCIPALS.c.name == _KEYS.c.principal_name)
            .limit(1)
            .scalar_subquery()
        )
        query = (
            select(
                _KEYS.c.access_key_id,
                _KEYS.c.account_id,
                _KEYS.c.secret_sealed,
                _KEYS.c.status,
                _KEYS.c.principal_kind,
                _KEYS.c.created_at,
                owner_arn.label("owner_arn"),
            )
            .where(~exists().where(_FP.c.resource_id == _KEYS.c.access_key_id))
            .limit(limit)
        )
        with self._engine.connect() as conn:
            return list(conn.execute(query).all())

    def unfingerprinted_sessions(self, now: float, limit: int) -> list[Row[Any]]:
        """Unexpired STS sessions without fingerprint rows (an expired one no longer matters enough
        to open its secret for)."""
        query = (
            select(
                _SESSIONS.c.access_key_id,
                _SESSIONS.c.account_id,
                _SESSIONS.c.secret_sealed,
                _SESSIONS.c.role_arn,
                _SESSIONS.c.created_at,
                _SESSIONS.c.expires_at,
            )
            .where(_SESSIONS.c.expires_at > now)
            .where(~exists().where(_FP.c.resource_id == _SESSIONS.c.access_key_id))
            .limit(limit)
        )
        with self._engine.connect() as conn:
            return list(conn.execute(query).all())

    def parameter_versions_after(self, after: tuple[str, int] | None, limit: int) -> list[Row[Any]]:
        """The next ``limit`` SecureString versions in (param_id, version) order after ``after`` (the
        backfill's keyset sweep), each with ``fingerprinted``: whether it has fingerprint rows."""
        version_text = cast(_PARAM_VERSIONS.c.version, String)
        fingerprinted = exists().where(
            and_(_FP.c.resource_id == _PARAM_VERSIONS.c.param_id, _FP.c.version_id == version_text)
        )
        query = (
            select(
                _PARAM_VERSIONS.c.param_id,
                _PARAM_VERSIONS.c.version,
                _PARAM_VERSIONS.c.ciphertext,
                _PARAM_VERSIONS.c.modified_at,
                _PARAMS.c.account_id,
                _PARAMS.c.region,
                _PARAMS.c.name,
                _PARAMS.c.version.label("current_version"),
                fingerprinted.label("fingerprinted"),
            )
            .join(_PARAMS, _PARAMS.c.param_id == _PARAM_VERSIONS.c.param_id)
            .where(_PARAM_VERSIONS.c.param_type == "SecureString")
            .where(_PARAM_VERSIONS.c.ciphertext.is_not(None))
        )
        return self._page(query, (_PARAM_VERSIONS.c.param_id, _PARAM_VERSIONS.c.version), after, limit)

    def secret_versions_after(self, after: tuple[str, str] | None, limit: int) -> list[Row[Any]]:
        """The next ``limit`` secret versions with a value in (secret_id, version_id) order after
        ``after`` (the backfill's keyset sweep), each with ``fingerprinted``."""
        fingerprinted = exists().where(
            and_(_FP.c.resource_id == _SM_VERSIONS.c.secret_id, _FP.c.version_id == _SM_VERSIONS.c.version_id)
        )
        query = (
            select(
                _SM_VERSIONS.c.secret_id,
                _SM_VERSIONS.c.version_id,
                _SM_VERSIONS.c.created_at,
                _SM_VERSIONS.c.value_kind,
                _SM_VERSIONS.c.encrypted_data_key,
                _SM_VERSIONS.c.encrypted_value,
                _SECRETS.c.account_id,
                _SECRETS.c.region,
                _SECRETS.c.arn,
                fingerprinted.label("fingerprinted"),
            )
            .join(_SECRETS, _SECRETS.c.secret_id == _SM_VERSIONS.c.secret_id)
            .where(_SM_VERSIONS.c.value_kind != schema.SM_NO_VALUE)
        )
        return self._page(query, (_SM_VERSIONS.c.secret_id, _SM_VERSIONS.c.version_id), after, limit)

    def _page(
        self,
        query: Select[Any],
        keys: tuple[ColumnElement[Any], ColumnElement[Any]],
        after: tuple[Any, Any] | None,
        limit: int,
    ) -> list[Row[Any]]:
        """One page of a keyset sweep: the first ``limit`` rows of ``query`` in ``keys`` order after
        the key ``after`` (None: from the start), so each page is an index range, not an OFFSET."""
        query = query.order_by(*keys).limit(limit)
        if after is not None:
            query = query.where(tuple_(*keys) > tuple_(*(literal(value) for value in after)))
        with self._engine.connect() as conn:
            return list(conn.execute(query).all())

    def add(
        self,
        resource: fingerprints.Resource,
        items: fingerprints.Items,
        now: float,
        invalid_since: float | None = None,
    ) -> None:
        with self._engine.begin() as conn:
            fingerprints.add(conn, resource, items, now, invalid_since)

    def settle(self, now: float) -> int:
        """Give ``invalid_since`` (``now``) to rows whose value stopped working without its write
        recording when (a change made before fingerprints existed, a replica's labels, a session
        removed): a version with no label, a parameter version that is not the latest, a key that is
        not Active, a session no longer stored. Returns how many rows changed."""
        open_rows = _FP.c.invalid_since.is_(None)
        version_text = cast(_PARAMS.c.version, String)
        statements = (
            (
                fingerprints.SECRET,
                ~exists().where(
                    and_(_STAGES.c.secret_id == _FP.c.resource_id, _STAGES.c.version_id == _FP.c.version_id)
                ),
            ),
            (
                fingerprints.PARAMETER,
                ~exists().where(
                    and_(_PARAMS.c.param_id == _FP.c.resource_id, version_text == _FP.c.version_id)
                ),
            ),
            (
                fingerprints.ACCESS_KEY,
                ~exists().where(and_(_KEYS.c.access_key_id == _FP.c.resource_id, _KEYS.c.status == "Active")),
            ),
            (
                fingerprints.STS_CREDENTIAL,
                ~exists().where(_SESSIONS.c.access_key_id == _FP.c.resource_id),
            ),
        )
        changed = 0
        with self._engine.begin() as conn:
            for resource_type, gone in statements:
                result = conn.execute(
                    update(_FP)
                    .where(open_rows)
                    .where(_FP.c.resource_type == resource_type)
                    .where(gone)
                    .values(invalid_since=now)
                )
                changed += result.rowcount or 0
        return changed
