"""The machine's MariaDB (or MySQL) for the rotation tests: a database and users per test, dropped after.

The server is reached as ``root`` with an empty password on 127.0.0.1:3306 (``KHOA_TEST_MYSQL_HOST``,
``KHOA_TEST_MYSQL_PORT``, ``KHOA_TEST_MYSQL_USER``, ``KHOA_TEST_MYSQL_PASSWORD`` override it); the users
the tests create have passwords, which the server checks. Unreachable: skipped visibly, or failed with
``KHOA_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pymysql
import pytest

HOST = os.environ.get("KHOA_TEST_MYSQL_HOST", "127.0.0.1")
PORT = int(os.environ.get("KHOA_TEST_MYSQL_PORT", "3306"))
ROOT_USER = os.environ.get("KHOA_TEST_MYSQL_USER", "root")
ROOT_PASSWORD = os.environ.get("KHOA_TEST_MYSQL_PASSWORD", "")


def connect(user: str = ROOT_USER, password: str = ROOT_PASSWORD, database: str | None = None) -> Any:
    return pymysql.connect(
        host=HOST,
        port=PORT,
        user=user,
        password=password,
        database=database,
        connect_timeout=5,
        autocommit=True,
    )


@dataclass
class MariaDatabase:
    """A database, an application user with rights on it, and an admin user (the ``masterarn`` secret)."""

    name: str
    username: str
    password: str
    admin_user: str
    admin_password: str
    created_users: list[str] = field(default_factory=list)

    def secret(self, **extra: Any) -> dict[str, Any]:
        return {
            "engine": "mariadb",
            "host": HOST,
            "port": PORT,
            "username": self.username,
            "password": self.password,
            "dbname": self.name,
            **extra,
        }

    def master_secret(self) -> dict[str, Any]:
        return {
            "engine": "mariadb",
            "host": HOST,
            "port": PORT,
            "username": self.admin_user,
            "password": self.admin_password,
            "dbname": self.name,
        }

    def can_login(self, user: str, password: str) -> bool:
        try:
            conn = connect(user, password, self.name)
        except pymysql.err.OperationalError:
            return False
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT 1")
            return True
        finally:
            conn.close()


def create_database() -> MariaDatabase:
    suffix = uuid.uuid4().hex[:8]
    database = MariaDatabase(
        name=f"khoa_app_{suffix}",
        username=f"app_{suffix}",
        password=secrets.token_urlsafe(16),
        admin_user=f"admin_{suffix}",
        admin_password=secrets.token_urlsafe(16),
    )
    root = connect()
    try:
        with root.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE `{database.name}`")
            cursor.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (database.username, database.password))
            cursor.execute(f"GRANT ALL PRIVILEGES ON `{database.name}`.* TO %s@'%%'", (database.username,))
            cursor.execute(
                "CREATE USER %s@'%%' IDENTIFIED BY %s", (database.admin_user, database.admin_password)
            )
            cursor.execute("GRANT ALL PRIVILEGES ON *.* TO %s@'%%' WITH GRANT OPTION", (database.admin_user,))
    finally:
        root.close()
    database.created_users = [database.username, database.username + "_clone", database.admin_user]
    return database


def drop_database(database: MariaDatabase) -> None:
    root = connect()
    try:
        with root.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{database.name}`")
            for user in database.created_users:
                cursor.execute("DROP USER IF EXISTS %s@'%%'", (user,))
    finally:
        root.close()


@pytest.fixture
def maria_database() -> Iterator[MariaDatabase]:
    """A database with its application and admin users for one test, all dropped after."""
    from tests.conftest import missing_service

    try:
        connect().close()
    except pymysql.err.Error as exc:
        missing_service(f"MariaDB/MySQL at {HOST}:{PORT} is not reachable as {ROOT_USER}: {exc}")
    database = create_database()
    try:
        yield database
    finally:
        drop_database(database)
