"""The composition root: every part of a process, built once from Settings and wired together here.

The only module that knows them all; the server (``khoa.app``, ``khoa.server``) is the only user.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from sqlalchemy import Engine, delete, make_url

from khoa import affinity
from khoa.access.authorize import Authorizer
from khoa.access.directory import Directory
from khoa.alerts.engine import AlertEngine
from khoa.audit import jobs as audit_jobs
from khoa.audit.health import TrailHealth
from khoa.audit.recorder import AuditRecorder
from khoa.audit.trail import AuditTrail
from khoa.audit.usage import UsageTracker
from khoa.auth.credentials import CredentialStore
from khoa.auth.revocation import RevocationEpoch, open_epoch
from khoa.auth.sigv4 import SigV4Verifier
from khoa.blocking import StatementClock
from khoa.bootstrap import first_account_id, load_barrier
from khoa.changes.webhooks import WebhookDeliverer
from khoa.clock import Clock
from khoa.crypto.barrier import Barrier
from khoa.jobs import JobRunner
from khoa.protocol.context import RequestContext
from khoa.review.accounts import review_account
from khoa.secret_rotation.engine import RotationEngine, RotationOutcome, RotationSettings
from khoa.services import accessanalyzer as accessanalyzer_service
from khoa.services import cloudtrail as cloudtrail_service
from khoa.services import iam as iam_service
from khoa.services import kms as kms_service
from khoa.services import leaks as leaks_service
from khoa.services import ops as ops_service
from khoa.services import organizations as organizations_service
from khoa.services import secretsmanager as secretsmanager_service
from khoa.services import ssm as ssm_service
from khoa.services import sts as sts_service
from khoa.services.accessanalyzer.backend import AnalyzerBackend
from khoa.services.accessanalyzer.store import AnalyzerStore
from khoa.services.base import Service
from khoa.services.cloudtrail.backend import CloudTrailBackend
from khoa.services.cloudtrail.store import TrailStore
from khoa.services.iam.backend import IamBackend
from khoa.services.iam.store import IamStore
from khoa.services.kms.backend import KmsBackend
from khoa.services.kms.imports import expire_imported_material
from khoa.services.kms.internal import InternalKms
from khoa.services.kms.key_rotation import rotate_due_keys
from khoa.services.kms.keys import destroy_due_keys
from khoa.services.leaks.backend import LeaksBackend
from khoa.services.leaks.backfill import Backfill
from khoa.services.leaks.limits import RateLimiter
from khoa.services.leaks.store import LeakStore
from khoa.services.ops.backend import OpsBackend
from khoa.services.ops.store import OpsStore
from khoa.services.organizations.backend import OrganizationsBackend
from khoa.services.organizations.store import OrganizationStore
from khoa.services.secretsmanager import values as secret_values
from khoa.services.secretsmanager.backend import SecretsBackend
from khoa.services.secretsmanager.secrets import destroy_due_secrets
from khoa.services.secretsmanager.store import SecretStore
from khoa.services.secretsmanager.subscriptions import subscription_check
from khoa.services.ssm import values as parameter_values
from khoa.services.ssm.parameters import expire_due
from khoa.services.ssm.references import reader as secret_reader
from khoa.services.ssm.store import ParameterStore
from khoa.services.sts.backend import StsBackend
from khoa.services.sts.store import StsStore
from khoa.settings import Settings
from khoa.storage import schema
from khoa.storage.database import DatabaseBounds, create_database_engine
from khoa.storage.fingerprints import load_fingerprinter
from khoa.storage.turn import WriterTurn

log = logging.getLogger("khoa")

# Tables holding account resources; --dev reset empties them (accounts and credentials stay).
_RESOURCE_TABLES = (
    schema.org_attachments,
    schema.org_policies,
    schema.org_accounts,
    schema.org_organizations,
    schema.aa_findings,
    schema.aa_analyzers,
    schema.leak_rate_buckets,
    schema.leak_fingerprints,
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
    """One process's parts, each built once by :meth:`build`; only the server and its entry points use it.

    Services, jobs and engines receive the few collaborators they need from here and never see this
    object, so what a part can reach is what its constructor names.
    """

    settings: Settings
    engine: Engine
    statements: StatementClock
    barrier: Barrier
    clock: Clock
    credentials: CredentialStore
    verifier: SigV4Verifier
    authorizer: Authorizer
    audit: AuditRecorder
    revocations: RevocationEpoch
    jobs: JobRunner
    kms: KmsBackend
    secrets: SecretsBackend
    parameters: ParameterStore
    rotation: RotationEngine
    alerts: AlertEngine
    services: dict[str, Service]
    query_services: dict[str, Service]
    subscription_check: Callable[[RequestContext, str], tuple[str, str]]
    dev_account_id: str
    _seen_epoch: int = field(init=False, default=-1)

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        if not settings.audit_enabled and not settings.dev:
            # `khoa server` refuses this already; a worker started some other way must refuse too.
            raise RuntimeError("KHOA_AUDIT=0 is allowed only in development mode (KHOA_DEV=1, --dev)")
        # Every writer of the node queues for an SQLite file in one turn (khoa.storage.turn).
        database_url = make_url(settings.effective_database_url)
        turn = (
            WriterTurn.for_database(database_url.database, settings.workers)
            if database_url.get_backend_name() == "sqlite"
            else None
        )
        # Times each SQLite statement, so that a call whose thread the kernel holds (a frozen file
        # system) is answered 503 without waiting for it (khoa.blocking.run_unless_stuck).
        statements = StatementClock()
        engine = create_database_engine(settings.effective_database_url, _bounds(settings), turn, statements)
        barrier = load_barrier(settings, engine, create=False)
        clock = Clock()
        dev_account_id = first_account_id(engine) or ""
        directory = Directory(engine, settings.policy_cache_seconds)
        authorizer = Authorizer(directory, allow_everything=settings.dev)
        credentials = CredentialStore(engine, barrier, settings.credential_cache_seconds)
        trail_health = TrailHealth(settings.effective_audit_dir, sqlite_directory(engine))
        audit = AuditRecorder(
            engine,
            turn=turn,
            trail=trail_health,
            turn_seconds=settings.database_timeout_seconds,
            statements=statements,
            stuck_after_seconds=_bounds(settings).stuck_after_seconds,
        )
        audit.enabled = settings.audit_enabled
        if settings.audit_enabled:
            try:
                audit.mark_lost_outcomes()
            except Exception:  # the database may be down at start: readiness says so
                log.exception("could not look for calls whose outcome was lost")
        if not settings.audit_enabled:
            log.warning("KHOA_AUDIT is off: calls are NOT recorded (--dev benchmarks only)")
        # Read before lifespan pins the worker to one CPU (khoa.affinity): the jobs may use them all.
        jobs = JobRunner(
            engine,
            clock,
            settings.job_interval_seconds,
            settings.job_lease_seconds,
            thread_cpus=affinity.allowed_cpus(),
        )

        claims = Path(settings.cpu_claim_dir) if settings.cpu_claim_dir else None
        kms = KmsBackend.create(
            engine,
            barrier,
            authorizer,
            settings.metadata_cache_seconds,
            cpu_gate=affinity.heavy_gate(settings.data_dir, claims),
            xks_networks=settings.xks_proxy_networks,
        )
        # Rotation is built before Secrets Manager, which queues and cancels rotations through it.
        fingerprinter = load_fingerprinter(engine, barrier)  # leak detection's key (khoa-leaks)
        secret_store = SecretStore(engine, settings.metadata_cache_seconds)
        rotation = RotationEngine(
            engine, barrier, secret_store, audit, RotationSettings.from_settings(settings)
        )
        secrets = SecretsBackend(
            engine=engine,
            store=secret_store,
            keys=InternalKms(kms),
            authorizer=authorizer,
            rotation=rotation,
            poke_jobs=jobs.poke,
            regions=settings.regions,
            fingerprinter=fingerprinter,
        )
        parameters = ParameterStore(engine, settings.metadata_cache_seconds, fingerprinter)
        secretsmanager = secretsmanager_service.build_service(secrets)
        json_services: tuple[Service, ...] = (
            kms_service.build_service(kms),
            secretsmanager,
            # Parameter Store reads /aws/reference/secretsmanager/ names through Secrets Manager's service.
            ssm_service.build_service(
                parameters, InternalKms(kms), authorizer, secret_reader(secretsmanager), settings.regions
            ),
            cloudtrail_service.build_service(CloudTrailBackend(TrailStore(engine), authorizer)),
            accessanalyzer_service.build_service(AnalyzerBackend(AnalyzerStore(engine), authorizer)),
            organizations_service.build_service(OrganizationsBackend(OrganizationStore(engine), authorizer)),
        )
        query_services = (
            sts_service.build_service(
                StsBackend(StsStore(engine, barrier, fingerprinter), credentials, authorizer)
            ),
            iam_service.build_service(
                IamBackend(IamStore(engine), barrier, authorizer, credentials, fingerprinter)
            ),
        )
        # Leak detection acts on the other services through their own handlers (see LeaksBackend).
        leaks_store = LeakStore(engine)
        leaks = LeaksBackend(
            store=leaks_store,
            fingerprinter=fingerprinter,
            authorizer=authorizer,
            services={service.name: service for service in (*json_services, *query_services)},
            rotation=rotation,
            poke_jobs=jobs.poke,
            audit=audit,
            engine=engine,
            barrier=barrier,
            clock=clock,
            limiter=RateLimiter(leaks_store),
        )
        json_services = (*json_services, leaks_service.build_service(leaks))
        # Alerts and review findings for operators and the console (khoa-ops): the caller's account's.
        ops = OpsBackend(
            OpsStore(engine),
            authorizer,
            dev_account_id,
            partial(review_account, engine, settings, barrier=barrier),
        )
        json_services = (*json_services, ops_service.build_service(ops))

        # Background work, in the order of a pass. Each job's work is recorded as AwsServiceEvents.
        job_audit = audit_jobs.JobAudit(engine, audit, dev_account_id, settings.default_region)
        jobs.register(
            "kms.destroy_due_keys",
            audit_jobs.recorded(
                job_audit,
                "DeleteKey",
                audit_jobs.kms_keys("deletion_date"),
                lambda now: destroy_due_keys(kms, now),
            ),
        )
        jobs.register(
            "kms.rotate_due_keys",
            audit_jobs.recorded(
                job_audit,
                "RotateKey",
                audit_jobs.kms_keys("next_rotation_at"),
                lambda now: rotate_due_keys(kms, now),
                rotationType="AUTOMATIC",
            ),
        )
        jobs.register(
            "kms.expire_imported_material",
            audit_jobs.recorded(
                job_audit,
                "DeleteExpiredKeyMaterial",
                audit_jobs.kms_keys("valid_to"),
                lambda now: expire_imported_material(kms, now),
            ),
        )
        jobs.register(
            "secretsmanager.destroy_due_secrets",
            audit_jobs.recorded(
                job_audit,
                "DeleteSecret",
                audit_jobs.SECRETS,
                lambda now: destroy_due_secrets(secrets, now),
            ),
        )
        jobs.register(
            "ssm.expire_parameters",
            audit_jobs.recorded(
                job_audit,
                "DeleteParameter",
                audit_jobs.PARAMETERS,
                lambda now: expire_due(parameters, now),
            ),
        )
        webhooks = WebhookDeliverer(engine, barrier)
        jobs.register("events.deliver_webhooks", lambda now: webhooks.deliver())
        # Rotation has a lane (thread) of its own: a slow function does not hold the other jobs.
        jobs.register(
            "secretsmanager.rotate_secrets", lambda now: log_rotations(rotation.run_due(now)), lane="rotation"
        )
        jobs.register(
            "audit.lost_outcomes",
            audit_jobs.lost_outcomes(engine, audit.writer, settings.rotation_step_timeout_seconds),
        )
        # Last uses of keys, in the main lane: the trail's followers (this, delivery, alerts) run one
        # at a time beside the leader's requests. On two lanes at once (measured while the job
        # threads still shared the worker's pinned CPU) they raised a busy node's p99 (two workers,
        # GetSecretValue, medians of six runs: 12.3 ms one lane, 15.9 ms two); a pass's time is
        # bounded instead (catching up over a large trail after the upgrade takes a few passes).
        # Retention (in audit.trail) keeps the events not counted yet.
        jobs.register("audit.usage", UsageTracker(engine).run)
        jobs.register("audit.trail", AuditTrail(engine, barrier, settings, trail_health).run_job)
        alerts = AlertEngine(
            engine=engine,
            settings=settings.alerts,
            audit=audit,
            now=clock.now,
            default_account_id=dev_account_id,
            default_region=settings.default_region,
            delivery=trail_health,
        )
        backfill = Backfill(
            leaks_store,
            fingerprinter,
            barrier,
            open_secret=partial(secret_values.open_value, InternalKms(kms)),
            open_parameter=partial(parameter_values.decrypt, InternalKms(kms)),
        )
        jobs.register("leaks.fingerprint_backfill", backfill.run)
        jobs.register("alerts.evaluate", alerts.run)  # last: sees what this pass's other jobs recorded

        return cls(
            settings=settings,
            engine=engine,
            statements=statements,
            barrier=barrier,
            clock=clock,
            credentials=credentials,
            verifier=SigV4Verifier(regions=settings.regions),
            authorizer=authorizer,
            audit=audit,
            revocations=open_epoch(settings.data_dir),
            jobs=jobs,
            kms=kms,
            secrets=secrets,
            parameters=parameters,
            rotation=rotation,
            alerts=alerts,
            services={service.target_prefix: service for service in json_services},
            query_services={service.signing_name: service for service in query_services},
            subscription_check=subscription_check(secrets),
            dev_account_id=dev_account_id,
        )

    @property
    def stuck_after_seconds(self) -> float:
        """How long a caller waits on a thread held in one database statement (khoa.blocking)."""
        return _bounds(self.settings).stuck_after_seconds

    def close(self) -> None:
        """Release the database at shutdown: the audit writer's kept connection, then the pool (the
        last SQLite connection to close folds the WAL back into the database file)."""
        self.audit.close()
        self.engine.dispose()
        self.audit.turn.close()  # the node's writers' turn (its lock file), now that nobody writes
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
        self.authorizer.clear()
        self.kms.store.clear_caches()
        self.secrets.store.invalidate_all()
        self.parameters.invalidate_all()

    def reset(self) -> None:
        """Wipe every account's and region's resources (the --dev reset endpoints)."""
        with self.engine.begin() as conn:
            for table in _RESOURCE_TABLES:
                conn.execute(delete(table))
        with self.engine.begin() as conn:  # IAM users' access keys go with their users
            conn.execute(delete(schema.access_keys).where(schema.access_keys.c.principal_kind != "Root"))
        self.revoked()  # every worker process of this node forgets what it cached


def sqlite_directory(engine: Engine) -> Path | None:
    """The directory of a SQLite database file (None for PostgreSQL or an in-memory database)."""
    database = engine.url.database if engine.url.get_backend_name() == "sqlite" else None
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).parent


def log_rotations(outcomes: list[RotationOutcome]) -> None:
    for outcome in outcomes:
        log.info("rotation of %s %s", outcome.secret_arn, "succeeded" if outcome.succeeded else "failed")


def _bounds(settings: Settings) -> DatabaseBounds:
    """How long anything may wait on the database, as the settings say."""
    return DatabaseBounds(settings.database_timeout_seconds, settings.database_connect_timeout_seconds)
