"""Issuing temporary (STS) credentials for a role: used by AssumeRole and by rotation functions."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import string
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, insert

from khoa.auth.credentials import session_binding
from khoa.crypto.barrier import Barrier
from khoa.crypto.fingerprint import Fingerprinter
from khoa.storage import fingerprints, schema

_ALNUM = string.ascii_uppercase + string.digits


@dataclass(frozen=True)
class SessionCredentials:
    access_key_id: str
    secret_access_key: str
    session_token: str
    expiration: datetime


def issue_session(
    engine: Engine,
    barrier: Barrier,
    *,
    account_id: str,
    role_id: str,
    role_arn: str,
    session_name: str,
    now: datetime,
    duration_seconds: int,
    session_policy: str | None = None,
    session_tags: dict[str, str] | None = None,
    source_identity: str | None = None,
    transitive_tag_keys: list[str] | None = None,
    fingerprinter: Fingerprinter | None = None,
) -> SessionCredentials:
    """Store a new session (secret sealed, token as a digest only) and return its credentials once;
    with ``fingerprinter``, the leak fingerprint of its secret goes with it (not of its key id, which
    is no secret).
    ``transitive_tag_keys`` names the keys of ``session_tags`` a role chain passes on (the caller
    checks that they are among the tags)."""
    access_key_id = "ASIA" + "".join(secrets.choice(_ALNUM) for _ in range(16))
    secret = "".join(secrets.choice(string.ascii_letters + string.digits + "+/") for _ in range(40))
    token = base64.b64encode(b"khoa-session-v1:" + os.urandom(96)).decode()
    expires = now + timedelta(seconds=duration_seconds)
    with engine.begin() as conn:
        conn.execute(
            insert(schema.sts_sessions).values(
                access_key_id=access_key_id,
                account_id=account_id,
                secret_sealed=barrier.seal(secret.encode(), session_binding(access_key_id)),
                token_digest=hashlib.sha256(token.encode()).hexdigest(),
                role_id=role_id,
                role_arn=role_arn,
                session_name=session_name,
                session_policy=session_policy,
                session_tags=json.dumps(session_tags) if session_tags else None,
                source_identity=source_identity,
                transitive_tag_keys=json.dumps(transitive_tag_keys) if transitive_tag_keys else None,
                created_at=now.timestamp(),
                expires_at=expires.timestamp(),
            )
        )
        if fingerprinter is not None:
            resource = fingerprints.Resource(
                account_id,
                "",
                fingerprints.STS_CREDENTIAL,
                access_key_id,
                role_arn,
                access_key_id=access_key_id,
                expires_at=expires.timestamp(),
            )
            # the secret only: the key id is no secret (khoa-leaks finds ids by the row's key id)
            items = [(None, fingerprinter.digest(secret))]
            fingerprints.add(conn, resource, items, now.timestamp())
    return SessionCredentials(access_key_id, secret, token, expires)
