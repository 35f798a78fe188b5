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

Fencing (:class:`WriteFence`): a holder that stalls (a paused process, a slow database) may go on
working after its lease ran out and another holder took it. Work done under the fence checks, inside
each writing transaction and before its first write, that the lease row still names this holder and
has not expired, reading it ``FOR SHARE``: the new holder's takeover (an upsert of that row) waits for
the share lock, so every write the old holder commits is ordered before the takeover, and once the
row names someone else the old holder's writes raise :class:`LeaseLost` and roll back. (SQLite runs
one writing transaction at a time, so the check and the write cannot be split by a takeover there.)
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator

from sqlalchemy import Connection, Engine, case, event, or_, select
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.sql.dml import Insert

from khoa.storage import schema

log = logging.getLogger("khoa.lease")

WallClock = Callable[[], float]
_TABLE = schema.leases
_POLL_SECONDS = 0.1
_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "MERGE")


class LeaseLost(Exception):
    """This holder no longer has the lease: the work it guards must stop and write nothing more."""


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

    def check(self, conn: Connection) -> None:
        """Raise :class:`LeaseLost` unless this holder has the lease and it has not expired, reading
        the row inside ``conn``'s transaction (share-locked where the database can), so a takeover
        cannot commit before that transaction ends."""
        query = select(_TABLE.c.holder, _TABLE.c.expires_at).where(_TABLE.c.name == self.name)
        if self.engine.dialect.name != "sqlite":
            query = query.with_for_update(read=True)
        row = conn.execute(query).first()
        if row is None or row.holder != self.holder or row.expires_at <= self.clock():
            raise LeaseLost(f"the {self.name} lease is no longer held by this process")

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


class WriteFence:
    """Refuses writes made on a fenced thread once ``lease`` is lost (see the module docstring).

    Installed once on the lease's engine; only threads inside :meth:`active` are fenced, so request
    handling and the audit writer (their own threads) are untouched. Each write statement on a fenced
    thread is preceded by :meth:`Lease.check` on the same connection, so it is in the same transaction.
    """

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self._local = threading.local()
        event.listen(lease.engine, "before_cursor_execute", self._before_execute)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Fence this thread's writes for the ``with`` block."""
        self._local.fenced = True
        try:
            yield
        finally:
            self._local.fenced = False

    def close(self) -> None:
        """Remove the listener (a runner that is thrown away, in tests)."""
        if event.contains(self.lease.engine, "before_cursor_execute", self._before_execute):
            event.remove(self.lease.engine, "before_cursor_execute", self._before_execute)

    def _before_execute(
        self,
        conn: Connection,
        cursor: object,
        statement: str,
        parameters: object,
        context: object,
        many: bool,
    ) -> None:
        local = self._local
        if not getattr(local, "fenced", False) or getattr(local, "checking", False):
            return
        if not statement.lstrip()[:7].upper().startswith(_WRITES):
            return
        local.checking = True
        try:
            self.lease.check(conn)
        finally:
            local.checking = False
