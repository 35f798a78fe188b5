"""Alert configuration, read from ``KHOA_ALERT_*`` environment variables (see the README's table).

Kept apart from :mod:`khoa.settings` (which holds one :class:`AlertSettings`) so the rules can be
configured and tested on their own. Nothing here imports the rest of Khoa but the leaf module
:mod:`khoa.envconfig`, where each field's declaration turns into reading, writing and checks.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from khoa import envconfig
from khoa.envconfig import Check, dump_bool, parse_bool, variable

# Rule names: stable identifiers used in stored alerts, payloads, metrics labels and KHOA_ALERT_DISABLE.
NEW_SECRET_READER = "new-secret-reader"
ROTATION_FAILED = "rotation-failed"
KEY_DELETION_SCHEDULED = "key-deletion-scheduled"
ACCESS_DENIED_SPIKE = "access-denied-spike"
DECRYPTION_FAILURE_BURST = "decryption-failure-burst"
AUDIT_SINK_ERRORS = "audit-sink-errors"
AUDIT_DELIVERY_FAILING = "audit-delivery-failing"
STORAGE_LOW = "storage-low"
UNEXPECTED_NETWORK = "unexpected-network"
LEAK_CHECK_BURST = "leak-check-burst"
SECRET_LEAKED = "secret-leaked"
RULES = (
    NEW_SECRET_READER,
    ROTATION_FAILED,
    KEY_DELETION_SCHEDULED,
    ACCESS_DENIED_SPIKE,
    DECRYPTION_FAILURE_BURST,
    AUDIT_SINK_ERRORS,
    AUDIT_DELIVERY_FAILING,
    STORAGE_LOW,
    UNEXPECTED_NETWORK,
    LEAK_CHECK_BURST,
    SECRET_LEAKED,
)

T = TypeVar("T")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _names(raw: str) -> set[str]:
    return {name.strip() for name in raw.split(",") if name.strip()}


def _networks(raw: str) -> list[Network]:
    return [ipaddress.ip_network(part.strip(), strict=False) for part in raw.split(",") if part.strip()]


def _known_rules(name: str, value: str) -> None:
    unknown = _names(value) - set(RULES)
    if unknown:
        raise ValueError(f"{name} names unknown rules: {', '.join(sorted(unknown))}")


def _cidrs(name: str, value: str) -> None:
    _networks(value)  # raises ValueError on a malformed CIDR


def _http_url(name: str, value: str) -> None:
    if value and not value.startswith(("http://", "https://")):
        raise ValueError(f"{name} must be an http(s) URL")


def _text(name: str, check: Check | None = None) -> str:
    """A text setting: surrounding blanks are dropped; an empty value is kept (it means "none")."""
    return variable(name, "", str.strip, check=check)


def _number(name: str, default: T, parse: Callable[[str], T]) -> T:
    """A numeric setting: an empty value means the default."""
    return variable(name, default, parse, blank_is_default=True)


@dataclass(frozen=True)
class AlertSettings:
    """Each field declares its variable: ``KHOA_ALERT_<FIELD>`` (upper case), except ``enabled``
    (``KHOA_ALERTS``)."""

    enabled: bool = variable("KHOA_ALERTS", True, parse_bool, dump=dump_bool, blank_is_default=True)
    disable: str = _text("KHOA_ALERT_DISABLE", _known_rules)  # comma-separated rule names
    webhook_url: str = _text("KHOA_ALERT_WEBHOOK_URL", _http_url)
    webhook_secret: str = _text("KHOA_ALERT_WEBHOOK_SECRET")
    slack_url: str = _text("KHOA_ALERT_SLACK_URL", _http_url)
    webhook_attempts: int = _number("KHOA_ALERT_WEBHOOK_ATTEMPTS", 3, int)
    webhook_timeout_seconds: float = _number("KHOA_ALERT_WEBHOOK_TIMEOUT_SECONDS", 5.0, float)
    delivery_give_up_seconds: float = _number("KHOA_ALERT_DELIVERY_GIVE_UP_SECONDS", 86400.0, float)
    allowed_networks: str = _text("KHOA_ALERT_ALLOWED_NETWORKS", _cidrs)
    network_window_seconds: float = _number("KHOA_ALERT_NETWORK_WINDOW_SECONDS", 3600.0, float)
    key_recent_use_days: float = _number("KHOA_ALERT_KEY_RECENT_USE_DAYS", 30.0, float)
    access_denied_threshold: int = _number("KHOA_ALERT_ACCESS_DENIED_THRESHOLD", 20, int)
    access_denied_factor: float = _number("KHOA_ALERT_ACCESS_DENIED_FACTOR", 3.0, float)
    access_denied_window_seconds: float = _number("KHOA_ALERT_ACCESS_DENIED_WINDOW_SECONDS", 300.0, float)
    access_denied_baseline_seconds: float = _number(
        "KHOA_ALERT_ACCESS_DENIED_BASELINE_SECONDS", 3600.0, float
    )
    decrypt_failure_threshold: int = _number("KHOA_ALERT_DECRYPT_FAILURE_THRESHOLD", 5, int)
    decrypt_failure_window_seconds: float = _number("KHOA_ALERT_DECRYPT_FAILURE_WINDOW_SECONDS", 300.0, float)
    rotation_failure_cooldown_seconds: float = _number(
        "KHOA_ALERT_ROTATION_FAILURE_COOLDOWN_SECONDS", 3600.0, float
    )
    audit_sink_cooldown_seconds: float = _number("KHOA_ALERT_AUDIT_SINK_COOLDOWN_SECONDS", 300.0, float)
    audit_delivery_cooldown_seconds: float = _number(
        "KHOA_ALERT_AUDIT_DELIVERY_COOLDOWN_SECONDS", 300.0, float
    )
    leak_check_threshold: int = _number("KHOA_ALERT_LEAK_CHECK_THRESHOLD", 30, int)
    leak_check_window_seconds: float = _number("KHOA_ALERT_LEAK_CHECK_WINDOW_SECONDS", 60.0, float)
    secret_leaked_cooldown_seconds: float = _number(
        "KHOA_ALERT_SECRET_LEAKED_COOLDOWN_SECONDS", 3600.0, float
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AlertSettings:
        settings = envconfig.read(cls, os.environ if env is None else env)
        settings.validate()
        return settings

    def to_env(self) -> dict[str, str]:
        return envconfig.write(self)

    def validate(self) -> None:
        envconfig.check(self)

    @property
    def disabled_rules(self) -> set[str]:
        return _names(self.disable)

    def rule_enabled(self, name: str) -> bool:
        if name == UNEXPECTED_NETWORK and not self.allowed_networks.strip():
            return False  # nothing to compare against
        return name not in self.disabled_rules

    def networks(self) -> list[Network]:
        return _networks(self.allowed_networks)
