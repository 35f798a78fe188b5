"""khoa.cache.TTLCache: the one mechanism behind the per-process caches, and their wiring to Settings."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from sqlalchemy import Engine

from khoa import cache
from khoa.access.directory import CallerPolicies, Directory
from khoa.access.evaluate import Decision
from khoa.auth.credentials import Credential, CredentialStore
from khoa.auth.principal import Principal
from khoa.blocking import WouldBlock, on_the_loop
from khoa.bootstrap import load_barrier
from khoa.cache import MISSING, TTLCache
from khoa.crypto.barrier import Barrier
from khoa.runtime import Runtime
from khoa.services.kms.store.tags import TagStore
from khoa.settings import Settings
from khoa.storage.database import create_database_engine, migrate


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeMonotonic:
    fake = FakeMonotonic()
    monkeypatch.setattr(cache, "monotonic", fake)
    return fake


def test_entries_live_for_the_lifetime(clock: FakeMonotonic) -> None:
    entries: TTLCache[str, int | None] = TTLCache(2.0)
    assert entries.get("a") is MISSING
    entries.put("a", 1)
    entries.put("gone", None)  # "no such row" is worth caching, and is not MISSING
    clock.now += 1.999
    assert entries.get("a") == 1 and entries.get("gone") is None
    clock.now += 0.001
    assert entries.get("a") is MISSING and entries.get("gone") is MISSING
    entries.put("a", 2)
    assert entries.get("a") == 2


def test_an_entry_is_refreshed_ahead_by_one_read_on_the_loop(clock: FakeMonotonic) -> None:
    """In the last quarter of its life an entry is refreshed by one call: the first read on the event
    loop misses (and so loads on a request thread, where its read misses again and stores), while
    the other reads go on with the entry; off the loop an unclaimed entry is used as it is, and
    nothing is ever used past its lifetime."""
    entries: TTLCache[str, int] = TTLCache(2.0)  # refreshed in its last 0.5 s
    entries.put("a", 1)
    clock.now += 1.4
    with on_the_loop():
        assert entries.get("a") == 1  # 0.6 s left: not yet
    clock.now += 0.2
    with on_the_loop():
        assert entries.get("a") is MISSING  # this read claims the refresh
        assert entries.get("a") == 1  # the others go on with the entry
    assert entries.get("a") is MISSING  # the claiming call, run again off the loop
    entries.put("a", 2)
    with on_the_loop():
        assert entries.get("a") == 2  # young again, nothing claimed
    clock.now += 1.6
    assert entries.get("a") == 2  # off the loop and unclaimed: as it is
    clock.now += 0.4
    assert entries.get("a") is MISSING  # expired, for every read
    with on_the_loop():
        assert entries.get("a") is MISSING


def test_load_refreshes_ahead_and_a_failed_refresh_lapses(clock: FakeMonotonic) -> None:
    entries: TTLCache[str, int] = TTLCache(2.0)
    loads: list[int] = []

    def loader() -> int:
        loads.append(1)
        return len(loads)

    def blocked() -> int:  # a read of the database tried on the event loop
        raise WouldBlock("a database read")

    assert entries.load("k", loader) == 1
    clock.now += 1.6
    with on_the_loop():
        with pytest.raises(WouldBlock):
            entries.load("k", blocked)  # claims the refresh: the call moves to a request thread
        assert entries.load("k", blocked) == 1  # the others use the entry meanwhile
    assert entries.load("k", loader) == 2  # the claimed refresh, run again off the loop
    with on_the_loop():
        assert entries.load("k", blocked) == 2  # stored young: no refresh claimed
    clock.now += 1.6
    with on_the_loop(), pytest.raises(WouldBlock):
        entries.load("k", blocked)
    clock.now += 0.3  # the claim's refresh never came (0.1 s left, its window 0.5 s not over)
    with on_the_loop():
        assert entries.load("k", blocked) == 2
    entries.invalidate("k")  # an invalidation forgets the claim with the entry
    with on_the_loop():
        assert entries.load("k", loader) == 3


def test_zero_lifetime_keeps_nothing(clock: FakeMonotonic) -> None:
    entries: TTLCache[str, int] = TTLCache(0)
    entries.put("a", 1)
    assert entries.get("a") is MISSING and len(entries) == 0


def test_invalidate_clear_and_size_bound(clock: FakeMonotonic) -> None:
    entries: TTLCache[int, int] = TTLCache(5.0, max_size=3)
    for key in range(3):
        entries.put(key, key)
    entries.invalidate(1)
    entries.invalidate(99)  # not there: nothing happens
    assert entries.get(1) is MISSING and entries.get(2) == 2
    entries.put(3, 3)
    entries.put(4, 4)  # full: emptied, then the new entry
    assert len(entries) == 1 and entries.get(4) == 4
    entries.clear()
    assert entries.get(4) is MISSING


def _ttl_caches(owner: object) -> list[TTLCache[object, object]]:
    return [value for value in vars(owner).values() if isinstance(value, TTLCache)]


def test_lifetimes_come_from_settings_and_clear_caches_empties_them_all(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        credential_cache_seconds=11.0,
        policy_cache_seconds=12.0,
        metadata_cache_seconds=13.0,
    )
    engine = create_database_engine(settings.effective_database_url)
    migrate(engine)
    load_barrier(settings, engine, create=True)
    engine.dispose()
    runtime = Runtime.build(settings)
    try:
        owners: dict[float, list[object]] = {
            11.0: [runtime.credentials],
            12.0: [runtime.authorizer.directory],
            13.0: [runtime.kms.store.keys, runtime.secrets.store, runtime.parameters],
        }
        every: list[TTLCache[object, object]] = []
        for lifetime, objects in owners.items():
            for owner in objects:
                found = _ttl_caches(owner)
                assert found, f"{type(owner).__name__} has no TTLCache"
                assert {c.ttl for c in found} == {lifetime}, type(owner).__name__
                every.extend(found)
        assert len(every) == 1 + 3 + 2 + 4 + 2  # the directory caches policies, SCPs and org places
        for entries in every:
            entries.put("k", "v")
        decisions = runtime.authorizer._decisions
        decisions.put(decisions.key(("k",), (), {}), Decision(True), ())
        runtime.clear_caches()
        assert all(len(entries) == 0 for entries in every)
        assert len(decisions) == 0  # the memo of decisions goes with the policies
    finally:
        runtime.close()


# -- a load that races a clear (a revocation) or an invalidation is not stored -----------------------
# Each test runs the pieces in one chosen order: a reader reads the database, a revocation commits and
# clears the caches, and only then does the reader store what it read (finding: a request thread on
# PostgreSQL could do exactly that, and the node that acknowledged the revocation went on allowing).


def test_a_load_raced_by_a_clear_is_returned_but_not_stored() -> None:
    entries: TTLCache[str, str] = TTLCache(60.0)

    def revoked_meanwhile() -> str:
        entries.clear()  # the revocation commits while the loader holds what it read
        return "old"

    assert entries.load("k", revoked_meanwhile) == "old"
    assert entries.get("k") is MISSING
    assert entries.load("k", lambda: "new") == "new"
    assert entries.load("k", lambda: "unused") == "new"  # stored: nothing raced it


def test_a_load_raced_by_an_invalidation_of_its_key_only_is_not_stored() -> None:
    entries: TTLCache[str, str] = TTLCache(60.0)

    def invalidating(key: str) -> Callable[[], str]:
        def load() -> str:
            entries.invalidate(key)
            return "read"

        return load

    entries.load("k", invalidating("k"))
    assert entries.get("k") is MISSING
    entries.load("k", invalidating("other"))  # another key's change leaves this load alone
    assert entries.get("k") == "read"


def test_get_then_put_is_dropped_when_a_clear_came_between() -> None:
    entries: TTLCache[str, str] = TTLCache(60.0)
    assert entries.get("k") is MISSING  # a miss: the reader goes to the database
    entries.clear()
    entries.put("k", "old")
    assert entries.get("k") is MISSING
    entries.put("k", "new")  # no miss before it (the one above was answered): stored as is
    assert entries.get("k") == "new"
    entries.invalidate("k")
    assert entries.get("k") is MISSING
    entries.put("k", "fresh")  # nothing came between this miss and this put
    assert entries.get("k") == "fresh"


def test_each_thread_put_answers_for_its_own_miss() -> None:
    entries: TTLCache[str, str] = TTLCache(60.0)
    with ThreadPoolExecutor(1) as first, ThreadPoolExecutor(1) as second:
        assert first.submit(entries.get, "k").result() is MISSING  # read before the revocation
        entries.clear()
        assert second.submit(entries.get, "k").result() is MISSING  # read after it
        second.submit(entries.put, "k", "new").result()
        first.submit(entries.put, "k", "old").result()  # too late: dropped
    assert entries.get("k") == "new"


def test_many_invalidations_are_kept_as_one_clear_of_the_loads_in_flight() -> None:
    entries: TTLCache[int, str] = TTLCache(60.0)
    entries.put(-1, "kept")

    def load() -> str:
        for key in range(cache.INVALIDATIONS_KEPT + 1):
            entries.invalidate(key)
        return "read"

    entries.load(-2, load)
    assert entries.get(-2) is MISSING and entries.get(-1) == "kept"


class RacedRead:
    """An engine whose every read returns ``rows`` and then, as the reader closes its connection
    (before it stores what it read), runs ``meanwhile`` once: a revocation committed on another thread
    and the node's caches cleared."""

    def __init__(self, rows: list[Any]) -> None:
        self.rows = rows
        self.meanwhile: Callable[[], None] | None = None

    @contextmanager
    def connect(self) -> Iterator[Any]:
        yield self
        action, self.meanwhile = self.meanwhile, None
        if action is not None:
            action()

    def execute(self, statement: object) -> Any:
        rows = list(self.rows)
        return SimpleNamespace(all=lambda: rows, first=lambda: rows[0] if rows else None)


def test_tags_read_before_an_untag_are_not_cached_after_it() -> None:
    # finding 2's reproducer: a key policy allows kms:Encrypt only with the tag team=blue
    engine = RacedRead([("team", "blue")])
    tags = TagStore(cast(Engine, engine), cache_seconds=60.0)

    def untag() -> None:  # UntagResource commits, and the node clears its caches
        engine.rows.clear()
        tags.clear_cache()

    engine.meanwhile = untag
    assert tags.of("key") == {"team": "blue"}  # what the read saw
    assert tags.of("key") == {}  # the next request reads again


def test_the_directory_keeps_nothing_read_before_a_revocation(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = RacedRead([SimpleNamespace(org_id="o-1", root_id="r-1")])
    directory = Directory(cast(Engine, engine), cache_seconds=60.0)

    def leave() -> None:  # the account leaves its organization, and the node clears its caches
        engine.rows.clear()
        directory.clear()

    engine.meanwhile = leave
    assert directory.organization_of("111122223333") == ("o-1", ("o-1/r-1/",))
    assert directory.organization_of("111122223333") is None

    loads: list[str] = []

    def load_policies(principal: Principal) -> CallerPolicies:
        loads.append(principal.arn)
        if len(loads) == 1:
            directory.clear()  # a policy detached while the first read ran
        return CallerPolicies(arn=f"read {len(loads)}")

    monkeypatch.setattr(directory, "_load", load_policies)
    user = Principal(
        "111122223333", "arn:aws:iam::111122223333:user/u", "AIDA1", "IAMUser", principal_id="AIDA1"
    )
    assert directory.for_principal(user).arn == "read 1"
    assert directory.for_principal(user).arn == "read 2"
    assert directory.for_principal(user).arn == "read 2"  # cached once nothing raced it

    levels: list[int] = []

    def load_scps(account_id: str) -> tuple[()]:
        levels.append(1)
        if len(levels) == 1:
            directory.clear()
        return ()

    monkeypatch.setattr(directory, "_load_scps", load_scps)
    directory.scps_for("111122223333")
    directory.scps_for("111122223333")
    assert len(levels) == 2


def test_a_credential_read_before_its_deletion_is_not_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    store = CredentialStore(cast(Engine, None), Barrier(os.urandom(32)), cache_seconds=60.0)
    key = Credential(secret="s", principal=Principal.account_root("111122223333", "AKIAEXAMPLE"))
    stored: list[Credential | None] = [key]

    def load(access_key_id: str) -> Credential | None:
        found = stored[0]
        stored[0] = None  # DeleteAccessKey commits and the node clears its caches
        store.clear()
        return found

    monkeypatch.setattr(store, "_load", load)
    assert store.lookup("AKIAEXAMPLE") is key  # the request that read it before the deletion
    assert store.lookup("AKIAEXAMPLE") is None  # the next one does not find it
