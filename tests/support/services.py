"""Every service Khoa serves, built as the composition root builds it but over throwaway collaborators
(a fresh migrated SQLite database, a random barrier, uncached stores): for tests that look at what
the services are (their operations, their authorisation tables) rather than at what they do."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from khoa.auth.credentials import CredentialStore
from khoa.services import accessanalyzer, cloudtrail, iam, kms, organizations, secretsmanager, ssm, sts
from khoa.services.accessanalyzer.backend import AnalyzerBackend
from khoa.services.accessanalyzer.store import AnalyzerStore
from khoa.services.base import Service
from khoa.services.cloudtrail.backend import CloudTrailBackend
from khoa.services.cloudtrail.store import TrailStore
from khoa.services.iam.backend import IamBackend
from khoa.services.iam.store import IamStore
from khoa.services.kms.backend import KmsBackend
from khoa.services.kms.internal import InternalKms
from khoa.services.organizations.backend import OrganizationsBackend
from khoa.services.organizations.store import OrganizationStore
from khoa.services.secretsmanager.backend import SecretsBackend
from khoa.services.secretsmanager.store import SecretStore
from khoa.services.ssm.references import reader
from khoa.services.ssm.store import ParameterStore
from khoa.services.sts.backend import StsBackend
from khoa.services.sts.store import StsStore
from tests.support.handlers import REGION, authorizer, barrier, database


class _NoRotation:
    """Secrets Manager's rotation engine, never started: these services are looked at, not called."""

    def start(
        self, secret_id: str, token: str, now: float, configure: Mapping[str, Any] | None = None
    ) -> bool:
        return False

    def cancel(self, secret_id: str) -> None:
        pass

    def in_progress(self, secret_id: str) -> str | None:
        return None

    def has_function(self, arn: str) -> bool:
        return False


def every_service(directory: Path | None = None) -> dict[str, Service]:
    """Every service by name, over a database in ``directory`` (a new temporary one by default)."""
    if directory is None:
        directory = Path(tempfile.mkdtemp(prefix="khoa-services-"))
        atexit.register(shutil.rmtree, directory, True)
    engine = database(directory)
    seal = barrier()
    authorize = authorizer(engine)
    credentials = CredentialStore(engine, seal, 0)
    kms_backend = KmsBackend.create(engine, seal, authorize, cache_seconds=0)
    secrets = secretsmanager.build_service(
        SecretsBackend(
            engine=engine,
            store=SecretStore(engine, cache_seconds=0),
            keys=InternalKms(kms_backend),
            authorizer=authorize,
            rotation=_NoRotation(),
            poke_jobs=lambda: None,
            regions=(REGION,),
        )
    )
    built = [
        kms.build_service(kms_backend),
        secrets,
        ssm.build_service(ParameterStore(engine, 0), InternalKms(kms_backend), authorize, reader(secrets)),
        sts.build_service(StsBackend(StsStore(engine, seal), credentials, authorize)),
        iam.build_service(IamBackend(IamStore(engine), seal, authorize, credentials)),
        cloudtrail.build_service(CloudTrailBackend(TrailStore(engine), authorize)),
        organizations.build_service(OrganizationsBackend(OrganizationStore(engine), authorize)),
        accessanalyzer.build_service(AnalyzerBackend(AnalyzerStore(engine), authorize)),
    ]
    return {service.name: service for service in built}
