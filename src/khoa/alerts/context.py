"""One evaluation pass: what rules read (the database, the time, the settings) and what they leave to
be written. Everything a pass decides (alerts, learned principals, the cursor) is committed in one
transaction at its end, so a pass that fails half-way leaves no trace and is simply done again."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, select

from khoa.alerts.config import AlertSettings
from khoa.alerts.model import Alert
from khoa.storage import schema

_ALERTS = schema.alerts
_SEEN = schema.alert_seen_principals


def digest(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def pair_id(secret_arn: str, principal: str) -> str:
    return digest(secret_arn, principal)


@dataclass
class PassContext:
    engine: Engine
    now: float
    settings: AlertSettings
    default_account: str
    default_region: str
    audit_failures: int = 0
    audit_delivery_problem: str | None = None  # why the trail's log files cannot be delivered
    storage_low: str | None = None  # why the audit or database directory's disk is nearly full
    watch_started_at: float = 0.0  # when the engine started reading the trail (its first cursor)
    learn_only: bool = False  # learning from history: raise nothing
    alerts: list[Alert] = field(default_factory=list)
    learned: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # pair id -> (secret, who, why)
    forgotten: set[str] = field(default_factory=set)  # secret ARNs destroyed
    memo: dict[Any, Any] = field(default_factory=dict)  # lookups rules repeat within a pass
    _seen_cache: dict[str, bool] = field(default_factory=dict)
    _known_cache: dict[str, bool] = field(default_factory=dict)

    # -- alerts ----------------------------------------------------------------------------------
    def raise_alert(self, alert: Alert) -> bool:
        """Keep ``alert`` unless one with the same rule and dedupe key suppresses it."""
        if self.learn_only:
            return False
        key = digest(alert.dedupe_key)
        if alert.suppress_seconds is None or alert.suppress_seconds > 0:
            since = None if alert.suppress_seconds is None else self.now - alert.suppress_seconds
            for pending in self.alerts:
                if pending.rule == alert.rule and digest(pending.dedupe_key) == key:
                    return False
            query = select(_ALERTS.c.alert_id).where(
                _ALERTS.c.rule == alert.rule, _ALERTS.c.dedupe_key == key
            )
            if since is not None:
                query = query.where(_ALERTS.c.raised_at > since)
            with self.engine.connect() as conn:
                if conn.execute(query.limit(1)).first() is not None:
                    return False
        self.alerts.append(alert)
        return True

    # -- principals seen reading secrets ---------------------------------------------------------
    def seen(self, secret_arn: str, principal: str) -> bool:
        pid = pair_id(secret_arn, principal)
        if pid in self.learned:
            return True
        if secret_arn in self.forgotten:
            return False
        if pid not in self._seen_cache:
            with self.engine.connect() as conn:
                found = conn.execute(select(_SEEN.c.pair_id).where(_SEEN.c.pair_id == pid)).first()
            self._seen_cache[pid] = found is not None
        return self._seen_cache[pid]

    def known_secret(self, secret_arn: str) -> bool:
        """Whether any principal is known for this secret."""
        if any(secret == secret_arn for secret, _, _ in self.learned.values()):
            return True
        if secret_arn in self.forgotten:
            return False
        if secret_arn not in self._known_cache:
            with self.engine.connect() as conn:
                found = conn.execute(
                    select(_SEEN.c.pair_id).where(_SEEN.c.secret_key == digest(secret_arn)).limit(1)
                ).first()
            self._known_cache[secret_arn] = found is not None
        return self._known_cache[secret_arn]

    def learn(self, secret_arn: str, principal: str, reason: str) -> None:
        self.learned.setdefault(pair_id(secret_arn, principal), (secret_arn, principal, reason))

    def forget(self, secret_arn: str) -> None:
        """The secret is gone: drop what is known about it (a new secret never shares its ARN)."""
        self.forgotten.add(secret_arn)
        self.learned = {k: v for k, v in self.learned.items() if v[0] != secret_arn}
        self._known_cache.pop(secret_arn, None)
        self._seen_cache.clear()

    def read(self, query: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(query).all())
