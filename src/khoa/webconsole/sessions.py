"""Where the console's SQL lives: signed-in sessions and the single-use sign-in links of
``khoa console-link``.

A browser holds only a random token (its cookie); the database holds the token's SHA-256 digest, so a
copy of the database opens no session. The credentials a session signs its API calls with are sealed
by the barrier and bound to that digest, so they cannot be moved to another row. Sessions live in the
database, not in a worker's memory, so every worker and every node of a cluster knows them, and
signing out on one ends the session everywhere at once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import Engine, delete, insert, select, update

from khoa.crypto.barrier import Barrier, BarrierError
from khoa.storage import schema

# Writing last_seen_at on every page would make each page a write: once a minute (or a quarter of a
# shorter idle timeout) is enough for an idle timeout measured in minutes.
_TOUCH_EVERY_SECONDS = 60.0


def new_token() -> str:
    """A fresh bearer token for a cookie or a link (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _binding(token_digest: str, field: str) -> str:
    return f"console-session:{token_digest}:{field}"


@dataclass(frozen=True)
class SessionCredentials:
    """What the console signs with for one session (an IAM user's key, or a role session's)."""

    access_key_id: str
    secret_access_key: str
    session_token: str | None


@dataclass(frozen=True)
class ConsoleSession:
    token: str  # the cookie's value: the key the CSRF token is derived from
    digest: str
    account_id: str
    principal_arn: str
    credentials: SessionCredentials
    region: str
    expires_at: float

    @property
    def csrf_token(self) -> str:
        """Every form of this session carries this token (synchronizer pattern, derived, not stored)."""
        return csrf_token_for(self.token)


def csrf_token_for(token: str) -> str:
    return hmac.new(token.encode(), b"khoa-console-csrf", hashlib.sha256).hexdigest()


def csrf_matches(token: str, presented: str) -> bool:
    return hmac.compare_digest(csrf_token_for(token), presented)


@dataclass(frozen=True)
class LinkGrant:
    """A redeemed sign-in link: the role a session is to be started for."""

    account_id: str
    role_arn: str


class ConsoleSessions:
    def __init__(self, engine: Engine, barrier: Barrier) -> None:
        self._engine = engine
        self._barrier = barrier

    def create(
        self,
        *,
        account_id: str,
        principal_arn: str,
        credentials: SessionCredentials,
        region: str,
        now: float,
        lifetime_seconds: float,
    ) -> str:
        """Store a new session and return its token (the only time it is seen)."""
        token = new_token()
        token_digest = digest(token)
        sealed_token = None
        if credentials.session_token is not None:
            sealed_token = self._barrier.seal(
                credentials.session_token.encode(), _binding(token_digest, "token")
            )
        with self._engine.begin() as conn:
            conn.execute(
                insert(schema.console_sessions).values(
                    digest=token_digest,
                    account_id=account_id,
                    principal_arn=principal_arn,
                    access_key_id=credentials.access_key_id,
                    secret_sealed=self._barrier.seal(
                        credentials.secret_access_key.encode(), _binding(token_digest, "secret")
                    ),
                    token_sealed=sealed_token,
                    region=region,
                    created_at=now,
                    last_seen_at=now,
                    expires_at=now + lifetime_seconds,
                )
            )
            # Sweep ended sessions as new ones start: the table holds only live ones.
            conn.execute(delete(schema.console_sessions).where(schema.console_sessions.c.expires_at <= now))
        return token

    def find(self, token: str, now: float, idle_seconds: float) -> ConsoleSession | None:
        """The live session of a cookie's token, or None (unknown, expired, idle too long, unreadable).
        An ended session's row is removed as it is found."""
        table = schema.console_sessions
        token_digest = digest(token)
        with self._engine.connect() as conn:
            row = conn.execute(select(table).where(table.c.digest == token_digest)).first()
        if row is None:
            return None
        if row.expires_at <= now or row.last_seen_at + idle_seconds <= now:
            self.end(token)
            return None
        try:
            secret = self._barrier.open(row.secret_sealed, _binding(token_digest, "secret")).decode()
            session_token = None
            if row.token_sealed is not None:
                session_token = self._barrier.open(row.token_sealed, _binding(token_digest, "token")).decode()
        except BarrierError:
            return None  # fails closed: a row that does not open is no session
        if now - row.last_seen_at >= min(_TOUCH_EVERY_SECONDS, idle_seconds / 4):
            with self._engine.begin() as conn:
                conn.execute(update(table).where(table.c.digest == token_digest).values(last_seen_at=now))
        return ConsoleSession(
            token=token,
            digest=token_digest,
            account_id=row.account_id,
            principal_arn=row.principal_arn,
            credentials=SessionCredentials(row.access_key_id, secret, session_token),
            region=row.region,
            expires_at=row.expires_at,
        )

    def set_region(self, session: ConsoleSession, region: str) -> None:
        table = schema.console_sessions
        with self._engine.begin() as conn:
            conn.execute(update(table).where(table.c.digest == session.digest).values(region=region))

    def end(self, token: str) -> None:
        table = schema.console_sessions
        with self._engine.begin() as conn:
            conn.execute(delete(table).where(table.c.digest == digest(token)))

    # -- sign-in links ------------------------------------------------------------------------------

    def mint_link(self, *, account_id: str, role_arn: str, now: float, lifetime_seconds: float) -> str:
        """Store a single-use link for ``role_arn`` and return its token (the only time it is seen)."""
        token = new_token()
        with self._engine.begin() as conn:
            conn.execute(
                insert(schema.console_links).values(
                    digest=digest(token),
                    account_id=account_id,
                    role_arn=role_arn,
                    created_at=now,
                    expires_at=now + lifetime_seconds,
                    redeemed_at=None,
                )
            )
            conn.execute(delete(schema.console_links).where(schema.console_links.c.expires_at <= now))
        return token

    def peek_link(self, token: str, now: float) -> LinkGrant | None:
        """What an unredeemed, unexpired link is for (shown before the user confirms), else None."""
        table = schema.console_links
        with self._engine.connect() as conn:
            row = conn.execute(
                select(table.c.account_id, table.c.role_arn)
                .where(table.c.digest == digest(token))
                .where(table.c.redeemed_at.is_(None))
                .where(table.c.expires_at > now)
            ).first()
        return None if row is None else LinkGrant(row.account_id, row.role_arn)

    def redeem_link(self, token: str, now: float) -> LinkGrant | None:
        """Use a link up: exactly one caller gets its grant, however many present it at once."""
        table = schema.console_links
        token_digest = digest(token)
        with self._engine.begin() as conn:
            used = conn.execute(
                update(table)
                .where(table.c.digest == token_digest)
                .where(table.c.redeemed_at.is_(None))
                .where(table.c.expires_at > now)
                .values(redeemed_at=now)
            )
            if used.rowcount != 1:
                return None
            row = conn.execute(
                select(table.c.account_id, table.c.role_arn).where(table.c.digest == token_digest)
            ).one()
        return LinkGrant(row.account_id, row.role_arn)
