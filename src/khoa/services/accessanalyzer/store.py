"""Where Access Analyzer's SQL lives: its analyzers and findings, and a read-only view of what it
analyses (KMS key policies and grants, Secrets Manager resource policies) and of the organization that
makes an ORGANIZATION analyzer's zone of trust."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, Row, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from khoa.storage import schema

_ANALYZERS = schema.aa_analyzers
_FINDINGS = schema.aa_findings


@dataclass(frozen=True)
class Resource:
    """A resource with what may share it: its policy documents and, for keys, its grants."""

    arn: str
    resource_type: str  # AWS::KMS::Key or AWS::SecretsManager::Secret
    account_id: str
    policies: tuple[str, ...]
    grants: tuple[dict[str, Any], ...] = ()


class AnalyzerStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    # -- analyzers -------------------------------------------------------------------------------
    def create(self, row: dict[str, Any]) -> bool:
        """Insert an analyzer; False when the account already has one of that name in the Region."""
        with self._engine.begin() as conn:
            existing = conn.execute(
                select(_ANALYZERS.c.arn)
                .where(_ANALYZERS.c.account_id == row["account_id"])
                .where(_ANALYZERS.c.region == row["region"])
                .where(_ANALYZERS.c.name == row["name"])
            ).first()
            if existing is not None:
                return False
            conn.execute(insert(_ANALYZERS).values(**row))
        return True

    def analyzers(self, account_id: str, region: str, kind: str | None = None) -> list[Row[Any]]:
        query = (
            select(_ANALYZERS)
            .where(_ANALYZERS.c.account_id == account_id)
            .where(_ANALYZERS.c.region == region)
        )
        if kind is not None:
            query = query.where(_ANALYZERS.c.type == kind)
        with self._engine.connect() as conn:
            return list(conn.execute(query.order_by(_ANALYZERS.c.created_at, _ANALYZERS.c.name)).all())

    def analyzer(self, account_id: str, region: str, name: str) -> Row[Any] | None:
        with self._engine.connect() as conn:
            return conn.execute(
                select(_ANALYZERS)
                .where(_ANALYZERS.c.account_id == account_id)
                .where(_ANALYZERS.c.region == region)
                .where(_ANALYZERS.c.name == name)
            ).first()

    def analyzer_by_arn(self, arn: str) -> Row[Any] | None:
        with self._engine.connect() as conn:
            return conn.execute(select(_ANALYZERS).where(_ANALYZERS.c.arn == arn)).first()

    def delete(self, arn: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(delete(_FINDINGS).where(_FINDINGS.c.analyzer_arn == arn))
            conn.execute(delete(_ANALYZERS).where(_ANALYZERS.c.arn == arn))

    # -- the zone of trust -----------------------------------------------------------------------
    def organization_accounts(self, account_id: str) -> tuple[str, list[str]] | None:
        """The organization ``account_id`` manages (its id and every account in it), or None."""
        orgs, members = schema.org_organizations, schema.org_accounts
        with self._engine.connect() as conn:
            org = conn.execute(
                select(orgs.c.org_id).where(orgs.c.management_account_id == account_id)
            ).first()
            if org is None:
                return None
            accounts = conn.execute(select(members.c.account_id).where(members.c.org_id == org.org_id)).all()
        return org.org_id, sorted({account_id, *(a.account_id for a in accounts)})

    def member_of_organization(self, account_id: str) -> bool:
        members = schema.org_accounts
        with self._engine.connect() as conn:
            return (
                conn.execute(select(members.c.org_id).where(members.c.account_id == account_id)).first()
                is not None
            )

    # -- what is analysed ------------------------------------------------------------------------
    def resources(self, accounts: list[str], region: str) -> list[Resource]:
        """The keys and (live) secrets of ``accounts`` in ``region``, with their policies and grants."""
        keys, grants, secrets = schema.kms_keys, schema.kms_grants, schema.sm_secrets
        with self._engine.connect() as conn:
            key_rows = conn.execute(
                select(keys.c.key_id, keys.c.account_id, keys.c.policy)
                .where(keys.c.account_id.in_(accounts))
                .where(keys.c.region == region)
                .order_by(keys.c.created_at, keys.c.key_id)
            ).all()
            grant_rows = (
                conn.execute(
                    select(
                        grants.c.key_id,
                        grants.c.grant_id,
                        grants.c.grantee_principal,
                        grants.c.operations,
                        grants.c.constraints,
                    )
                    .where(grants.c.key_id.in_([k.key_id for k in key_rows]))
                    .order_by(grants.c.created_at, grants.c.grant_id)
                ).all()
                if key_rows
                else []
            )
            secret_rows = conn.execute(
                select(secrets.c.arn, secrets.c.account_id, secrets.c.resource_policy)
                .where(secrets.c.account_id.in_(accounts))
                .where(secrets.c.region == region)
                .where(secrets.c.deleted_at.is_(None))
                .order_by(secrets.c.created_at, secrets.c.secret_id)
            ).all()
        by_key: dict[str, list[dict[str, Any]]] = {}
        for grant in grant_rows:
            by_key.setdefault(grant.key_id, []).append(
                {
                    "grant_id": grant.grant_id,
                    "grantee": grant.grantee_principal,
                    "operations": json.loads(grant.operations),
                    "constraints": json.loads(grant.constraints) if grant.constraints else None,
                }
            )
        found = [
            Resource(
                f"arn:aws:kms:{region}:{k.account_id}:key/{k.key_id}",
                "AWS::KMS::Key",
                k.account_id,
                (k.policy,) if k.policy else (),
                tuple(by_key.get(k.key_id, ())),
            )
            for k in key_rows
        ]
        found += [
            Resource(s.arn, "AWS::SecretsManager::Secret", s.account_id, _documents(s.resource_policy))
            for s in secret_rows
        ]
        return found

    # -- findings --------------------------------------------------------------------------------
    def findings(self, analyzer_arn: str) -> list[Row[Any]]:
        with self._engine.connect() as conn:
            return list(
                conn.execute(
                    select(_FINDINGS)
                    .where(_FINDINGS.c.analyzer_arn == analyzer_arn)
                    .order_by(_FINDINGS.c.created_at, _FINDINGS.c.finding_id)
                ).all()
            )

    def reconcile(
        self, analyzer_arn: str, current: dict[str, dict[str, Any]], archived: set[str], now: float
    ) -> None:
        """Bring the analyzer's stored findings in line with ``current`` (finding id -> row values):
        new ones are inserted (ARCHIVED when an archive rule matches, ``archived``), changed ones
        updated, resolved ones that come back become ACTIVE, and those no longer found RESOLVED.

        Two processes reading the same analyzer at once may both insert a new finding; the one that
        loses the race starts again and finds the row the other wrote."""
        try:
            self._reconcile(analyzer_arn, current, archived, now)
        except IntegrityError:
            self._reconcile(analyzer_arn, current, archived, now)

    def _reconcile(
        self, analyzer_arn: str, current: dict[str, dict[str, Any]], archived: set[str], now: float
    ) -> None:
        with self._engine.begin() as conn:
            stored = {
                row.finding_id: row
                for row in conn.execute(
                    select(_FINDINGS).where(_FINDINGS.c.analyzer_arn == analyzer_arn)
                ).all()
            }
            for finding_id, values in current.items():
                row = stored.get(finding_id)
                if row is None:
                    status = "ARCHIVED" if finding_id in archived else "ACTIVE"
                    conn.execute(
                        insert(_FINDINGS).values(
                            analyzer_arn=analyzer_arn,
                            finding_id=finding_id,
                            status=status,
                            created_at=now,
                            updated_at=now,
                            analyzed_at=now,
                            **values,
                        )
                    )
                    continue
                changes: dict[str, Any] = {"analyzed_at": now}
                if row.details != values["details"]:
                    changes.update(details=values["details"], updated_at=now)
                if row.status == "RESOLVED":
                    changes.update(status="ACTIVE", updated_at=now)
                conn.execute(
                    update(_FINDINGS)
                    .where(_FINDINGS.c.analyzer_arn == analyzer_arn)
                    .where(_FINDINGS.c.finding_id == finding_id)
                    .values(**changes)
                )
            gone = [fid for fid, row in stored.items() if fid not in current and row.status != "RESOLVED"]
            if gone:
                conn.execute(
                    update(_FINDINGS)
                    .where(_FINDINGS.c.analyzer_arn == analyzer_arn)
                    .where(_FINDINGS.c.finding_id.in_(gone))
                    .values(status="RESOLVED", updated_at=now, analyzed_at=now)
                )

    def set_status(self, analyzer_arn: str, ids: list[str], status: str, now: float) -> int:
        """Archive or activate findings (resolved ones stay resolved); the number of rows changed."""
        with self._engine.begin() as conn:
            result = conn.execute(
                update(_FINDINGS)
                .where(_FINDINGS.c.analyzer_arn == analyzer_arn)
                .where(_FINDINGS.c.finding_id.in_(ids))
                .where(_FINDINGS.c.status != "RESOLVED")
                .where(_FINDINGS.c.status != status)
                .values(status=status, updated_at=now)
            )
            return int(result.rowcount or 0)

    def ids_for_resource(self, analyzer_arn: str, resource_arn: str) -> list[str]:
        with self._engine.connect() as conn:
            return [
                row.finding_id
                for row in conn.execute(
                    select(_FINDINGS.c.finding_id)
                    .where(_FINDINGS.c.analyzer_arn == analyzer_arn)
                    .where(_FINDINGS.c.resource_arn == resource_arn)
                ).all()
            ]


def _documents(stored: str | None) -> tuple[str, ...]:
    """A secret's resource policies (stored as a map of policy name to document)."""
    if not stored:
        return ()
    try:
        documents = json.loads(stored)
    except ValueError:
        return ()
    if not isinstance(documents, dict):
        return ()
    return tuple(d for d in documents.values() if isinstance(d, str))
