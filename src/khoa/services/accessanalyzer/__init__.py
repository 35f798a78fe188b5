"""IAM Access Analyzer (``accessanalyzer``, restJson1): external-access analyzers and findings for KMS
keys and Secrets Manager secrets, and ValidatePolicy for the policies of the services Khoa serves."""

from __future__ import annotations

from khoa.protocol.model import ServiceModel
from khoa.services.accessanalyzer import analyzers, authtable, findings, validation
from khoa.services.accessanalyzer.backend import AnalyzerBackend
from khoa.services.base import Service, bind


def build_service(analyzer: AnalyzerBackend) -> Service:
    return Service(
        name="accessanalyzer",
        signing_name="access-analyzer",
        # addressed by method and path, never by X-Amz-Target (the pipeline routes rest-json by signing name)
        target_prefix="rest-json:access-analyzer",
        model=ServiceModel("accessanalyzer"),
        handlers=bind(analyzer, analyzers.OPERATIONS, findings.OPERATIONS, validation.OPERATIONS),
        authorizer=authtable.table(analyzer),
        protocol="rest-json",
    )
