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

Confused-deputy guards (as in AWS's templates): whoever may PutSecretValue on the secret chooses its
``username``/``host``, but must not get the master user, or the previous credentials, to act on a user
they could not log in as. Before the master user acts, setSecret and revoke_previous check that the user
it changes is the alternate of the current one, that current, pending and master secrets name the same
database server, that the current credentials log in, and that the user is not the master user itself;
the single-user setSecret uses the AWSPREVIOUS credentials only if they name the pending user, and changes
the password of the user it is logged in as only. A refusal fails the step (never naming a value).
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


def _check_session_user(conn: Any, secret: dict[str, Any], username: str) -> None:
    """The connection is logged in as ``username`` (single user: a user only changes its own password)."""
    if _is_mysql(secret):
        with conn.cursor() as cursor:
            cursor.execute("SELECT SUBSTRING_INDEX(CURRENT_USER(), '@', 1)")
            row = cursor.fetchone()
    else:
        row = conn.execute("SELECT session_user").fetchone()
    if not row or row[0] != username:
        raise RotationStepError(f"the connection is not logged in as user {username}: refusing to change it")


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


def _server(secret: dict[str, Any]) -> tuple[bool, str, int]:
    """The database server a secret names: engine family, host (case-insensitive), port (or the default)."""
    mysql = _is_mysql(secret)
    host = str(secret.get("host") or "").strip().lower()
    try:
        port = int(secret.get("port") or (3306 if mysql else 5432))
    except (TypeError, ValueError):
        raise RotationStepError("the secret's 'port' is not a number") from None
    if not host:
        raise RotationStepError("the secret has no 'host'")
    return mysql, host, port


def _same_server(first: dict[str, Any], second: dict[str, Any], what: str) -> None:
    if _server(first) != _server(second):
        raise RotationStepError(f"{what} do not name the same database server (engine, host and port)")


def _username(secret: dict[str, Any], which: str) -> str:
    username = secret.get("username")
    if not isinstance(username, str) or not username:
        raise RotationStepError(f"the {which} secret has no 'username'")
    return username


def _check_login(secret: dict[str, Any], message: str) -> None:
    """The credentials log in (they are not just a name someone wrote into the secret)."""
    conn = _connect(secret)
    if conn is None:
        raise RotationStepError(message)
    conn.close()


def _master_for(client: Any, current: dict[str, Any], username: str, why: str) -> dict[str, Any]:
    """The master secret named by the AWSCURRENT value, once it is safe to let its user change
    ``username``'s password: the current credentials log in (so whoever wrote them could already act
    as that user: no confused deputy), the master secret names the same server, and ``username`` is not
    the master user (a child secret never changes the master's password)."""
    master_arn = current.get("masterarn")
    if not master_arn:
        raise RotationStepError("the alternating-users strategy needs 'masterarn' in the secret")
    _check_login(
        current,
        f"the AWSCURRENT credentials (user {_username(current, 'AWSCURRENT')}) were refused by the "
        f"database: refusing to use the master user to {why}",
    )
    admin = _secret(client, str(master_arn), "AWSCURRENT")
    _same_server(current, admin, "the secret and its master secret")
    if _username(admin, "master") in (username, _alternate(username)):
        raise RotationStepError(
            f"user {username} is the master user or its alternate: refusing to let the master user {why}"
        )
    return admin


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
        username = _username(pending, "AWSPENDING")
        current_user = _username(current, "AWSCURRENT")
        _same_server(current, pending, "the AWSCURRENT and AWSPENDING secrets")
        if self.alternating:
            # AWS's set_secret (multi user): pending user == alternate of current, same host, current
            # credentials log in ("confused deputy"), master on the same host.
            if username != _alternate(current_user):
                raise RotationStepError(
                    f"the AWSPENDING user {username} is not the alternate of the AWSCURRENT user "
                    f"{current_user}: refusing to let the master user change it"
                )
            admin = _master_for(client, current, username, f"create or change user {username}")
            conn = _connect(admin)
            if conn is None:
                raise RotationStepError("the master credentials were refused by the database")
            try:
                base = current_user[: -len(_CLONE)] if current_user.endswith(_CLONE) else current_user
                _ensure_clone(conn, pending, base, username, pending["password"])
                _set_password(conn, pending, username, pending["password"])
            finally:
                conn.close()
            return
        # AWS's set_secret (single user): current, previous and pending name the same user and host.
        if current_user != username:
            raise RotationStepError(
                f"the AWSPENDING user {username} is not the AWSCURRENT user {current_user}: "
                "a single-user rotation only changes its own user's password"
            )
        conn = _connect(current)
        if conn is None:
            try:
                previous = _secret(client, arn, "AWSPREVIOUS")
            except client.exceptions.ResourceNotFoundException:
                previous = None
            if previous is not None:
                if previous.get("username") != username:
                    raise RotationStepError(
                        f"the AWSCURRENT credentials were refused and the AWSPREVIOUS ones are not of user "
                        f"{username}: refusing to use them"
                    )
                _same_server(previous, pending, "the AWSPREVIOUS and AWSPENDING secrets")
                conn = _connect(previous)
        if conn is None:
            raise RotationStepError("neither the current nor the previous credentials were accepted")
        try:
            _check_session_user(conn, pending, username)
            _set_own_password(conn, pending, username, pending["password"])
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
        # the same guards as setSecret: only the alternate of the current user, on the same server,
        # and only when the current credentials log in
        current_user = _username(current, "AWSCURRENT")
        if username != _alternate(current_user):
            raise RotationStepError(
                f"the previous user {username} is not the alternate of the AWSCURRENT user "
                f"{current_user}: refusing to let the master user change its password"
            )
        _same_server(current, previous, "the AWSCURRENT and previous secrets")
        admin = _master_for(client, current, str(username), f"change the password of user {username}")
        conn = _connect(admin)
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
