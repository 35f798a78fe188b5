"""The console's session store: only digests of tokens are kept, credentials are sealed to their row,
sessions end by age and by idleness, and a sign-in link is used at most once."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import create_engine, select, update

from khoa.crypto.barrier import Barrier
from khoa.storage import schema
from khoa.storage.database import create_database_engine, migrate
from khoa.webconsole.cookies import safe_next
from khoa.webconsole.http import Route
from khoa.webconsole.sessions import ConsoleSessions, SessionCredentials, csrf_matches, csrf_token_for, digest
from khoa.webconsole.throttle import FailedSignIns

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


@pytest.fixture
def sessions() -> ConsoleSessions:
    engine = create_engine("sqlite://")
    schema.metadata.create_all(engine)
    return ConsoleSessions(engine, Barrier(os.urandom(32)))


def _start(sessions: ConsoleSessions, now: float = 1000.0, token: str | None = "tok") -> str:
    return sessions.create(
        account_id="111122223333",
        principal_arn="arn:aws:iam::111122223333:user/alice",
        credentials=SessionCredentials("AKIAEXAMPLE", SECRET, token),
        region="us-east-1",
        now=now,
        lifetime_seconds=3600,
    )


def test_only_a_digest_and_sealed_credentials_are_stored(sessions: ConsoleSessions) -> None:
    token = _start(sessions)
    with sessions._engine.connect() as conn:
        row = conn.execute(select(schema.console_sessions)).one()
    assert row.digest == digest(token) and token not in str(tuple(row))
    assert SECRET.encode() not in row.secret_sealed and b"tok" not in (row.token_sealed or b"")
    found = sessions.find(token, 1001.0, 900)
    assert found is not None and found.credentials == SessionCredentials("AKIAEXAMPLE", SECRET, "tok")


def test_sealed_credentials_cannot_move_to_another_session(sessions: ConsoleSessions) -> None:
    first, second = _start(sessions), _start(sessions)
    table = schema.console_sessions
    with sessions._engine.begin() as conn:
        sealed = conn.execute(select(table.c.secret_sealed).where(table.c.digest == digest(first))).scalar()
        conn.execute(update(table).where(table.c.digest == digest(second)).values(secret_sealed=sealed))
    assert sessions.find(second, 1001.0, 900) is None  # fails closed
    assert sessions.find(first, 1001.0, 900) is not None


def test_sessions_end_by_age_idleness_and_sign_out(sessions: ConsoleSessions) -> None:
    token = _start(sessions)
    assert sessions.find(token, 1000.0 + 899, 900) is not None  # touched: idle clock restarts
    assert sessions.find(token, 1000.0 + 899 + 901, 900) is None  # idle too long
    token = _start(sessions, now=5000.0)
    for minute in range(1, 60):
        assert sessions.find(token, 5000.0 + minute * 60, 900) is not None
    assert sessions.find(token, 5000.0 + 3600, 900) is None  # absolute lifetime
    token = _start(sessions, now=9000.0)
    sessions.end(token)
    assert sessions.find(token, 9001.0, 900) is None
    assert sessions.find("unknown", 9001.0, 900) is None


def test_a_link_is_redeemed_once_and_not_after_it_expires(sessions: ConsoleSessions) -> None:
    role = "arn:aws:iam::111122223333:role/ops"
    token = sessions.mint_link(account_id="111122223333", role_arn=role, now=100.0, lifetime_seconds=300)
    assert sessions.peek_link(token, 150.0) is not None
    grant = sessions.redeem_link(token, 150.0)
    assert grant is not None and grant.role_arn == role
    assert sessions.redeem_link(token, 151.0) is None and sessions.peek_link(token, 151.0) is None
    late = sessions.mint_link(account_id="111122223333", role_arn=role, now=100.0, lifetime_seconds=300)
    assert sessions.redeem_link(late, 400.0) is None


def test_csrf_tokens_belong_to_their_session() -> None:
    assert csrf_matches("a", csrf_token_for("a"))
    assert not csrf_matches("b", csrf_token_for("a"))
    assert not csrf_matches("a", "")


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("/console/kms", "/console/kms"),
        ("https://evil.example/console/", "/console/"),
        ("//evil.example/console/", "/console/"),
        ("/console/..//evil", "/console/"),
        ("/console\\@evil", "/console/"),
        ("/elsewhere", "/console/"),
    ],
)
def test_sign_in_returns_only_to_console_paths(given: str, kept: str) -> None:
    assert safe_next(given) == kept


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("/console/\u0100", "/console/%C4%80"),  # outside latin-1: percent-encoded, as a browser would
        ("/console/caf\u00e9?x=\u00e9", "/console/caf%C3%A9?x=%C3%A9"),
        ("/console/x\r\nX-Injected: 1", "/console/"),  # control characters: home
        ("/console/x\n", "/console/"),
        ("/console/\x00", "/console/"),
        ("/console/\x7f", "/console/"),
        ("/console/\x85", "/console/"),  # C1
        ("/console/a b", "/console/"),
        ("/console/a\u2028b", "/console/"),  # a line separator
        ("/console/../_khoa/health", "/console/"),  # a browser resolves it outside /console
        ("/console/%2e%2E/x", "/console/"),
        ("/console/kms/.", "/console/"),
    ],
)
def test_sign_in_goes_on_only_to_printable_ascii(given: str, kept: str) -> None:
    """What safe_next returns goes into a Location header as it is: printable ASCII only."""
    assert safe_next(given) == kept
    assert safe_next(kept) == kept  # the sign-in form carries it back unchanged


def test_route_parameters() -> None:
    pattern = Route("GET", "/console/kms/keys/{key_id}", lambda r: None).compiled()
    match = pattern.match("/console/kms/keys/abc-1")
    assert match is not None and match.group("key_id") == "abc-1"
    assert pattern.match("/console/kms/keys/a/b") is None
    rest = Route("GET", "/console/x/{name:path}", lambda r: None).compiled()
    match = rest.match("/console/x/a/b/c")
    assert match is not None and match.group("name") == "a/b/c"


def test_a_short_idle_timeout_still_counts_every_request(sessions: ConsoleSessions) -> None:
    token = _start(sessions)
    for step in range(1, 10):  # a request every 20 s keeps a 40 s idle timeout from ending it
        assert sessions.find(token, 1000.0 + step * 20, 40) is not None


def test_the_store_on_postgresql_after_its_migration(private_postgres: str) -> None:
    """The same lifecycle on PostgreSQL, through the migrations (0019) rather than create_all."""
    url = private_postgres
    engine = create_database_engine(url)
    migrate(engine)
    try:
        store = ConsoleSessions(engine, Barrier(os.urandom(32)))
        token = _start(store, token=None)
        found = store.find(token, 1100.0, 900)
        assert found is not None and found.credentials.session_token is None
        store.set_region(found, "eu-west-1")
        again = store.find(token, 1200.0, 900)
        assert again is not None and again.region == "eu-west-1"
        store.end(token)
        assert store.find(token, 1201.0, 900) is None
        link = store.mint_link(
            account_id="111122223333",
            role_arn="arn:aws:iam::111122223333:role/r",
            now=1.0,
            lifetime_seconds=60,
        )
        assert store.redeem_link(link, 2.0) is not None and store.redeem_link(link, 3.0) is None
    finally:
        engine.dispose()


def test_failed_sign_ins_block_an_address_for_a_window() -> None:
    failures = FailedSignIns(limit=3, window_seconds=60)
    for second in range(3):
        assert not failures.blocked("192.0.2.1", now=100.0 + second)
        failures.failed("192.0.2.1", now=100.0 + second)
    assert failures.blocked("192.0.2.1", now=103.0)
    assert not failures.blocked("192.0.2.2", now=103.0)  # another address is not held
    assert not failures.blocked("192.0.2.1", now=161.0)  # the first failure left the window
