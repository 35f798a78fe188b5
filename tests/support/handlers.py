"""Calling a service's handlers without a server: a migrated SQLite database, a barrier, and request
contexts, so the handler unit tests of every service share one way to set them up.

A handler is tested exactly as the pipeline calls it (``service.handlers[operation](ctx, params)``),
after ``build_service`` bound it to collaborators built here; the parameters are what boto3 would
send once validated. Authorisation is the pipeline's step, not the handler's, and is tested elsewhere.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine

from khoa.access.authorize import Authorizer
from khoa.access.directory import Directory
from khoa.auth.principal import Principal
from khoa.crypto.barrier import ROOT_KEY_BYTES, Barrier
from khoa.protocol.context import RequestContext
from khoa.storage.database import create_database_engine, migrate

ACCOUNT = "111122223333"
OTHER_ACCOUNT = "444455556666"
REGION = "us-east-1"


@functools.cache
def _migrated_template() -> Path:
    """One migrated database per test process; every test starts from a copy (migrating takes
    seconds, copying milliseconds). Removed when the process exits."""
    directory = Path(tempfile.mkdtemp(prefix="khoa-template-"))
    atexit.register(shutil.rmtree, directory, True)
    engine = create_database_engine(f"sqlite:///{directory / 'khoa.db'}")
    migrate(engine)
    engine.dispose()
    return directory / "khoa.db"


def database(directory: Path) -> Engine:
    """A migrated SQLite database in ``directory`` (pytest's ``tmp_path``)."""
    shutil.copy(_migrated_template(), directory / "khoa.db")
    return create_database_engine(f"sqlite:///{directory / 'khoa.db'}")


def barrier() -> Barrier:
    """A barrier under a fresh random root key."""
    return Barrier(os.urandom(ROOT_KEY_BYTES))


def authorizer(engine: Engine) -> Authorizer:
    """The production authoriser over ``engine``'s IAM data (uncached, so tests see every change)."""
    return Authorizer(Directory(engine, cache_seconds=0))


def context(
    service: str,
    operation: str,
    *,
    account: str = ACCOUNT,
    region: str = REGION,
    now: datetime | None = None,
    principal: Principal | None = None,
) -> RequestContext:
    """The facts of one request, by default from the account root in us-east-1 at the current time."""
    return RequestContext(
        principal=principal or Principal.account_root(account),
        region=region,
        request_id="00000000-0000-4000-8000-000000000000",
        service=service,
        operation=operation,
        now=now or datetime.now(UTC),
    )
