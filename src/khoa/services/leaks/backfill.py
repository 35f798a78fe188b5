"""The ``leaks.fingerprint_backfill`` job: fingerprints for values stored before fingerprints existed.

Every write of a value records its fingerprints in its own transaction (khoa.storage.fingerprints);
this job fingerprints what has none: an installation upgraded to this version, root keys made by
``khoa account create``, sessions of rotation functions. Access keys and unexpired STS sessions
(small tables, and written outside the API) are looked at every pass; secret versions and
SecureString versions are swept once per process start (leadership), in keyset order, a bounded
batch per pass, as an upgrade needs, since every later write fingerprints itself. After a sweep, and
then hourly, rows whose value stopped working without its write saying when are settled
(LeakStore.settle).

Access keys' and sessions' secrets are opened with the barrier (their secrets are fingerprinted, not
their key ids, which are no secret); secret versions and SecureStrings
through KMS as the account's root, as the services read them (``open_secret`` and
``open_parameter``, given by the composition root); one that cannot be opened (its key disabled or
deleted) is passed over.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar
from uuid import uuid4

from khoa.auth.credentials import session_binding
from khoa.auth.principal import Principal
from khoa.bootstrap import access_key_binding
from khoa.crypto.barrier import Barrier, BarrierError
from khoa.crypto.fingerprint import Fingerprinter
from khoa.protocol.context import RequestContext
from khoa.protocol.errors import AWSError
from khoa.services.leaks.store import LeakStore
from khoa.storage import fingerprints

log = logging.getLogger("khoa")

BATCH = 200
SETTLE_EVERY_SECONDS = 3600.0

SecretOpener = Callable[[RequestContext, str, str, str, bytes, bytes], bytes]
"""Secrets Manager's ``values.open_value`` with its KMS bound: (ctx, ARN, version id, kind,
encrypted data key, encrypted value) → the value."""
ParameterOpener = Callable[[RequestContext, str, bytes], str]
"""Parameter Store's ``values.decrypt`` with its KMS bound: (ctx, ARN, ciphertext) → the value."""


K = TypeVar("K")


@dataclass
class _Sweep(Generic[K]):
    """A keyset sweep's position: the key of the last row read, and whether it reached the end."""

    after: K | None = None
    done: bool = False

    def page(self, read: Callable[[K | None, int], list[Any]], key: Callable[[Any], K]) -> list[Any]:
        """The next batch of rows (none once the sweep is done), moving the position past it."""
        if self.done:
            return []
        rows = read(self.after, BATCH)
        if len(rows) < BATCH:
            self.done = True
        if rows:
            self.after = key(rows[-1])
        return rows


def _context(account_id: str, region: str, now: datetime) -> RequestContext:
    return RequestContext(
        principal=Principal.account_root(account_id),
        region=region,
        request_id=str(uuid4()),
        service="khoa-leaks",
        operation="FingerprintBackfill",
        now=now,
    )


class Backfill:
    def __init__(
        self,
        store: LeakStore,
        fingerprinter: Fingerprinter,
        barrier: Barrier,
        open_secret: SecretOpener,
        open_parameter: ParameterOpener,
        settle_every_seconds: float = SETTLE_EVERY_SECONDS,
    ) -> None:
        self.store = store
        self.fingerprinter = fingerprinter
        self.barrier = barrier
        self.open_secret = open_secret
        self.open_parameter = open_parameter
        self.settle_every_seconds = settle_every_seconds
        self._secrets: _Sweep[tuple[str, str]] = _Sweep()
        self._parameters: _Sweep[tuple[str, int]] = _Sweep()
        self._settled_at: float | None = None

    def run(self, now: datetime) -> None:
        """One pass (a registered job)."""
        at = now.timestamp()
        done = self.keys(at) + self.sessions(at) + self.parameters(now) + self.secrets(now)
        settled = 0
        swept = self._secrets.done and self._parameters.done
        if swept and (self._settled_at is None or at - self._settled_at >= self.settle_every_seconds):
            settled = self.store.settle(at)
            self._settled_at = at
        if done or settled:
            log.info("leak fingerprints: %d value(s) fingerprinted, %d marked former", done, settled)

    def _credential(self, secret: str) -> list[tuple[str | None, str]]:
        """A credential's fingerprint: of its secret only (its key id is no secret; check.py finds
        ids by the rows' ``access_key_id``)."""
        return [(None, self.fingerprinter.digest(secret))]

    def keys(self, at: float) -> int:
        rows = self.store.unfingerprinted_keys(BATCH)
        for row in rows:
            try:
                secret = self.barrier.open(row.secret_sealed, access_key_binding(row.access_key_id)).decode()
            except BarrierError:
                log.warning("access key %s: its secret does not open; not fingerprinted", row.access_key_id)
                continue
            arn = row.owner_arn if row.principal_kind != "Root" and row.owner_arn else None
            arn = arn or f"arn:aws:iam::{row.account_id}:root"
            resource = fingerprints.Resource(
                row.account_id,
                "",
                fingerprints.ACCESS_KEY,
                row.access_key_id,
                arn,
                access_key_id=row.access_key_id,
            )
            self.store.add(
                resource,
                self._credential(secret),
                row.created_at,
                None if row.status == "Active" else at,
            )
        return len(rows)

    def sessions(self, at: float) -> int:
        rows = self.store.unfingerprinted_sessions(at, BATCH)
        for row in rows:
            try:
                secret = self.barrier.open(row.secret_sealed, session_binding(row.access_key_id)).decode()
            except BarrierError:
                log.warning("session %s: its secret does not open; not fingerprinted", row.access_key_id)
                continue
            resource = fingerprints.Resource(
                row.account_id,
                "",
                fingerprints.STS_CREDENTIAL,
                row.access_key_id,
                row.role_arn,
                access_key_id=row.access_key_id,
                expires_at=row.expires_at,
            )
            self.store.add(resource, self._credential(secret), row.created_at)
        return len(rows)

    def parameters(self, now: datetime) -> int:
        rows = self._parameters.page(
            self.store.parameter_versions_after, lambda row: (row.param_id, row.version)
        )
        done = 0
        for row in rows:
            if row.fingerprinted:
                continue
            arn = f"arn:aws:ssm:{row.region}:{row.account_id}:parameter/{row.name.lstrip('/')}"
            try:
                value = self.open_parameter(_context(row.account_id, row.region, now), arn, row.ciphertext)
            except (AWSError, ValueError):
                continue  # its key is disabled or gone: nobody can read it, nothing to fingerprint
            resource = fingerprints.Resource(
                row.account_id,
                row.region,
                fingerprints.PARAMETER,
                row.param_id,
                arn,
                version_id=str(row.version),
            )
            since = None if row.version == row.current_version else now.timestamp()
            self.store.add(resource, [(None, self.fingerprinter.digest(value))], row.modified_at, since)
            done += 1
        return done

    def secrets(self, now: datetime) -> int:
        rows = self._secrets.page(
            self.store.secret_versions_after, lambda row: (row.secret_id, row.version_id)
        )
        done = 0
        for row in rows:
            if row.fingerprinted:
                continue
            ctx = _context(row.account_id, row.region, now)
            try:
                value = self.open_secret(
                    ctx, row.arn, row.version_id, row.value_kind, row.encrypted_data_key, row.encrypted_value
                )
            except (AWSError, ValueError):
                continue  # its key is disabled or gone: nobody can read it, nothing to fingerprint
            if row.value_kind == "binary":
                items = self.fingerprinter.secret_binary_items(value)
            else:
                items = self.fingerprinter.secret_string_items(value.decode("utf-8", "surrogatepass"))
            resource = fingerprints.Resource(
                row.account_id,
                row.region,
                fingerprints.SECRET,
                row.secret_id,
                row.arn,
                version_id=row.version_id,
            )
            self.store.add(resource, items, row.created_at)  # settle() marks an unlabelled version former
            done += 1
        return done
