"""A named lease row in the database: one holder at a time across processes and machines.

Work that must happen once per installation (the job leader, the audit-trail writer) is done only
while its process holds the row of that name in ``leases``. A lease runs out ``ttl_seconds`` after it
was last taken or renewed, so a holder that dies hands over without anyone cleaning up; a holder that
stops on purpose releases it so the next one need not wait.

Taking and renewing are one conditional upsert - insert the row, or on the existing row take it over
only if it is ours already or has expired - followed by reading the holder back in the same
transaction. A single statement decides, so two processes racing for a free or expired lease cannot
both win: PostgreSQL's ``ON CONFLICT DO UPDATE`` and MariaDB's ``ON DUPLICATE KEY UPDATE`` lock the
row they test, and SQLite writes one transaction at a time. Expiry is wall-clock time (never the
domain clock, which tests and ``--dev`` move forward), so every process compares the same numbers.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterator

from sqlalchemy import Engine, case, or_, select
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.sql.dml import Insert

from khoa.storage import schema

log = logging.getLogger("khoa.lease")

WallClock = Callable[[], float]
_TABLE = schema.leases
_POLL_SECONDS = 0.1


class Lease:
    """The lease ``name`` as held by ``holder`` (a fresh random id unless given) for ``ttl_seconds``.

    ``clock`` returns the wall-clock time in epoch seconds; tests pass their own to make a lease
    run out without waiting.
    """

    def __init__(
        self,
        engine: Engine,
        name: str,
        ttl_seconds: float,
        *,
        holder: str | None = None,
        clock: WallClock = time.time,
    ) -> None:
        if engine.dialect.name not in ("sqlite", "postgresql", "mysql", "mariadb"):
            raise ValueError(f"leases are not supported on {engine.dialect.name}")
        self.engine = engine
        self.name = name
        self.ttl_seconds = ttl_seconds
        self.holder = holder or uuid.uuid4().hex
        self.clock = clock

    def acquire(self) -> bool:
        """Take the lease, or renew it if this holder has it; False while another holder's has not
        expired."""
        now = self.clock()
        with self.engine.begin() as conn:
            conn.execute(self._claim(now))
            current = conn.execute(select(_TABLE.c.holder).where(_TABLE.c.name == self.name)).scalar()
        return bool(current == self.holder)

    def renew(self) -> bool:
        """Push the expiry out while working (the same statement as :meth:`acquire`: a holder whose
        lease ran out and was not taken meanwhile gets it back). False when another holder took it."""
        return self.acquire()

    def release(self) -> None:
        """Give the lease up so another holder can take it at once (nothing happens if this holder
        does not have it)."""
        with self.engine.begin() as conn:
            conn.execute(
                _TABLE.update()
                .where(_TABLE.c.name == self.name)
                .where(_TABLE.c.holder == self.holder)
                .values(expires_at=0.0)
            )

    @contextlib.contextmanager
    def held(self, wait: float = 0.0) -> Iterator[bool]:
        """Hold the lease for the ``with`` block: yields True once taken (trying for up to ``wait``
        seconds), False if another holder kept it. A taken lease is released on the way out; a
        release that fails is logged, not raised, since the lease runs out by itself anyway."""
        deadline = time.monotonic() + wait
        while not self.acquire():
            if time.monotonic() >= deadline:
                yield False
                return
            time.sleep(_POLL_SECONDS)
        try:
            yield True
        finally:
            try:
                self.release()
            except Exception:
                log.exception("could not release the %s lease", self.name)

    def _claim(self, now: float) -> Insert:
        """Insert the row, or take over the existing one only if it is ours or has expired."""
        values = {"name": self.name, "holder": self.holder, "expires_at": now + self.ttl_seconds}
        if self.engine.dialect.name in ("mysql", "mariadb"):
            upsert = mysql.insert(_TABLE).values(values)
            new = upsert.inserted
            # MariaDB has no WHERE on ON DUPLICATE KEY UPDATE, and assigns left to right: holder
            # first (kept unless ours or expired), then the expiry moves only if holder is now ours.
            return upsert.on_duplicate_key_update(
                [
                    (
                        "holder",
                        case(
                            (or_(_TABLE.c.holder == new.holder, _TABLE.c.expires_at < now), new.holder),
                            else_=_TABLE.c.holder,
                        ),
                    ),
                    (
                        "expires_at",
                        case((_TABLE.c.holder == new.holder, new.expires_at), else_=_TABLE.c.expires_at),
                    ),
                ]
            )
        if self.engine.dialect.name == "postgresql":
            pg = postgresql.insert(_TABLE).values(values)
            return pg.on_conflict_do_update(
                index_elements=[_TABLE.c.name],
                set_={"holder": pg.excluded.holder, "expires_at": pg.excluded.expires_at},
                where=or_(_TABLE.c.holder == pg.excluded.holder, _TABLE.c.expires_at < now),
            )
        lite = sqlite.insert(_TABLE).values(values)
        return lite.on_conflict_do_update(
            index_elements=[_TABLE.c.name],
            set_={"holder": lite.excluded.holder, "expires_at": lite.excluded.expires_at},
            where=or_(_TABLE.c.holder == lite.excluded.holder, _TABLE.c.expires_at < now),
        )
