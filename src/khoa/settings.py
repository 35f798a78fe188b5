"""Configuration: command-line flags win over ``KHOA_*`` environment variables, which win over defaults.

Each setting is declared once, below, with its variable's name, parser and allowed values
(:mod:`khoa.envconfig`); reading, the worker environment (:meth:`Settings.to_env`) and the checks follow
from that declaration. README's environment table lists the same names (tests/unit/test_settings.py).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from khoa import affinity, envconfig
from khoa.alerts.config import AlertSettings
from khoa.auth.regions import AWS_COMMERCIAL_REGIONS, parse_regions
from khoa.cache import METADATA_SECONDS
from khoa.envconfig import dump_bool, group, more_than_at_most, one_of, parse_bool, seconds_between, variable
from khoa.storage.database import DEFAULT_CONNECT_TIMEOUT_SECONDS, DEFAULT_TIMEOUT_SECONDS

DEFAULT_REGION = "us-east-1"
# Per-process caches (README "Cache lifetimes"): at most 300 s, 0 turns one off.
_CACHE_SECONDS = seconds_between(0, 300)


def _cidrs(name: str, value: str) -> None:
    """A comma-separated list of CIDRs (refused at start, not at the first call that reads it)."""
    for part in value.split(","):
        if part.strip():
            try:
                ipaddress.ip_network(part.strip(), strict=False)
            except ValueError:
                raise ValueError(
                    f"{name} must list CIDRs (e.g. 10.0.0.0/8,127.0.0.1/32), not {part.strip()!r}"
                ) from None


def _lower(raw: str) -> str:
    return raw.strip().lower()


@dataclass(frozen=True)
class Settings:
    host: str = variable("KHOA_HOST", "127.0.0.1", str)
    port: int = variable("KHOA_PORT", 9440, int, check=more_than_at_most(0, 65535))  # 1-65535
    # variable() and group() return dataclasses.field(...) specifiers, not shared mutable defaults.
    data_dir: Path = variable("KHOA_DATA_DIR", Path(".khoa"), Path)  # noqa: RUF009
    database_url: str = variable("KHOA_DATABASE_URL", "", str)
    # How long anything may wait on the database: a statement, a lock, a pooled connection, a silent
    # socket (khoa.storage.database explains the defaults: 5 s is ~1000x a healthy statement and well
    # inside an SDK's read timeout). A call that hits it fails with a 503 the caller retries.
    database_timeout_seconds: float = variable(
        "KHOA_DATABASE_TIMEOUT_SECONDS", DEFAULT_TIMEOUT_SECONDS, float, check=more_than_at_most(0, 300)
    )
    # Opening a connection (PostgreSQL; libpq counts whole seconds, at least 2).
    database_connect_timeout_seconds: float = variable(
        "KHOA_DATABASE_CONNECT_TIMEOUT_SECONDS",
        DEFAULT_CONNECT_TIMEOUT_SECONDS,
        float,
        check=more_than_at_most(0, 60),
    )
    workers: int = variable("KHOA_WORKERS", 1, int)
    dev: bool = variable("KHOA_DEV", False, parse_bool, dump=dump_bool)
    seal_backend: str = variable("KHOA_SEAL_BACKEND", "file", str)
    passphrase: str = variable("KHOA_PASSPHRASE", "", str)
    # Auto-unseal backends (khoa.crypto.seal_wrappers): awskms wraps the root key with KMS Encrypt under
    # this key id at this endpoint (blank: AWS's own; credentials from the standard AWS chain) ...
    seal_awskms_key_id: str = variable("KHOA_SEAL_AWSKMS_KEY_ID", "", str)
    seal_awskms_endpoint: str = variable("KHOA_SEAL_AWSKMS_ENDPOINT", "", str)
    seal_awskms_region: str = variable("KHOA_SEAL_AWSKMS_REGION", "", str)
    # ... pkcs11 with an AES key in an HSM (the user PIN is read from the variable named here).
    seal_pkcs11_module: str = variable("KHOA_SEAL_PKCS11_MODULE", "", str)
    seal_pkcs11_token_label: str = variable("KHOA_SEAL_PKCS11_TOKEN_LABEL", "", str)
    seal_pkcs11_key_label: str = variable("KHOA_SEAL_PKCS11_KEY_LABEL", "khoa-seal", str)
    seal_pkcs11_pin_env: str = variable("KHOA_SEAL_PKCS11_PIN_ENV", "KHOA_SEAL_PKCS11_PIN", str)
    account_id: str = variable("KHOA_ACCOUNT_ID", "", str)
    root_access_key_id: str = variable("KHOA_ROOT_ACCESS_KEY_ID", "", str)
    root_secret_access_key: str = variable("KHOA_ROOT_SECRET_ACCESS_KEY", "", str)
    default_region: str = variable("KHOA_DEFAULT_REGION", DEFAULT_REGION, str)
    # The only regions served (a credential scope naming another is refused, and gets no audit chain).
    # Default: the AWS commercial regions (khoa.auth.regions); --dev uses the same list.
    regions: tuple[str, ...] = variable("KHOA_REGIONS", AWS_COMMERCIAL_REGIONS, parse_regions, dump=",".join)
    max_body_bytes: int = variable("KHOA_MAX_BODY_BYTES", 1024 * 1024, int)
    # A request body must arrive completely within this time (else 408).
    body_timeout_seconds: float = variable(
        "KHOA_BODY_TIMEOUT_SECONDS", 10.0, float, check=more_than_at_most(0, 3600)
    )
    # How often an open change stream re-checks its subscriber's credential and permission (also at
    # once whenever this node revokes anything).
    stream_recheck_seconds: float = variable(
        "KHOA_STREAM_RECHECK_SECONDS", 5.0, float, check=more_than_at_most(0, 300)
    )
    # How many change streams one worker process keeps open, in all and for one principal (an IAM
    # user, an account's root, or a role: all its sessions together); one more is refused with 429.
    stream_max_subscriptions: int = variable(
        "KHOA_STREAM_MAX_SUBSCRIPTIONS", 1000, int, check=more_than_at_most(0, 100_000)
    )
    stream_max_subscriptions_per_principal: int = variable(
        "KHOA_STREAM_MAX_SUBSCRIPTIONS_PER_PRINCIPAL", 100, int, check=more_than_at_most(0, 100_000)
    )
    # The web console (/console/): a signed-in session ends this long after sign-in, or after this long
    # without a request, whichever comes first.
    console_session_seconds: float = variable(
        "KHOA_CONSOLE_SESSION_SECONDS", 3600.0, float, check=more_than_at_most(60, 43200)
    )
    console_idle_seconds: float = variable(
        "KHOA_CONSOLE_IDLE_SECONDS", 900.0, float, check=more_than_at_most(30, 43200)
    )
    job_interval_seconds: float = variable("KHOA_JOB_INTERVAL_SECONDS", 10.0, float)
    # The jobs lease's time to live: a dead leader's background work resumes elsewhere within 4/3 of it
    # (renewed every third of it); a rotation's claim on its run lives as long.
    job_lease_seconds: float = variable(
        "KHOA_JOB_LEASE_SECONDS", 6.0, float, check=more_than_at_most(0.5, 300)
    )
    # How long one step of a rotation function may run before the rotation fails (HTTP functions: at
    # least their registered timeout).
    rotation_step_timeout_seconds: float = variable(
        "KHOA_ROTATION_STEP_TIMEOUT_SECONDS", 60.0, float, check=more_than_at_most(0, 3600)
    )
    # Per-process caches (see README "Cache lifetimes"): how long a revoked credential, a removed
    # policy or changed metadata may still be honoured by ANOTHER node sharing the database (on the
    # node that made the change it takes effect at once: khoa.auth.revocation). 0 turns a cache off.
    credential_cache_seconds: float = variable(
        "KHOA_CREDENTIAL_CACHE_SECONDS", 5.0, float, check=_CACHE_SECONDS
    )
    policy_cache_seconds: float = variable("KHOA_POLICY_CACHE_SECONDS", 2.0, float, check=_CACHE_SECONDS)
    # KMS key rows and aliases, secret and parameter metadata (khoa.cache in the stores).
    metadata_cache_seconds: float = variable(
        "KHOA_METADATA_CACHE_SECONDS", METADATA_SECONDS, float, check=_CACHE_SECONDS
    )
    # Benchmarks only: KHOA_AUDIT=0 measures the trail's cost; refused unless dev (cli/main.py, runtime.py).
    audit_enabled: bool = variable("KHOA_AUDIT", True, parse_bool, dump=dump_bool)
    tls_cert: str = variable("KHOA_TLS_CERT", "", str)
    tls_key: str = variable("KHOA_TLS_KEY", "", str)
    private_networks: str = variable("KHOA_PRIVATE_NETWORKS", "", str)
    trusted_proxies: str = variable("KHOA_TRUSTED_PROXIES", "", str)
    # CIDRs of non-public addresses an external key store's XKS proxy may be at (an on-premises HSM's
    # proxy, a sidecar on loopback): without them an endpoint must be public https on port 443, as on
    # AWS, so that no tenant can aim Khoa at the node's own network (khoa.services.kms.xks_endpoints).
    xks_proxy_networks: str = variable("KHOA_XKS_PROXY_NETWORKS", "", str, check=_cidrs)
    audit_dir: str = variable("KHOA_AUDIT_DIR", "", str)
    audit_retention_days: float = variable("KHOA_AUDIT_RETENTION_DAYS", 90.0, float)
    audit_delivery_seconds: float = variable("KHOA_AUDIT_DELIVERY_SECONDS", 300.0, float)
    audit_digest_seconds: float = variable("KHOA_AUDIT_DIGEST_SECONDS", 3600.0, float)
    # khoa review: the pattern secret names must match (blank: <env>/<app>/<kind>/<name>) and after how
    # many days of disuse an allowed principal counts as unused (blank: 90).
    review_naming_pattern: str = variable("KHOA_REVIEW_NAMING_PATTERN", "", str)
    review_unused_days: float = variable("KHOA_REVIEW_UNUSED_DAYS", 90.0, float, blank_is_default=True)
    # "auto": each worker keeps to a CPU of its own where that is safe (khoa.affinity); "off". Blank
    # means the default.
    cpu_affinity: str = variable(
        "KHOA_CPU_AFFINITY", "auto", _lower, check=one_of(*affinity.MODES), blank_is_default=True
    )
    # Where workers claim CPUs, shared by every installation that uses it (blank: /dev/shm/khoa-cpu).
    cpu_claim_dir: str = variable("KHOA_CPU_CLAIM_DIR", "", str)
    # The interpreter's switch interval in ms (blank: 0.5; 0 or "default": Python's own, 5 ms).
    gil_switch_interval_ms: float = variable(
        "KHOA_GIL_SWITCH_INTERVAL_MS",
        affinity.DEFAULT_SWITCH_INTERVAL_MS,
        affinity.parse_switch_interval_ms,
        check=affinity.check_switch_interval_ms,
        blank_is_default=True,
    )
    alerts: AlertSettings = group(AlertSettings)  # noqa: RUF009 - KHOA_ALERT(S)_* (khoa.alerts.config)

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'khoa.db').resolve()}"

    @property
    def effective_audit_dir(self) -> Path:
        """Where the trail's log and digest files live (KHOA_AUDIT_DIR, default ``<data-dir>/audit``)."""
        return Path(self.audit_dir) if self.audit_dir else self.data_dir / "audit"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, /, **overrides: Any) -> Settings:
        """Settings from ``env`` (default ``os.environ``), then ``overrides`` (command-line flags by field
        name; None means "not given"), checked."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:  # e.g. env=... by keyword, which would otherwise be dropped silently
            raise TypeError(f"Settings has no field {', '.join(unknown)}")
        settings = envconfig.read(cls, os.environ if env is None else env)
        settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
        settings.check()
        return settings

    def check(self) -> None:
        """Refuse values and combinations that cannot work (raises ValueError with a one-line reason)."""
        envconfig.check(self)
        if self.default_region not in self.regions:
            raise ValueError(
                f"KHOA_DEFAULT_REGION {self.default_region!r} is not one of the served regions (KHOA_REGIONS)"
            )

    def to_env(self) -> dict[str, str]:
        """The environment that reproduces these settings in a worker process (every KHOA_* setting)."""
        return envconfig.write(self)
