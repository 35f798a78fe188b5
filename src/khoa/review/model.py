"""The review's vocabulary: severities, findings, rules and what a rule is given to read."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from khoa.review.snapshot import Snapshot


class Severity(IntEnum):
    LOW = 1
    MEDIUM = 2
    HIGH = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Severity:
        return cls[text.strip().upper()]


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: Severity
    resource: str  # an ARN, or khoa://installation/<part> for installation-wide settings
    message: str  # never a value: names, ARNs, counts and times only
    fix: str

    def as_json(self) -> dict[str, str]:
        return {
            "rule": self.rule,
            "severity": self.severity.label,
            "resource": self.resource,
            "message": self.message,
            "fix": self.fix,
        }


@dataclass(frozen=True)
class Rule:
    """One checklist item. ``check`` yields (resource, message) pairs; severity and fix are the rule's."""

    id: str
    severity: Severity
    why: str  # the one-line justification of the severity
    title: str
    fix: str
    check: Callable[[Snapshot], Iterable[tuple[str, str]]]

    def run(self, snapshot: Snapshot) -> list[Finding]:
        return [
            Finding(self.id, self.severity, resource, message, self.fix)
            for resource, message in self.check(snapshot)
        ]
