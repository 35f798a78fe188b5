"""Alert configuration, read from ``KHOA_ALERT_*`` environment variables (see the README's table).

Kept apart from :mod:`khoa.settings` (which holds one :class:`AlertSettings`) so the rules can be
configured and tested on their own. Nothing here imports the rest of Khoa.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

# Rule names: stable identifiers used in stored alerts, payloads, metrics labels and KHOA_ALERT_DISABLE.
NEW_SECRET_READER = "new-secret-reader"
ROTATION_FAILED = "rotation-failed"
KEY_DELETION_SCHEDULED = "key-deletion-scheduled"
ACCESS_DENIED_SPIKE = "access-denied-spike"
DECRYPTION_FAILURE_BURST = "decryption-failure-burst"
AUDIT_SINK_ERRORS = "audit-sink-errors"
UNEXPECTED_NETWORK = "unexpected-network"
RULES = (
    NEW_SECRET_READER,
    ROTATION_FAILED,
    KEY_DELETION_SCHEDULED,
    ACCESS_DENIED_SPIKE,
    DECRYPTION_FAILURE_BURST,
    AUDIT_SINK_ERRORS,
    UNEXPECTED_NETWORK,
)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _bool(raw: str) -> bool:
    return raw.strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class AlertSettings:
    """Every field maps to ``KHOA_ALERT_<FIELD>`` (upper case), except ``enabled`` (``KHOA_ALERTS``)."""

    enabled: bool = True
    disable: str = ""  # comma-separated rule names
    webhook_url: str = ""
    webhook_secret: str = ""
    slack_url: str = ""
    webhook_attempts: int = 3
    webhook_timeout_seconds: float = 5.0
    delivery_give_up_seconds: float = 86400.0
    allowed_networks: str = ""
    network_window_seconds: float = 3600.0
    key_recent_use_days: float = 30.0
    access_denied_threshold: int = 20
    access_denied_factor: float = 3.0
    access_denied_window_seconds: float = 300.0
    access_denied_baseline_seconds: float = 3600.0
    decrypt_failure_threshold: int = 5
    decrypt_failure_window_seconds: float = 300.0
    rotation_failure_cooldown_seconds: float = 3600.0
    audit_sink_cooldown_seconds: float = 300.0

    @staticmethod
    def env_name(field_name: str) -> str:
        return "KHOA_ALERTS" if field_name == "enabled" else f"KHOA_ALERT_{field_name.upper()}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AlertSettings:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(cls.env_name(f.name))
            if raw is None or (raw.strip() == "" and f.type not in ("str",)):
                continue
            if f.type == "bool":
                values[f.name] = _bool(raw)
            elif f.type == "int":
                values[f.name] = int(raw)
            elif f.type == "float":
                values[f.name] = float(raw)
            else:
                values[f.name] = raw.strip()
        settings = cls(**values)
        settings.validate()
        return settings

    def to_env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[self.env_name(f.name)] = ("1" if value else "0") if isinstance(value, bool) else str(value)
        return out

    def validate(self) -> None:
        unknown = self.disabled_rules - set(RULES)
        if unknown:
            raise ValueError(f"KHOA_ALERT_DISABLE names unknown rules: {', '.join(sorted(unknown))}")
        self.networks()  # raises ValueError on a malformed CIDR
        for url_name in ("webhook_url", "slack_url"):
            url = getattr(self, url_name)
            if url and not url.startswith(("http://", "https://")):
                raise ValueError(f"{self.env_name(url_name)} must be an http(s) URL")

    @property
    def disabled_rules(self) -> set[str]:
        return {name.strip() for name in self.disable.split(",") if name.strip()}

    def rule_enabled(self, name: str) -> bool:
        if name == UNEXPECTED_NETWORK and not self.allowed_networks.strip():
            return False  # nothing to compare against
        return name not in self.disabled_rules

    def networks(self) -> list[Network]:
        return [
            ipaddress.ip_network(part.strip(), strict=False)
            for part in self.allowed_networks.split(",")
            if part.strip()
        ]
