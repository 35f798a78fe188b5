"""khoa.cache.TTLCache: the one mechanism behind the per-process caches, and their wiring to Settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from khoa import cache
from khoa.access.evaluate import Decision
from khoa.bootstrap import load_barrier
from khoa.cache import MISSING, TTLCache
from khoa.runtime import Runtime
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
        owners = {
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
        assert len(every) == 1 + 2 + 2 + 4 + 2  # the directory caches policies and SCPs
        for entries in every:
            entries.put("k", "v")
        decisions = runtime.authorizer._decisions
        decisions.put(decisions.key(("k",), (), {}), Decision(True), ())
        runtime.clear_caches()
        assert all(len(entries) == 0 for entries in every)
        assert len(decisions) == 0  # the memo of decisions goes with the policies
    finally:
        runtime.close()
