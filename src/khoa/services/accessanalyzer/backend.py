"""What Access Analyzer's handlers and authorisation table are given (by ``build_service``)."""

from __future__ import annotations

from dataclasses import dataclass

from khoa.access.authorize import Authorizer
from khoa.services.accessanalyzer.store import AnalyzerStore


@dataclass(frozen=True)
class AnalyzerBackend:
    """Access Analyzer's collaborators: its store (analyzers, findings, and a read-only view of the key
    policies, grants and secret policies it analyses) and the authoriser of its operations."""

    store: AnalyzerStore
    authorizer: Authorizer
