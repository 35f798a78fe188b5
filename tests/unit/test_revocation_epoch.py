"""The revocation epoch (khoa.auth.revocation) and the settings around caches, regions and timeouts."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest

from khoa.auth.regions import AWS_COMMERCIAL_REGIONS
from khoa.auth.revocation import FILE_NAME, RevocationEpoch, open_epoch
from khoa.settings import Settings


def _bump_many(path: str, times: int) -> None:
    epoch = RevocationEpoch(Path(path))
    for _ in range(times):
        epoch.bump()
    epoch.close()


def test_processes_mapping_one_file_see_each_others_bumps(tmp_path: Path) -> None:
    first = RevocationEpoch(tmp_path / FILE_NAME)
    second = RevocationEpoch(tmp_path / FILE_NAME)
    before = first.current()
    assert second.current() == before
    second.bump()
    assert first.current() == before + 1
    first.bump()
    assert second.current() == before + 2
    first.close()
    second.close()


def test_concurrent_bumps_from_processes_are_all_counted(tmp_path: Path) -> None:
    path = tmp_path / FILE_NAME
    epoch = RevocationEpoch(path)
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_bump_many, args=(str(path), 200)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert epoch.current() == 600  # the flock serialises read-increment-write
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    epoch.close()


def test_an_unusable_data_dir_falls_back_to_a_process_local_epoch(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        missing = tmp_path / "no" / "such" / "dir"  # root ignores permissions; a missing dir still fails
    else:
        missing = tmp_path / "locked"
        missing.mkdir(mode=0o500)
    epoch = open_epoch(missing)
    assert epoch.path is None
    start = epoch.current()
    assert epoch.bump() == start + 1 and epoch.current() == start + 1


def test_settings_defaults_and_refusals(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("KHOA_"):
            monkeypatch.delenv(name)
    settings = Settings.from_env()
    assert settings.regions == AWS_COMMERCIAL_REGIONS
    assert (settings.credential_cache_seconds, settings.policy_cache_seconds) == (5.0, 2.0)
    assert (settings.body_timeout_seconds, settings.stream_recheck_seconds) == (10.0, 5.0)
    assert Settings.from_env(**{}).to_env()["KHOA_REGIONS"].split(",") == list(AWS_COMMERCIAL_REGIONS)

    monkeypatch.setenv("KHOA_REGIONS", "eu-west-1, us-east-1")
    assert Settings.from_env().regions == ("eu-west-1", "us-east-1")
    for name, value, complaint in [
        ("KHOA_REGIONS", "eu-west-1", "KHOA_DEFAULT_REGION"),
        ("KHOA_REGIONS", "us-east-1,EU", "KHOA_REGIONS"),
        ("KHOA_CREDENTIAL_CACHE_SECONDS", "-1", "KHOA_CREDENTIAL_CACHE_SECONDS"),
        ("KHOA_POLICY_CACHE_SECONDS", "nan", "KHOA_POLICY_CACHE_SECONDS"),
        ("KHOA_BODY_TIMEOUT_SECONDS", "0", "KHOA_BODY_TIMEOUT_SECONDS"),
        ("KHOA_STREAM_RECHECK_SECONDS", "0", "KHOA_STREAM_RECHECK_SECONDS"),
    ]:
        with monkeypatch.context() as patch:
            patch.setenv(name, value)
            with pytest.raises(ValueError, match=complaint):
                Settings.from_env()


def test_settings_round_trip_through_the_worker_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("KHOA_"):
            monkeypatch.delenv(name)
    original = Settings(
        regions=("us-east-1", "eu-west-3"),
        credential_cache_seconds=0.0,
        policy_cache_seconds=7.5,
        body_timeout_seconds=3.0,
        stream_recheck_seconds=2.0,
    )
    for name, value in original.to_env().items():
        monkeypatch.setenv(name, value)
    again = Settings.from_env()
    assert again.regions == original.regions
    assert again.credential_cache_seconds == 0.0 and again.policy_cache_seconds == 7.5
    assert again.body_timeout_seconds == 3.0 and again.stream_recheck_seconds == 2.0
    assert "KHOA_TEST_CLOCK" not in original.to_env()
