"""Database connections that survive password rotation.

The pattern (for any language): connect with the cached AWSCURRENT credentials; if the database
refuses them, fetch AWSCURRENT again (it may have just moved) and retry; if that is refused too and a
rotation is in progress, try AWSPENDING (the password may already be set but not yet promoted); if
there is no AWSPENDING any more, the rotation has just finished: fetch AWSCURRENT once more. Each
distinct set of credentials is tried once, never in a loop, so a wrong password cannot lock an account.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from khoa.client.reader import SecretReader

AUTH_FAILURE_CODES_MYSQL = (1045,)


def _is_auth_failure_postgres(exc: Exception) -> bool:
    import psycopg

    if not isinstance(exc, psycopg.OperationalError):
        return False
    text = str(exc).lower()
    return "password authentication failed" in text or "authentication failed" in text


def _is_auth_failure_mysql(exc: Exception) -> bool:
    import pymysql

    return (
        isinstance(exc, pymysql.err.OperationalError)
        and bool(exc.args)
        and exc.args[0] in AUTH_FAILURE_CODES_MYSQL
    )


def _with_rotation_retry(
    reader: SecretReader,
    secret_id: str,
    open_with: Callable[[dict[str, Any]], Any],
    is_auth_failure: Callable[[Exception], bool],
) -> Any:
    """Each distinct set of credentials is tried at most once: the cached AWSCURRENT, a fresh AWSCURRENT,
    AWSPENDING, and (if the rotation finished meanwhile, taking AWSPENDING away) AWSCURRENT once more."""
    tried: list[dict[str, Any]] = []
    refused: Exception | None = None

    def attempt(secret: dict[str, Any] | None) -> Any:
        nonlocal refused
        if secret is None or secret in tried:
            return None
        tried.append(secret)
        try:
            return open_with(secret)
        except Exception as exc:
            if not is_auth_failure(exc):
                raise
            refused = exc
            return None

    connection = attempt(reader.get_json(secret_id))
    if connection is None:
        reader.invalidate(secret_id)  # AWSCURRENT may have just moved
        connection = attempt(reader.get_json(secret_id))
    if connection is None:  # the password may be set but not yet promoted
        connection = attempt(reader.get_pending_json(secret_id))
    if connection is None:  # ...or promoted between the two reads above
        reader.invalidate(secret_id)
        connection = attempt(reader.get_json(secret_id))
    if connection is None:
        assert refused is not None
        raise refused
    return connection


def connect_postgres(reader: SecretReader, secret_id: str, **kwargs: Any) -> Any:
    """A psycopg connection using the secret's engine/host/port/username/password/dbname fields."""
    import psycopg

    def open_with(secret: dict[str, Any]) -> Any:
        return psycopg.connect(
            host=secret["host"],
            port=int(secret.get("port", 5432)),
            user=secret["username"],
            password=secret["password"],
            dbname=secret.get("dbname") or "postgres",
            **{"connect_timeout": 5, **kwargs},
        )

    return _with_rotation_retry(reader, secret_id, open_with, _is_auth_failure_postgres)


def connect_mysql(reader: SecretReader, secret_id: str, **kwargs: Any) -> Any:
    """A PyMySQL connection using the secret's fields (works for MariaDB too)."""
    import pymysql

    def open_with(secret: dict[str, Any]) -> Any:
        return pymysql.connect(
            host=secret["host"],
            port=int(secret.get("port", 3306)),
            user=secret["username"],
            password=secret["password"],
            database=secret.get("dbname") or None,
            **{"connect_timeout": 5, **kwargs},
        )

    return _with_rotation_retry(reader, secret_id, open_with, _is_auth_failure_mysql)
