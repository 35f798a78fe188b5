"""The app object: every piece of per-process state lives here, built once from Settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy import Engine, delete

from khoa.alerts.engine import AlertEngine
from khoa.audit import jobs as audit_jobs
from khoa.audit.recorder import AuditRecorder
from khoa.audit.trail import AuditTrail
from khoa.auth.credentials import CredentialStore
from khoa.auth.revocation import RevocationEpoch, open_epoch
from khoa.auth.sigv4 import SigV4Verifier
from khoa.bootstrap import first_account_id, load_barrier
from khoa.clock import Clock
from khoa.crypto.barrier import Barrier
from khoa.events.webhooks import WebhookDeliverer
from khoa.iam.directory import Directory
from khoa.jobs import JobRunner
from khoa.rotation.engine import RotationEngine, RotationOutcome
from khoa.services import cloudtrail as cloudtrail_service
from khoa.services import iam as iam_service
from khoa.services import kms as kms_service
from khoa.services import secretsmanager as secretsmanager_service
from khoa.services import ssm as ssm_service
from khoa.services import sts as sts_service
from khoa.services.base import Service
from khoa.services.kms.backend import KmsBackend
from khoa.services.kms.imports import expire_imported_material
from khoa.services.kms.keys import destroy_due_keys
from khoa.services.kms.rotation import rotate_due_keys
from khoa.services.secretsmanager.backend import SecretsBackend
from khoa.services.secretsmanager.operations import destroy_due_secrets
from khoa.services.secretsmanager.replication import Replication
from khoa.services.ssm.backend import ParametersBackend
from khoa.services.ssm.parameters import expire_due
from khoa.settings import Settings
from khoa.storage import schema
from khoa.storage.database import create_database_engine

log = logging.getLogger("khoa")

# Tables holding account resources; --dev reset empties them (accounts and credentials stay).
_RESOURCE_TABLES = (
    schema.sts_sessions,
    schema.iam_tags,
    schema.iam_attachments,
    schema.iam_policy_versions,
    schema.iam_managed_policies,
    schema.iam_inline_policies,
    schema.iam_group_members,
    schema.iam_principals,
    schema.change_events,
    schema.rotation_runs,
    schema.ssm_labels,
    schema.ssm_tags,
    schema.ssm_parameter_versions,
    schema.ssm_parameters,
    schema.sm_stages,
    schema.sm_tags,
    schema.sm_versions,
    schema.sm_secrets,
    schema.kms_import_parameters,
    schema.kms_grants,
    schema.kms_tags,
    schema.kms_aliases,
    schema.kms_key_versions,
    schema.kms_keys,
)


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    barrier: Barrier
    clock: Clock
    credentials: CredentialStore
    verifier: SigV4Verifier
    kms: KmsBackend
    jobs: JobRunner
    secrets: SecretsBackend
    secrets_replication: Replication
    parameters: ParametersBackend
    directory: Directory
    audit: AuditRecorder
    revocations: RevocationEpoch
    services: dict[str, Service] = field(default_factory=dict)
    query_services: dict[str, Service] = field(default_factory=dict)
    dev_account_id: str = ""
    rotation: RotationEngine = field(init=False)
    _seen_epoch: int = field(init=False, default=-1)
    alerts: AlertEngine = field(init=False)

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        if not settings.audit_enabled and not settings.dev:
            # `khoa server` refuses this already; a worker started some other way must refuse too.
            raise RuntimeError("KHOA_AUDIT=0 is allowed only in development mode (KHOA_DEV=1, --dev)")
        engine = create_database_engine(settings.effective_database_url)
        barrier = load_barrier(settings, engine, create=False)
        clock = Clock()
        runtime = cls(
            settings=settings,
            engine=engine,
            barrier=barrier,
            clock=clock,
            credentials=CredentialStore(engine, barrier, settings.credential_cache_seconds),
            verifier=SigV4Verifier(regions=settings.regions),
            kms=KmsBackend(engine, barrier, settings.metadata_cache_seconds),
            jobs=JobRunner(engine, clock, settings.job_interval_seconds),
            secrets=SecretsBackend(engine, settings.metadata_cache_seconds),
            secrets_replication=Replication(),
            parameters=ParametersBackend(engine, settings.metadata_cache_seconds),
            directory=Directory(engine, settings.policy_cache_seconds),
            audit=AuditRecorder(engine, processes=settings.workers),
            revocations=open_epoch(settings.data_dir),
            dev_account_id=first_account_id(engine) or "",
        )
        for service in (
            kms_service.build_service(),
            secretsmanager_service.build_service(),
            ssm_service.build_service(),
            cloudtrail_service.build_service(),
        ):
            runtime.services[service.target_prefix] = service
        for service in (sts_service.build_service(), iam_service.build_service()):
            runtime.query_services[service.signing_name] = service
        # Each job's work is recorded as AwsServiceEvents (khoa.audit.jobs).
        runtime.jobs.register(
            "kms.destroy_due_keys",
            audit_jobs.recorded(
                runtime,
                "DeleteKey",
                audit_jobs.kms_keys("deletion_date"),
                lambda now: destroy_due_keys(runtime.kms, now),
            ),
        )
        runtime.jobs.register(
            "kms.rotate_due_keys",
            audit_jobs.recorded(
                runtime,
                "RotateKey",
                audit_jobs.kms_keys("next_rotation_at"),
                lambda now: rotate_due_keys(runtime.kms, now),
                rotationType="AUTOMATIC",
            ),
        )
        runtime.jobs.register(
            "kms.expire_imported_material",
            audit_jobs.recorded(
                runtime,
                "DeleteExpiredKeyMaterial",
                audit_jobs.kms_keys("valid_to"),
                lambda now: expire_imported_material(runtime.kms, now),
            ),
        )
        runtime.jobs.register(
            "secretsmanager.destroy_due_secrets",
            audit_jobs.recorded(
                runtime,
                "DeleteSecret",
                audit_jobs.SECRETS,
                lambda now: destroy_due_secrets(runtime.secrets, now),
            ),
        )
        runtime.jobs.register(
            "ssm.expire_parameters",
            audit_jobs.recorded(
                runtime,
                "DeleteParameter",
                audit_jobs.PARAMETERS,
                lambda now: expire_due(runtime.parameters, now),
            ),
        )
        webhook_deliverer = WebhookDeliverer(engine, barrier)
        runtime.jobs.register("events.deliver_webhooks", lambda now: webhook_deliverer.deliver())
        runtime.rotation = RotationEngine(runtime)
        runtime.jobs.register(
            "secretsmanager.rotate_secrets", lambda now: log_rotations(runtime.rotation.run_due(now))
        )
        runtime.jobs.register("audit.trail", AuditTrail(engine, barrier, settings).run_job)
        runtime.alerts = AlertEngine(runtime)  # last: sees what this pass's other jobs recorded
        runtime.jobs.register("alerts.evaluate", runtime.alerts.run)
        runtime.audit.enabled = settings.audit_enabled
        if not settings.audit_enabled:
            log.warning("KHOA_AUDIT is off: calls are NOT recorded (--dev benchmarks only)")
        return runtime

    def close(self) -> None:
        """Release the database at shutdown: the audit writer's kept connection, then the pool (the
        last SQLite connection to close folds the WAL back into the database file)."""
        self.audit.close()
        self.engine.dispose()
        self.revocations.close()

    def check_revocations(self) -> None:
        """Before a request looks anything up: if any process of this node revoked something since this
        process last looked, drop every cached credential, policy and metadata entry (one shared-memory
        read when nothing changed). Each process serves requests one handler at a time, so an entry
        cached from a read that raced the revocation is dropped by the next request's check."""
        epoch = self.revocations.current()
        if epoch != self._seen_epoch:
            self._seen_epoch = epoch
            self.clear_caches()

    def revoked(self) -> None:
        """A change that may take access away was committed: make every process of this node see it."""
        self.revocations.bump()
        self.check_revocations()

    def clear_caches(self) -> None:
        self.credentials.clear()
        self.directory.clear()
        self.kms.keys.clear_cache()
        self.secrets.store.invalidate_all()
        self.parameters.store.invalidate_all()

    def reset(self) -> None:
        """Wipe every account's and region's resources (the --dev reset endpoints)."""
        with self.engine.begin() as conn:
            for table in _RESOURCE_TABLES:
                conn.execute(delete(table))
        with self.engine.begin() as conn:  # IAM users' access keys go with their users
            conn.execute(delete(schema.access_keys).where(schema.access_keys.c.principal_kind != "Root"))
        self.revoked()  # every worker process of this node forgets what it cached


def log_rotations(outcomes: list[RotationOutcome]) -> None:
    for outcome in outcomes:
        log.info("rotation of %s %s", outcome.secret_arn, "succeeded" if outcome.succeeded else "failed")
