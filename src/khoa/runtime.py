"""The app object: every piece of per-process state lives here, built once from Settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy import Engine, delete

from khoa.audit.recorder import AuditRecorder
from khoa.auth.credentials import CredentialStore
from khoa.auth.sigv4 import SigV4Verifier
from khoa.bootstrap import first_account_id, load_barrier
from khoa.clock import Clock
from khoa.crypto.barrier import Barrier
from khoa.iam.directory import Directory
from khoa.jobs import JobRunner
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
    schema.audit_events,
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
    services: dict[str, Service] = field(default_factory=dict)
    query_services: dict[str, Service] = field(default_factory=dict)
    dev_account_id: str = ""

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        engine = create_database_engine(settings.effective_database_url)
        barrier = load_barrier(settings, engine, create=False)
        clock = Clock()
        runtime = cls(
            settings=settings,
            engine=engine,
            barrier=barrier,
            clock=clock,
            credentials=CredentialStore(engine, barrier),
            verifier=SigV4Verifier(),
            kms=KmsBackend(engine, barrier),
            jobs=JobRunner(engine, clock, settings.job_interval_seconds),
            secrets=SecretsBackend(engine),
            secrets_replication=Replication(),
            parameters=ParametersBackend(engine),
            directory=Directory(engine),
            audit=AuditRecorder(engine),
            dev_account_id=first_account_id(engine) or "",
        )
        for service in (
            kms_service.build_service(),
            secretsmanager_service.build_service(),
            ssm_service.build_service(),
        ):
            runtime.services[service.target_prefix] = service
        for service in (sts_service.build_service(),):
            runtime.query_services[service.signing_name] = service
        runtime.jobs.register(
            "kms.destroy_due_keys",
            lambda now: log_done("destroyed key", destroy_due_keys(runtime.kms, now.timestamp())),
        )
        runtime.jobs.register(
            "kms.rotate_due_keys",
            lambda now: log_done("rotated key", rotate_due_keys(runtime.kms, now.timestamp())),
        )
        runtime.jobs.register(
            "kms.expire_imported_material",
            lambda now: log_done(
                "expired material of", expire_imported_material(runtime.kms, now.timestamp())
            ),
        )
        runtime.jobs.register(
            "secretsmanager.destroy_due_secrets",
            lambda now: log_done("deleted secret", destroy_due_secrets(runtime.secrets, now.timestamp())),
        )
        runtime.jobs.register(
            "ssm.expire_parameters",
            lambda now: log_done("expired parameter", expire_due(runtime.parameters, now.timestamp())),
        )
        return runtime

    def reset(self) -> None:
        """Wipe every account's and region's resources (the --dev reset endpoints)."""
        with self.engine.begin() as conn:
            for table in _RESOURCE_TABLES:
                conn.execute(delete(table))
        self.kms.keys.clear_cache()


def log_done(verb: str, resource_ids: list[str]) -> None:
    for resource_id in resource_ids:
        log.info("background job %s %s", verb, resource_id)
