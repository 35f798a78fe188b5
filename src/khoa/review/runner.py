"""Run every rule over one snapshot of the installation; findings in a stable order."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from khoa.crypto.barrier import Barrier
from khoa.review.model import Finding, Rule, Severity
from khoa.review.rules import RULES
from khoa.review.snapshot import Options, Snapshot
from khoa.settings import Settings


@dataclass(frozen=True)
class Review:
    findings: list[Finding]
    passed: list[str]  # ids of the rules with no finding
    rules: tuple[Rule, ...]

    def at_or_above(self, threshold: Severity) -> list[Finding]:
        return [f for f in self.findings if f.severity >= threshold]

    def as_json(self) -> dict[str, object]:
        return {"findings": [f.as_json() for f in self.findings], "passed": list(self.passed)}


def run_review(
    engine: Engine,
    settings: Settings,
    options: Options,
    now: float,
    rules: tuple[Rule, ...] = RULES,
    *,
    barrier: Barrier | None = None,
) -> Review:
    """``barrier``: the root key, when the reviewer holds it (the audit trail's keys are then trusted
    only as far as it vouches for them)."""
    snapshot = Snapshot(engine, settings, options, now, barrier)
    findings: list[Finding] = []
    passed: list[str] = []
    for rule in rules:
        found = rule.run(snapshot)
        findings += found
        if not found:
            passed.append(rule.id)
    findings.sort(key=lambda f: (-f.severity, f.rule, f.resource, f.message))
    return Review(findings, passed, rules)
