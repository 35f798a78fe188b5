"""How Access Analyzer's operations are authorised: as ``access-analyzer:<Operation>`` on the analyzer's
ARN (``arn:aws:access-analyzer:<region>:<account>:analyzer/<name>``), or on ``*`` for ListAnalyzers and
ValidatePolicy, which name no analyzer."""

from __future__ import annotations

from typing import Any

from khoa.protocol.context import RequestContext
from khoa.services.accessanalyzer.analyzers import analyzer_arn
from khoa.services.accessanalyzer.backend import AnalyzerBackend
from khoa.services.authorization import AuthorizationTable, Rule, rule


def table(analyzer: AnalyzerBackend) -> AuthorizationTable:
    def by_name(operation: str) -> Rule:
        action = f"access-analyzer:{operation}"

        def check(ctx: RequestContext, params: dict[str, Any]) -> None:
            analyzer.authorizer.authorize(ctx, action, analyzer_arn(ctx, params["analyzerName"]))

        return rule(check, action)

    def by_arn(operation: str) -> Rule:
        action = f"access-analyzer:{operation}"

        def check(ctx: RequestContext, params: dict[str, Any]) -> None:
            analyzer.authorizer.authorize(ctx, action, params["analyzerArn"])

        return rule(check, action)

    def anywhere(operation: str) -> Rule:
        action = f"access-analyzer:{operation}"

        def check(ctx: RequestContext, params: dict[str, Any]) -> None:
            analyzer.authorizer.authorize(ctx, action, "*")

        return rule(check, action)

    return AuthorizationTable(
        "access-analyzer",
        {
            "CreateAnalyzer": by_name("CreateAnalyzer"),
            "GetAnalyzer": by_name("GetAnalyzer"),
            "DeleteAnalyzer": by_name("DeleteAnalyzer"),
            "ListAnalyzers": anywhere("ListAnalyzers"),
            "ListFindings": by_arn("ListFindings"),
            "ListFindingsV2": by_arn("ListFindingsV2"),
            "GetFinding": by_arn("GetFinding"),
            "GetFindingV2": by_arn("GetFindingV2"),
            "UpdateFindings": by_arn("UpdateFindings"),
            "ValidatePolicy": anywhere("ValidatePolicy"),
        },
    )
