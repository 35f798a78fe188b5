"""Configuration: command-line flags win over ``KHOA_*`` environment variables, which win over defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from khoa import affinity
from khoa.alerts.config import AlertSettings
from khoa.auth.regions import AWS_COMMERCIAL_REGIONS, parse_regions

DEFAULT_REGION = "us-east-1"


def _env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return raw.strip().lower() in ("1", "true", "yes", "on")


def _env_choice(name: str, choices: tuple[str, ...], default: str) -> str:
    raw = os.environ.get(name, "").strip().lower() or default
    if raw not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, not {raw!r}")
    return raw


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 9440
    data_dir: Path = Path(".khoa")
    database_url: str = ""
    workers: int = 1
    dev: bool = False
    seal_backend: str = "file"
    passphrase: str = ""
    account_id: str = ""
    root_access_key_id: str = ""
    root_secret_access_key: str = ""
    default_region: str = DEFAULT_REGION
    # KHOA_REGIONS: the only regions served (a credential scope naming another is refused, and gets no
    # audit chain). Default: the AWS commercial regions (khoa.auth.regions); --dev uses the same list.
    regions: tuple[str, ...] = AWS_COMMERCIAL_REGIONS
    max_body_bytes: int = 1024 * 1024
    # KHOA_BODY_TIMEOUT_SECONDS: a request body must arrive completely within this time (else 408).
    body_timeout_seconds: float = 10.0
    # KHOA_STREAM_RECHECK_SECONDS: how often an open change stream re-checks its subscriber's
    # credential and permission (also at once whenever this node revokes anything).
    stream_recheck_seconds: float = 5.0
    job_interval_seconds: float = 10.0
    # Per-process caches (see README "Cache lifetimes"): how long a revoked credential or a removed
    # policy may still be honoured by ANOTHER node sharing the database (on the node that made the
    # change it takes effect at once: khoa.auth.revocation). 0 turns a cache off.
    credential_cache_seconds: float = 5.0
    policy_cache_seconds: float = 2.0
    # Benchmarks only: KHOA_AUDIT=0 measures the trail's cost; refused unless dev (cli/main.py, runtime.py).
    audit_enabled: bool = True
    tls_cert: str = ""
    tls_key: str = ""
    private_networks: str = ""
    trusted_proxies: str = ""
    audit_dir: str = ""
    audit_retention_days: float = 90.0
    audit_delivery_seconds: float = 300.0
    audit_digest_seconds: float = 3600.0
    cpu_affinity: str = "auto"  # "auto": each worker keeps to a CPU of its own (khoa.affinity); "off"
    alerts: AlertSettings = field(default_factory=AlertSettings)  # KHOA_ALERT_* (khoa.alerts.config)

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'khoa.db').resolve()}"

    @property
    def effective_audit_dir(self) -> Path:
        """Where the trail's log and digest files live (KHOA_AUDIT_DIR, default ``<data-dir>/audit``)."""
        return Path(self.audit_dir) if self.audit_dir else self.data_dir / "audit"

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        env = os.environ
        settings = cls(
            host=env.get("KHOA_HOST", cls.host),
            port=int(env.get("KHOA_PORT", cls.port)),
            data_dir=Path(env.get("KHOA_DATA_DIR", str(cls.data_dir))),
            database_url=env.get("KHOA_DATABASE_URL", ""),
            workers=int(env.get("KHOA_WORKERS", cls.workers)),
            dev=_env_bool("KHOA_DEV"),
            seal_backend=env.get("KHOA_SEAL_BACKEND", cls.seal_backend),
            passphrase=env.get("KHOA_PASSPHRASE", ""),
            account_id=env.get("KHOA_ACCOUNT_ID", ""),
            root_access_key_id=env.get("KHOA_ROOT_ACCESS_KEY_ID", ""),
            root_secret_access_key=env.get("KHOA_ROOT_SECRET_ACCESS_KEY", ""),
            default_region=env.get("KHOA_DEFAULT_REGION", DEFAULT_REGION),
            regions=parse_regions(env["KHOA_REGIONS"]) if "KHOA_REGIONS" in env else cls.regions,
            max_body_bytes=int(env.get("KHOA_MAX_BODY_BYTES", cls.max_body_bytes)),
            body_timeout_seconds=float(env.get("KHOA_BODY_TIMEOUT_SECONDS", cls.body_timeout_seconds)),
            stream_recheck_seconds=float(env.get("KHOA_STREAM_RECHECK_SECONDS", cls.stream_recheck_seconds)),
            job_interval_seconds=float(env.get("KHOA_JOB_INTERVAL_SECONDS", cls.job_interval_seconds)),
            credential_cache_seconds=float(
                env.get("KHOA_CREDENTIAL_CACHE_SECONDS", cls.credential_cache_seconds)
            ),
            policy_cache_seconds=float(env.get("KHOA_POLICY_CACHE_SECONDS", cls.policy_cache_seconds)),
            audit_enabled=_env_bool("KHOA_AUDIT", True),
            tls_cert=env.get("KHOA_TLS_CERT", ""),
            tls_key=env.get("KHOA_TLS_KEY", ""),
            private_networks=env.get("KHOA_PRIVATE_NETWORKS", ""),
            trusted_proxies=env.get("KHOA_TRUSTED_PROXIES", ""),
            audit_dir=env.get("KHOA_AUDIT_DIR", ""),
            audit_retention_days=float(env.get("KHOA_AUDIT_RETENTION_DAYS", cls.audit_retention_days)),
            audit_delivery_seconds=float(env.get("KHOA_AUDIT_DELIVERY_SECONDS", cls.audit_delivery_seconds)),
            audit_digest_seconds=float(env.get("KHOA_AUDIT_DIGEST_SECONDS", cls.audit_digest_seconds)),
            cpu_affinity=_env_choice("KHOA_CPU_AFFINITY", affinity.MODES, cls.cpu_affinity),
            alerts=AlertSettings.from_env(env),
        )
        known = {f.name for f in fields(cls)}
        settings = replace(settings, **{k: v for k, v in overrides.items() if k in known and v is not None})
        settings.check()
        return settings

    def check(self) -> None:
        """Refuse combinations that cannot work (raises ValueError with a one-line reason)."""
        if not 0 < self.body_timeout_seconds <= 3600:
            raise ValueError(
                "KHOA_BODY_TIMEOUT_SECONDS must be more than 0 and at most 3600, "
                f"not {self.body_timeout_seconds}"
            )
        if not 0 < self.stream_recheck_seconds <= 300:
            raise ValueError(
                "KHOA_STREAM_RECHECK_SECONDS must be more than 0 and at most 300, "
                f"not {self.stream_recheck_seconds}"
            )
        for name in ("credential_cache_seconds", "policy_cache_seconds"):
            value = getattr(self, name)
            if not 0 <= value <= 300:  # also refuses NaN
                raise ValueError(f"KHOA_{name.upper()} must be between 0 and 300 seconds, not {value}")
        if self.default_region not in self.regions:
            raise ValueError(
                f"KHOA_DEFAULT_REGION {self.default_region!r} is not one of the served regions (KHOA_REGIONS)"
            )

    def to_env(self) -> dict[str, str]:
        """The environment that reproduces these settings in a worker process."""
        return {
            "KHOA_HOST": self.host,
            "KHOA_PORT": str(self.port),
            "KHOA_DATA_DIR": str(self.data_dir),
            "KHOA_DATABASE_URL": self.database_url,
            "KHOA_WORKERS": str(self.workers),
            "KHOA_DEV": "1" if self.dev else "0",
            "KHOA_SEAL_BACKEND": self.seal_backend,
            "KHOA_DEFAULT_REGION": self.default_region,
            "KHOA_REGIONS": ",".join(self.regions),
            "KHOA_MAX_BODY_BYTES": str(self.max_body_bytes),
            "KHOA_BODY_TIMEOUT_SECONDS": str(self.body_timeout_seconds),
            "KHOA_STREAM_RECHECK_SECONDS": str(self.stream_recheck_seconds),
            "KHOA_JOB_INTERVAL_SECONDS": str(self.job_interval_seconds),
            "KHOA_CREDENTIAL_CACHE_SECONDS": str(self.credential_cache_seconds),
            "KHOA_POLICY_CACHE_SECONDS": str(self.policy_cache_seconds),
            "KHOA_AUDIT": "1" if self.audit_enabled else "0",
            "KHOA_PRIVATE_NETWORKS": self.private_networks,
            "KHOA_TRUSTED_PROXIES": self.trusted_proxies,
            "KHOA_AUDIT_DIR": self.audit_dir,
            "KHOA_AUDIT_RETENTION_DAYS": str(self.audit_retention_days),
            "KHOA_AUDIT_DELIVERY_SECONDS": str(self.audit_delivery_seconds),
            "KHOA_AUDIT_DIGEST_SECONDS": str(self.audit_digest_seconds),
            "KHOA_CPU_AFFINITY": self.cpu_affinity,
            **self.alerts.to_env(),
        }
