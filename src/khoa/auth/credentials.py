"""Access-key lookup for signature verification.

Secrets are stored sealed by the barrier and opened on demand; opened secrets are cached per process
for ``KHOA_CREDENTIAL_CACHE_SECONDS`` (default 5) so the hot path does not hit the database. A key
deleted or deactivated through Khoa's API stops working at once on the node that did it (the
revocation epoch, khoa.auth.revocation, empties this cache in every worker process); on other nodes
sharing the database it stops within the cache lifetime.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass

from sqlalchemy import Engine, and_, select

from khoa.auth.principal import Principal
from khoa.auth.sigv4 import unrecognized_client
from khoa.bootstrap import access_key_binding
from khoa.cache import MISSING, TTLCache
from khoa.crypto.barrier import Barrier
from khoa.protocol.errors import AWSError
from khoa.storage import schema


@dataclass(frozen=True)
class Credential:
    secret: str
    principal: Principal
    # Temporary (STS) credentials only: SHA-256 of the session token, and when they stop working.
    token_digest: str | None = None
    expires_at: float | None = None


def check_session_token(credential: Credential, token: str | None, now: float) -> None:
    """Temporary credentials need their session token, unexpired; long-term keys must not send one."""
    if credential.token_digest is None:
        if token is not None:
            raise unrecognized_client()
        return
    digest = hashlib.sha256((token or "").encode()).hexdigest()
    if token is None or not hmac.compare_digest(digest, credential.token_digest):
        raise unrecognized_client()
    if credential.expires_at is not None and credential.expires_at <= now:
        raise AWSError("ExpiredTokenException", "The security token included in the request is expired")


def session_binding(access_key_id: str) -> str:
    return f"sts_sessions:{access_key_id}"


class CredentialStore:
    def __init__(self, engine: Engine, barrier: Barrier, cache_seconds: float) -> None:
        self._engine = engine
        self._barrier = barrier
        # Only keys that exist are cached: an unknown key is looked up again on every use.
        self._cache: TTLCache[str, Credential] = TTLCache(cache_seconds, max_size=10_000)

    def lookup(self, access_key_id: str) -> Credential | None:
        cached = self._cache.get(access_key_id)
        if cached is not MISSING:
            return cached
        # A key that does not exist is not cached (and nothing is invalidated for it: anyone may
        # send any key id). An existing one is stored unless a revocation cleared the cache while it
        # was read (khoa.cache): the miss above began the load.
        credential = self._load(access_key_id)
        if credential is not None:
            self._cache.put(access_key_id, credential)
        return credential

    def _load(self, access_key_id: str) -> Credential | None:
        if access_key_id.startswith("ASIA"):
            return self._load_session(access_key_id)
        table = schema.access_keys
        with self._engine.connect() as conn:
            row = conn.execute(select(table).where(table.c.access_key_id == access_key_id)).first()
            if row is None or row.status != "Active":
                return None
            if row.principal_kind == "Root":
                principal = Principal.account_root(row.account_id, access_key_id)
            else:
                users = schema.iam_principals
                user = conn.execute(
                    select(users)
                    .where(users.c.account_id == row.account_id)
                    .where(users.c.kind == "user")
                    .where(users.c.name_lower == row.principal_name.lower())
                ).first()
                if user is None:
                    return None
                principal = Principal(
                    account_id=row.account_id,
                    arn=user.arn,
                    user_id=user.principal_id,
                    kind="IAMUser",
                    access_key_id=access_key_id,
                    name=user.name,
                    principal_id=user.principal_id,
                )
        secret = self._barrier.open(row.secret_sealed, access_key_binding(access_key_id)).decode()
        return Credential(secret=secret, principal=principal)

    def _load_session(self, access_key_id: str) -> Credential | None:
        """A role session, only while its role exists under the unique ID it was issued for.

        Sessions are bound to the role's unique ID (``role_id``), not to its name, as AWS binds them: a
        session of a deleted role is no session of a new role created later under the same name, which
        policies naming ``role/NAME`` (resource, trust, key policies, grants) would otherwise take it
        for. Such a session, and one of a role deleted and not re-created, is refused like a revoked
        one (no credential: UnrecognizedClientException / InvalidClientTokenId). DeleteRole is an IAM
        write, so the revocation epoch drops the cached credential before the node's next request.
        """
        table = schema.sts_sessions
        roles = schema.iam_principals
        with self._engine.connect() as conn:
            row = conn.execute(
                select(table)
                .join(
                    roles,
                    and_(
                        roles.c.principal_id == table.c.role_id,
                        roles.c.kind == "role",
                        roles.c.account_id == table.c.account_id,
                    ),
                )
                .where(table.c.access_key_id == access_key_id)
            ).first()
        if row is None:
            return None
        role_name = row.role_arn.rsplit("/", 1)[-1]
        tags = tuple(sorted(json.loads(row.session_tags).items())) if row.session_tags else ()
        transitive = tuple(json.loads(row.transitive_tag_keys)) if row.transitive_tag_keys else ()
        principal = Principal(
            account_id=row.account_id,
            arn=f"arn:aws:sts::{row.account_id}:assumed-role/{role_name}/{row.session_name}",
            user_id=f"{row.role_id}:{row.session_name}",
            kind="AssumedRole",
            access_key_id=access_key_id,
            name=role_name,
            principal_id=row.role_id,
            session_name=row.session_name,
            session_policy=row.session_policy,
            session_tags=tags,
            source_identity=row.source_identity or "",
            transitive_tag_keys=transitive,
            issued_at=row.created_at,
        )
        secret = self._barrier.open(row.secret_sealed, session_binding(access_key_id)).decode()
        return Credential(
            secret=secret, principal=principal, token_digest=row.token_digest, expires_at=row.expires_at
        )

    def clear(self) -> None:
        self._cache.clear()
