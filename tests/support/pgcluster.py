"""A throwaway PostgreSQL cluster for the rotation tests.

The machine's own PostgreSQL (127.0.0.1:5432) trusts every local login, so it cannot show that an old
password stops working. This starts a private cluster from the installed binaries
(``/usr/lib/postgresql/*/bin``): ``initdb`` with ``scram-sha-256`` for host connections and a superuser
with a password, on a free port, in a temporary directory, started with ``pg_ctl`` and removed after.
initdb refuses to run as root, so as root the cluster runs as the ``postgres`` user (``runuser``).

Missing binaries skip the tests visibly, or fail them with ``KHOA_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shlex
import shutil
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.support.server import free_port

SUPERUSER = "khoa_super"
_RUN_AS = "postgres"


def find_bin_dir() -> Path | None:
    """The newest installed PostgreSQL's bin directory holding initdb and pg_ctl."""
    override = os.environ.get("KHOA_TEST_PG_BIN")
    if override:
        return Path(override) if (Path(override) / "initdb").exists() else None
    candidates = []
    for path in glob.glob("/usr/lib/postgresql/*/bin"):
        version = Path(path).parent.name
        if (Path(path) / "initdb").exists() and (Path(path) / "pg_ctl").exists():
            candidates.append((float(version) if version.replace(".", "", 1).isdigit() else 0.0, path))
    return Path(max(candidates)[1]) if candidates else None


@dataclass
class PgCluster:
    """One private cluster; ``start()``/``stop()`` may be called again (a database that is down)."""

    bin_dir: Path
    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="khoa-pg-")))
    port: int = field(default_factory=free_port)
    superuser: str = SUPERUSER
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    _initialised: bool = False

    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    @property
    def log_path(self) -> Path:
        return self.base / "postgres.log"

    @staticmethod
    def _as_owner(args: list[str]) -> list[str]:
        """The command, run as the unprivileged owner when we are root (initdb refuses root)."""
        if os.geteuid() != 0:
            return args
        runuser = shutil.which("runuser")
        if runuser:
            return [runuser, "-u", _RUN_AS, "--", *args]
        return ["su", _RUN_AS, "-s", "/bin/sh", "-c", shlex.join(args)]

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        command = self._as_owner(list(args))
        return subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=True, cwd=str(self.base)
        )

    def init(self) -> None:
        if os.geteuid() == 0:
            owner = pwd.getpwnam(_RUN_AS)
            os.chown(self.base, owner.pw_uid, owner.pw_gid)
        pwfile = self.base / "pwfile"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            os.chown(pwfile, owner.pw_uid, owner.pw_gid)
        pwfile.chmod(0o600)
        self._run(
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            self.superuser,
            f"--pwfile={pwfile}",
            "--auth-local=scram-sha-256",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--no-sync",
        )
        pwfile.unlink()
        hba = (self.data_dir / "pg_hba.conf").read_text()
        assert "scram-sha-256" in hba and "trust" not in "".join(
            line for line in hba.splitlines() if not line.lstrip().startswith("#")
        ), "the cluster must check passwords"
        self._initialised = True

    def start(self) -> PgCluster:
        if not self._initialised:
            self.init()
        options = (
            f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_path),
            "-o",
            options,
            "-w",
            "-t",
            "30",
            "start",
        )
        return self

    def stop(self, mode: str = "fast") -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    # -- using it ---------------------------------------------------------------------------------------
    def connect(
        self, user: str | None = None, password: str | None = None, dbname: str = "postgres"
    ) -> psycopg.Connection[Any]:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=user or self.superuser,
            password=self.password if password is None else password,
            dbname=dbname,
            autocommit=True,
            connect_timeout=5,
        )

    def can_login(self, user: str, password: str, dbname: str = "postgres") -> bool:
        try:
            with self.connect(user, password, dbname) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.OperationalError:
            return False

    def master_secret(self) -> dict[str, Any]:
        """The superuser as a secret (what ``masterarn`` names for the alternating-users strategy)."""
        return {
            "engine": "postgres",
            "host": "127.0.0.1",
            "port": self.port,
            "username": self.superuser,
            "password": self.password,
            "dbname": "postgres",
        }


@dataclass
class PgDatabase:
    """A database and a login user in the cluster, dropped (with the user's clones) afterwards."""

    cluster: PgCluster
    name: str
    username: str
    password: str

    def secret(self, **extra: Any) -> dict[str, Any]:
        return {
            "engine": "postgres",
            "host": "127.0.0.1",
            "port": self.cluster.port,
            "username": self.username,
            "password": self.password,
            "dbname": self.name,
            **extra,
        }

    def can_login(self, user: str, password: str) -> bool:
        return self.cluster.can_login(user, password, self.name)


def create_database(cluster: PgCluster) -> PgDatabase:
    suffix = uuid.uuid4().hex[:8]
    database = PgDatabase(cluster, f"app_{suffix}", f"app_{suffix}", secrets.token_urlsafe(16))
    with cluster.connect() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database.name)))
        conn.execute(
            sql.SQL("CREATE ROLE {} WITH LOGIN PASSWORD {}").format(
                sql.Identifier(database.username), sql.Literal(database.password)
            )
        )
        conn.execute(
            sql.SQL("GRANT ALL ON DATABASE {} TO {}").format(
                sql.Identifier(database.name), sql.Identifier(database.username)
            )
        )
    with cluster.connect(dbname=database.name) as conn:
        conn.execute(sql.SQL("GRANT ALL ON SCHEMA public TO {}").format(sql.Identifier(database.username)))
    return database


def drop_database(database: PgDatabase) -> None:
    cluster = database.cluster
    with cluster.connect() as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database.name)))
        for user in (database.username + "_clone", database.username):
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(user)))


# -- one cluster for the whole session, shared by every module that uses the fixture ----------------------
_shared: dict[str, Any] = {"cluster": None, "users": 0}
_shared_lock = threading.Lock()


def _acquire() -> PgCluster:
    from tests.conftest import missing_service

    with _shared_lock:
        if _shared["cluster"] is None:
            bin_dir = find_bin_dir()
            if bin_dir is None:
                missing_service("no PostgreSQL binaries (initdb, pg_ctl) under /usr/lib/postgresql/*/bin")
            if os.geteuid() == 0:
                try:
                    pwd.getpwnam(_RUN_AS)
                except KeyError:
                    missing_service(f"running as root and there is no {_RUN_AS!r} user to run initdb as")
            assert bin_dir is not None
            cluster = PgCluster(bin_dir)
            try:
                cluster.start()
            except subprocess.CalledProcessError as exc:
                log = cluster.log_path.read_text() if cluster.log_path.exists() else ""
                cluster.destroy()
                missing_service(f"could not start a PostgreSQL cluster: {exc.stderr or exc}\n{log[-2000:]}")
            _shared["cluster"] = cluster
        _shared["users"] += 1
        cluster = _shared["cluster"]
        assert isinstance(cluster, PgCluster)
        return cluster


def _release() -> None:
    with _shared_lock:
        _shared["users"] -= 1
        if _shared["users"] == 0 and _shared["cluster"] is not None:
            _shared["cluster"].destroy()
            _shared["cluster"] = None


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """A running private cluster (scram-sha-256, superuser with a password), destroyed at the end."""
    cluster = _acquire()
    try:
        yield cluster
    finally:
        _release()


@pytest.fixture
def pg_database(pg_cluster: PgCluster) -> Iterator[PgDatabase]:
    """A new database and login user for one test, dropped after."""
    if not (pg_cluster.data_dir / "postmaster.pid").exists():  # a test left it stopped
        pg_cluster.start()
    database = create_database(pg_cluster)
    try:
        yield database
    finally:
        if not (pg_cluster.data_dir / "postmaster.pid").exists():
            pg_cluster.start()
        drop_database(database)
