"""Built-in rotators for PostgreSQL and MySQL/MariaDB, following the steps of AWS's rotation templates.

The secret holds AWS's fields: ``engine, host, port, username, password, dbname`` and, for the
alternating-users strategy, ``masterarn`` naming a secret with a user allowed to manage others.

- single user: the user changes its own password; the old password stops working at setSecret.
- alternating users: the master user creates or updates ``<user>_clone`` (switching back and forth),
  so the previous credentials keep working until the rotation after next.
Every step is idempotent: a step repeated after a crash or failure finds its work done and moves on.
testSecret also proves the database checks passwords (a random password for the pending user is
refused and, for a single user, the AWSCURRENT password too): against a database that trusts every
login (PostgreSQL's ``trust``) a rotation would "succeed" without changing anything, so it fails instead.

After an emergency rotation (khoa.secret_rotation.emergency) the previous credentials must not keep
working: :meth:`DatabaseRotator.revoke_previous` has the master user give the previous user a password
nobody is told, and :meth:`DatabaseRotator.still_accepted` is testSecret turned around (the old
credentials must be refused).
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

import psycopg
import pymysql
from psycopg import sql

EXCLUDED_CHARACTERS = "/@\"'\\;`"
_CLONE = "_clone"


class RotationStepError(Exception):
    """A step failed; the message never contains a password."""


def _secret(client: Any, arn: str, stage: str | None = None, version_id: str | None = None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"SecretId": arn}
    if stage:
        kwargs["VersionStage"] = stage
    if version_id:
        kwargs["VersionId"] = version_id
    value = client.get_secret_value(**kwargs)["SecretString"]
    data = json.loads(value)
    if not isinstance(data, dict):
        raise RotationStepError("the secret value is not a JSON object")
    return data


def _is_mysql(secret: dict[str, Any]) -> bool:
    return str(secret.get("engine", "")).lower() in ("mysql", "mariadb", "aurora-mysql")


def _connect(secret: dict[str, Any]) -> Any:
    """Open a connection with these credentials, or return None if they are refused."""
    try:
        if _is_mysql(secret):
            return pymysql.connect(
                host=secret["host"],
                port=int(secret.get("port", 3306)),
                user=secret["username"],
                password=secret["password"],
                database=secret.get("dbname") or None,
                connect_timeout=5,
                autocommit=True,
            )
        return psycopg.connect(
            host=secret["host"],
            port=int(secret.get("port", 5432)),
            user=secret["username"],
            password=secret["password"],
            dbname=secret.get("dbname") or "postgres",
            connect_timeout=5,
            autocommit=True,
        )
    except (psycopg.OperationalError, pymysql.err.OperationalError):
        return None


def _mysql_hosts(cursor: Any, username: str) -> list[str]:
    cursor.execute("SELECT Host FROM mysql.user WHERE User = %s", (username,))
    return [row[0] for row in cursor.fetchall()]


def _set_own_password(conn: Any, secret: dict[str, Any], username: str, password: str) -> None:
    """The user changes its own password (single user): no privilege needed on either engine."""
    if not _is_mysql(secret):
        _set_password(conn, secret, username, password)
        return
    with conn.cursor() as cursor:
        cursor.execute("SELECT VERSION()")
        row = cursor.fetchone()
        # MariaDB takes SET PASSWORD = '<hash>' or PASSWORD('<plain>'); MySQL 5.7+/8 the plain text.
        if row and "mariadb" in str(row[0]).lower():
            cursor.execute("SET PASSWORD = PASSWORD(%s)", (password,))
        else:
            cursor.execute("SET PASSWORD = %s", (password,))


def _set_password(conn: Any, secret: dict[str, Any], username: str, password: str) -> None:
    """The master user sets another user's password (every host the user is defined for)."""
    if _is_mysql(secret):
        with conn.cursor() as cursor:
            for host in _mysql_hosts(cursor, username) or ["%"]:
                cursor.execute("ALTER USER %s@%s IDENTIFIED BY %s", (username, host, password))
        return
    conn.execute(
        sql.SQL("ALTER USER {} WITH PASSWORD {}").format(sql.Identifier(username), sql.Literal(password))
    )


def _ensure_clone(
    conn: Any, secret: dict[str, Any], template_user: str, username: str, password: str
) -> None:
    """Create ``username`` with the same rights as ``template_user`` if it does not exist yet."""
    if _is_mysql(secret):
        with conn.cursor() as cursor:
            if _mysql_hosts(cursor, username):
                return
            for host in _mysql_hosts(cursor, template_user) or ["%"]:
                cursor.execute("CREATE USER %s@%s IDENTIFIED BY %s", (username, host, password))
                cursor.execute("SHOW GRANTS FOR %s@%s", (template_user, host))
                for (grant,) in cursor.fetchall():
                    if grant.upper().startswith("GRANT USAGE ON *.*"):
                        continue  # the account itself (and its password hash), made above
                    grant = re.sub(r" IDENTIFIED (BY|VIA|WITH) .*$", "", grant, flags=re.IGNORECASE)
                    cursor.execute(grant.replace(f"`{template_user}`@", f"`{username}`@", 1))
        return
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (username,)).fetchone()
    if exists:
        return
    conn.execute(
        sql.SQL("CREATE ROLE {} WITH LOGIN PASSWORD {}").format(
            sql.Identifier(username), sql.Literal(password)
        )
    )
    conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(template_user), sql.Identifier(username)))


def _alternate(username: str) -> str:
    return username[: -len(_CLONE)] if username.endswith(_CLONE) else username + _CLONE


class DatabaseRotator:
    def __init__(self, strategy: str) -> None:
        self.alternating = strategy.endswith("alternating-users")

    def __call__(self, event: dict[str, Any], client: Any) -> None:
        step = event["Step"]
        arn = event["SecretId"]
        token = event["ClientRequestToken"]
        metadata = client.describe_secret(SecretId=arn)
        stages = metadata.get("VersionIdsToStages", {})
        # A rotation starts with its token's version labelled AWSPENDING (no value yet), as in
        # Secrets Manager; createSecret still tolerates its absence (a run queued before that).
        if token not in stages and step != "createSecret":
            raise RotationStepError(f"version {token} of the secret has no stage for rotation")
        if "AWSCURRENT" in stages.get(token, ()) and step != "finishSecret":
            return  # this version is already current: nothing left to do
        getattr(self, step)(client, arn, token)

    def createSecret(self, client: Any, arn: str, token: str) -> None:
        current = _secret(client, arn, "AWSCURRENT")
        try:
            _secret(client, arn, "AWSPENDING", token)
            return
        except client.exceptions.ResourceNotFoundException:
            pass
        password = client.get_random_password(ExcludeCharacters=EXCLUDED_CHARACTERS)["RandomPassword"]
        pending = dict(current, password=password)
        if self.alternating:
            pending["username"] = _alternate(current["username"])
        client.put_secret_value(
            SecretId=arn,
            ClientRequestToken=token,
            SecretString=json.dumps(pending),
            VersionStages=["AWSPENDING"],
        )

    def setSecret(self, client: Any, arn: str, token: str) -> None:
        pending = _secret(client, arn, "AWSPENDING", token)
        done = _connect(pending)
        if done is not None:
            done.close()
            return
        current = _secret(client, arn, "AWSCURRENT")
        if self.alternating:
            master_arn = current.get("masterarn")
            if not master_arn:
                raise RotationStepError("the alternating-users strategy needs 'masterarn' in the secret")
            admin = _secret(client, master_arn, "AWSCURRENT")
            conn = _connect(admin)
            if conn is None:
                raise RotationStepError("the master credentials were refused by the database")
            try:
                template = current["username"]
                base = template[: -len(_CLONE)] if template.endswith(_CLONE) else template
                _ensure_clone(conn, pending, base, pending["username"], pending["password"])
                _set_password(conn, pending, pending["username"], pending["password"])
            finally:
                conn.close()
            return
        conn = _connect(current)
        if conn is None:
            try:
                previous = _secret(client, arn, "AWSPREVIOUS")
            except client.exceptions.ResourceNotFoundException:
                previous = None
            conn = _connect(previous) if previous else None
        if conn is None:
            raise RotationStepError("neither the current nor the previous credentials were accepted")
        try:
            _set_own_password(conn, pending, pending["username"], pending["password"])
        finally:
            conn.close()

    def testSecret(self, client: Any, arn: str, token: str) -> None:
        """The pending credentials log in, and the database really checks them: a wrong password for
        the pending user is refused and, for a single user, so is the password being replaced (a
        database that trusts every login "rotates" without changing anything)."""
        pending = _secret(client, arn, "AWSPENDING", token)
        conn = _connect(pending)
        if conn is None:
            raise RotationStepError("the pending credentials were refused by the database")
        try:
            if _is_mysql(pending):
                with conn.cursor() as cursor:
                    cursor.execute("SELECT 1")
            else:
                conn.execute("SELECT 1")
        finally:
            conn.close()
        username = pending.get("username", "")
        probe = _connect(dict(pending, password=secrets.token_urlsafe(24)))  # a password nobody has
        if probe is not None:
            probe.close()
            raise RotationStepError(
                f"the database does not check passwords: user {username} logged in with a wrong password "
                "(trust authentication?), so rotation would change nothing; make it require passwords"
            )
        if self.alternating:
            return  # the previous user keeps its password until the rotation after next, on purpose
        stages = client.describe_secret(SecretId=arn).get("VersionIdsToStages", {})
        current = next((v for v, labels in stages.items() if "AWSCURRENT" in labels), None)
        if current is None or current == token:
            return
        user, accepted = self.still_accepted(client, arn, current)
        if accepted and user == username:
            raise RotationStepError(
                f"the database does not check passwords for user {username} or kept its old one: "
                "the AWSCURRENT password still logs in after setSecret"
            )

    def finishSecret(self, client: Any, arn: str, token: str) -> None:
        stages = client.describe_secret(SecretId=arn).get("VersionIdsToStages", {})
        current = next((v for v, labels in stages.items() if "AWSCURRENT" in labels), None)
        if current == token:
            return
        client.update_secret_version_stage(
            SecretId=arn, VersionStage="AWSCURRENT", MoveToVersionId=token, RemoveFromVersionId=current
        )

    # -- after an emergency rotation (khoa.secret_rotation.emergency) ---------------------------------
    def revoke_previous(self, client: Any, arn: str, version_id: str) -> str | None:
        """Alternating users: the master user gives the user of ``version_id`` (AWSPREVIOUS once the
        emergency rotation finished) a new random password that is stored nowhere, so the credentials
        from before the rotation stop working; returns that user's name. None when there is nothing to
        do: single user (setSecret replaced the only password) or the version names the current user."""
        if not self.alternating:
            return None
        previous = _secret(client, arn, version_id=version_id)
        current = _secret(client, arn, "AWSCURRENT")
        username = previous.get("username")
        if not username or username == current.get("username"):
            return None
        master_arn = current.get("masterarn") or previous.get("masterarn")
        if not master_arn:
            raise RotationStepError("the alternating-users strategy needs 'masterarn' in the secret")
        conn = _connect(_secret(client, master_arn, "AWSCURRENT"))
        if conn is None:
            raise RotationStepError("the master credentials were refused by the database")
        try:
            password = client.get_random_password(ExcludeCharacters=EXCLUDED_CHARACTERS)["RandomPassword"]
            _set_password(conn, previous, username, password)
        finally:
            conn.close()
        return str(username)

    def still_accepted(self, client: Any, arn: str, version_id: str) -> tuple[str, bool]:
        """The user named by ``version_id`` and whether its credentials still log in."""
        value = _secret(client, arn, version_id=version_id)
        conn = _connect(value)
        if conn is not None:
            conn.close()
        return str(value.get("username", "")), conn is not None
