"""Settings are declared once (khoa.envconfig): reading, the worker environment and the checks agree."""

from __future__ import annotations

import re
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pytest

from khoa import envconfig
from khoa.alerts.config import AlertSettings
from khoa.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"

# A value other than the default for every field (a new field must be added here: see the test below).
NON_DEFAULT: dict[str, Any] = {
    "host": "0.0.0.0",
    "port": 9555,
    "data_dir": Path("/var/lib/khoa"),
    "database_url": "postgresql+psycopg://khoa@db/khoa",
    "database_timeout_seconds": 2.5,
    "database_connect_timeout_seconds": 4.0,
    "workers": 4,
    "dev": True,
    "seal_backend": "passphrase",
    "passphrase": "correct horse",
    "seal_awskms_key_id": "alias/khoa-seal",
    "seal_awskms_endpoint": "https://kms.example",
    "seal_awskms_region": "eu-west-3",
    "seal_pkcs11_module": "/usr/lib/softhsm/libsofthsm2.so",
    "seal_pkcs11_token_label": "khoa",
    "seal_pkcs11_key_label": "khoa-root-wrap",
    "seal_pkcs11_pin_env": "HSM_PIN",
    "account_id": "123456789012",
    "root_access_key_id": "AKIAEXAMPLEEXAMPLE12",
    "root_secret_access_key": "c2VjcmV0L2tleQ+with/slash",
    "default_region": "eu-west-3",
    "regions": ("eu-west-3", "us-east-1"),
    "max_body_bytes": 2048,
    "body_timeout_seconds": 2.5,
    "stream_recheck_seconds": 0.25,
    "stream_max_subscriptions": 50,
    "stream_max_subscriptions_per_principal": 5,
    "job_interval_seconds": 0.5,
    "console_session_seconds": 120.0,
    "console_idle_seconds": 60.0,
    "job_lease_seconds": 3.0,
    "rotation_step_timeout_seconds": 5.0,
    "credential_cache_seconds": 0.0,
    "policy_cache_seconds": 7.5,
    "metadata_cache_seconds": 0.125,
    "audit_enabled": False,
    "tls_cert": "/etc/khoa/cert.pem",
    "tls_key": "/etc/khoa/key.pem",
    "private_networks": "10.0.0.0/8=vpc-0abc",
    "trusted_proxies": "127.0.0.1/32",
    "xks_proxy_networks": "10.1.0.0/16,127.0.0.1/32",
    "audit_dir": "/var/log/khoa",
    "audit_retention_days": 7.0,
    "audit_delivery_seconds": 60.0,
    "audit_digest_seconds": 600.0,
    "review_naming_pattern": "^[a-z]+/.+$",
    "review_unused_days": 30.0,
    "cpu_affinity": "off",
    "cpu_claim_dir": "/run/khoa-cpu",
    "gil_switch_interval_ms": 0.0,
}
NON_DEFAULT_ALERTS: dict[str, Any] = {
    "enabled": False,
    "disable": "rotation-failed,new-secret-reader",
    "webhook_url": "https://alerts.example/hook",
    "webhook_secret": "s3cret",
    "slack_url": "http://slack.example/hook",
    "webhook_attempts": 5,
    "webhook_timeout_seconds": 1.5,
    "delivery_give_up_seconds": 60.0,
    "allowed_networks": "10.0.0.0/8,2001:db8::/32",
    "network_window_seconds": 60.0,
    "key_recent_use_days": 3.0,
    "access_denied_threshold": 2,
    "access_denied_factor": 1.5,
    "access_denied_window_seconds": 30.0,
    "access_denied_baseline_seconds": 300.0,
    "decrypt_failure_threshold": 1,
    "decrypt_failure_window_seconds": 30.0,
    "rotation_failure_cooldown_seconds": 60.0,
    "audit_sink_cooldown_seconds": 30.0,
    "audit_delivery_cooldown_seconds": 45.0,
    "leak_check_threshold": 12,
    "leak_check_window_seconds": 30.0,
    "secret_leaked_cooldown_seconds": 600.0,
}


def non_default() -> Settings:
    return replace(Settings(), alerts=AlertSettings(**NON_DEFAULT_ALERTS), **NON_DEFAULT)


def test_the_non_default_values_cover_every_field() -> None:
    assert set(NON_DEFAULT) | {"alerts"} == {f.name for f in fields(Settings)}
    assert set(NON_DEFAULT_ALERTS) == {f.name for f in fields(AlertSettings)}
    settings, defaults = non_default(), Settings()
    for name in NON_DEFAULT:
        assert getattr(settings, name) != getattr(defaults, name), name
    for name in NON_DEFAULT_ALERTS:
        assert getattr(settings.alerts, name) != getattr(defaults.alerts, name), name


@pytest.mark.parametrize("settings", [Settings(), non_default()], ids=["defaults", "non-default"])
def test_the_worker_environment_reproduces_the_settings(settings: Settings) -> None:
    env = settings.to_env()
    assert Settings.from_env(env) == settings
    assert AlertSettings.from_env(env) == settings.alerts
    # Every field of the settings is written (a worker must not fall back to a default).
    assert set(env) == {v.name for v in envconfig.variables(Settings)}


def test_each_field_round_trips_on_its_own() -> None:
    for name, value in NON_DEFAULT.items():
        if name == "default_region":  # must be one of the served regions
            settings = replace(Settings(), default_region="eu-west-3")
        else:
            settings = replace(Settings(), **{name: value})
        assert Settings.from_env(settings.to_env()) == settings, name
    for name, value in NON_DEFAULT_ALERTS.items():
        alerts = replace(AlertSettings(), **{name: value})
        assert AlertSettings.from_env(alerts.to_env()) == alerts, name


def test_variable_names_are_unique_and_named_khoa() -> None:
    names = [v.name for v in envconfig.variables(Settings)]
    assert len(names) == len(set(names))
    assert all(re.fullmatch(r"KHOA_[A-Z0-9_]+", name) for name in names)


def test_readme_environment_table_lists_exactly_the_declared_variables() -> None:
    lines = README.read_text().splitlines()
    start = lines.index("| environment | meaning |")
    table: list[str] = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        table.append(line)
    documented = set(re.findall(r"`(KHOA_[A-Z0-9_]+)", "\n".join(table)))
    assert documented == {v.name for v in envconfig.variables(Settings)}


def test_unset_and_blank_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings.from_env({}) == Settings()
    # Blank: the default for CPU affinity and the alerts' numbers and switch; text is kept as given.
    blank = Settings.from_env(
        {"KHOA_CPU_AFFINITY": " ", "KHOA_ALERTS": "", "KHOA_ALERT_WEBHOOK_ATTEMPTS": ""}
    )
    assert blank == Settings()
    assert Settings.from_env({"KHOA_AUDIT": ""}).audit_enabled is False  # as before: not one of 1/true/yes/on
    with pytest.raises(ValueError, match="invalid literal for int"):
        Settings.from_env({"KHOA_PORT": ""})
    # os.environ is the default source; overrides (command-line flags) win, None means "not given".
    monkeypatch.setenv("KHOA_PORT", "9001")
    monkeypatch.setenv("KHOA_WORKERS", "3")
    settings = Settings.from_env(port=9002, workers=None)
    assert (settings.port, settings.workers) == (9002, 3)
    with pytest.raises(TypeError, match="no field env"):
        Settings.from_env(env={})  # the environment is positional


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            "KHOA_METADATA_CACHE_SECONDS",
            "301",
            "KHOA_METADATA_CACHE_SECONDS must be between 0 and 300 seconds, not 301.0",
        ),
        (
            "KHOA_CREDENTIAL_CACHE_SECONDS",
            "-1",
            "KHOA_CREDENTIAL_CACHE_SECONDS must be between 0 and 300 seconds, not -1.0",
        ),
        (
            "KHOA_POLICY_CACHE_SECONDS",
            "nan",
            "KHOA_POLICY_CACHE_SECONDS must be between 0 and 300 seconds, not nan",
        ),
        (
            "KHOA_BODY_TIMEOUT_SECONDS",
            "0",
            "KHOA_BODY_TIMEOUT_SECONDS must be more than 0 and at most 3600, not 0.0",
        ),
        (
            "KHOA_STREAM_RECHECK_SECONDS",
            "301",
            "KHOA_STREAM_RECHECK_SECONDS must be more than 0 and at most 300, not 301.0",
        ),
        ("KHOA_CPU_AFFINITY", "Bogus", "KHOA_CPU_AFFINITY must be one of auto, off, not 'bogus'"),
        (
            "KHOA_REGIONS",
            "eu-west-1",
            "KHOA_DEFAULT_REGION 'us-east-1' is not one of the served regions (KHOA_REGIONS)",
        ),
        ("KHOA_ALERT_DISABLE", "nope", "KHOA_ALERT_DISABLE names unknown rules: nope"),
        ("KHOA_ALERT_WEBHOOK_URL", "ftp://x", "KHOA_ALERT_WEBHOOK_URL must be an http(s) URL"),
    ],
)
def test_refusals_name_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(ValueError) as refused:
        Settings.from_env({name: value})
    assert str(refused.value) == message
