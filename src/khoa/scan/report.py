"""Findings and how they are shown: a Rich table for people, JSON for scripts, SARIF 2.1.0 for
code-scanning dashboards.

No output ever holds a whole value: a finding carries only :func:`mask`'s short prefix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

STATUS_ORDER = {"live": 0, "former": 1, "pattern": 2}
_TYPES = {
    "secret": "Khoa secret",
    "parameter": "Khoa SecureString parameter",
    "sts-credential": "Khoa STS credential",
}
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"


def mask(value: str) -> str:
    """A short, masked prefix (as detect-secrets' audit shows): at most 4 characters of a long value,
    2 of a medium one, none of a short one; the stars never tell the length."""
    shown = 4 if len(value) >= 16 else 2 if len(value) >= 10 else 0
    return value[:shown] + "*" * 8


def khoa_type(resource_type: str, value: str, access_key_id: str | None) -> str:
    if resource_type == "access-key":
        return "Khoa access key id" if value == access_key_id else "Khoa secret access key"
    if resource_type == "sts-credential" and value == access_key_id:
        return "Khoa STS access key id"
    return _TYPES.get(resource_type, f"Khoa {resource_type}")


@dataclass
class Finding:
    file: str
    line: int
    type: str
    status: str  # live | former | pattern
    masked: str
    resource: str | None = None
    commit: str | None = None
    resource_type: str | None = None
    access_key_id: str | None = None
    version_id: str | None = None
    version_stages: list[str] = dc_field(default_factory=list)
    field: str | None = None
    invalid_since: str | None = None
    detectors: list[str] = dc_field(default_factory=list)

    def json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "type": self.type,
            "status": self.status,
            "resource": self.resource,
            "commit": self.commit,
            "value": self.masked,
            "resource_type": self.resource_type,
            "access_key_id": self.access_key_id,
            "version_id": self.version_id,
            "version_stages": self.version_stages,
            "field": self.field,
            "invalid_since": self.invalid_since,
            "detectors": self.detectors,
        }

    def sort_key(self) -> tuple[int, str, int, str, str]:
        return (STATUS_ORDER.get(self.status, 9), self.file, self.line, self.type, self.resource or "")


@dataclass
class ScanReport:
    findings: list[Finding]
    files: int = 0
    commits: int = 0
    candidates: int = 0
    requests: int = 0
    throttled: int = 0
    responses: list[dict[str, Any]] = dc_field(default_factory=list)

    def json(self) -> dict[str, Any]:
        return {
            "findings": [finding.json() for finding in self.findings],
            "responses": [_response_json(r) for r in self.responses],
            "summary": {
                "files": self.files,
                "commits": self.commits,
                "candidates": self.candidates,
                "requests": self.requests,
                "throttled": self.throttled,
                "live": sum(f.status == "live" for f in self.findings),
                "former": sum(f.status == "former" for f in self.findings),
                "pattern": sum(f.status == "pattern" for f in self.findings),
            },
        }


def _response_json(response: dict[str, Any]) -> dict[str, Any]:
    return {
        "resource": response.get("ResourceArn"),
        "action": response.get("Action"),
        "detail": response.get("Detail"),
    }


def _describe(finding: Finding) -> str:
    parts = [finding.resource or ""]
    if finding.access_key_id:
        parts.append(f"key {finding.access_key_id}")
    if finding.field:
        parts.append(f"field {finding.field}")
    if finding.version_id:
        stages = ",".join(finding.version_stages)
        parts.append(f"version {finding.version_id}" + (f" ({stages})" if stages else ""))
    if finding.invalid_since:
        parts.append(f"invalid since {finding.invalid_since}")
    return " ".join(p for p in parts if p) or "-"


def render_text(report: ScanReport, console: Console) -> None:
    """A table for people. Cells are plain Text: no markup and no emoji codes (an ARN's ``:secret:``
    must not turn into a picture)."""
    scanned = f"{report.files} files" + (f", {report.commits} commits" if report.commits else "")
    if not report.findings:
        console.print(
            f"No leaked values found ({scanned}; {report.requests} checks with Khoa).",
            markup=False,
            emoji=False,
        )
    else:
        table = Table("status", "type", "location", "commit", "value", "resource")
        for column in table.columns:
            column.overflow = "fold"
        style = {"live": "bold red", "former": "yellow", "pattern": "cyan"}
        for f in report.findings:
            table.add_row(
                Text(f.status, style=style.get(f.status, "")),
                Text(f.type),
                Text(f"{f.file}:{f.line}"),
                Text(f.commit[:12] if f.commit else "-"),
                Text(f.masked),
                Text(_describe(f)),
            )
        console.print(table)
        summary = report.json()["summary"]
        console.print(
            f"{len(report.findings)} findings: {summary['live']} live, {summary['former']} former, "
            f"{summary['pattern']} generic patterns ({scanned}; {report.requests} checks with Khoa).",
            markup=False,
            emoji=False,
        )
    for response in report.responses:
        r = _response_json(response)
        console.print(f"response: {r['action']} {r['resource']}: {r['detail']}", markup=False, emoji=False)


def render_json(report: ScanReport) -> str:
    return json.dumps(report.json(), indent=2)


_RULES = {
    "live": ("khoa/live-value", "A value Khoa holds and that still works", "error"),
    "former": ("khoa/former-value", "A value Khoa held that no longer works", "warning"),
}


def _rule_id(finding: Finding) -> str:
    if finding.status in _RULES:
        return _RULES[finding.status][0]
    return "detect-secrets/" + finding.type.replace(" ", "-").lower()


def render_sarif(report: ScanReport, version: str) -> str:
    rules: dict[str, dict[str, Any]] = {}
    results = []
    for f in report.findings:
        rule_id = _rule_id(f)
        if rule_id not in rules:
            name, level = (
                (_RULES[f.status][1], _RULES[f.status][2])
                if f.status in _RULES
                else (f"Generic secret pattern: {f.type}", "warning")
            )
            rules[rule_id] = {
                "id": rule_id,
                "name": rule_id.split("/")[-1],
                "shortDescription": {"text": name},
                "defaultConfiguration": {"level": level},
            }
        level = rules[rule_id]["defaultConfiguration"]["level"]
        text = f"{f.status} {f.type} ({f.masked})"
        if f.resource:
            text += f": {_describe(f)}"
        if f.commit:
            text += f", introduced in commit {f.commit}"
        results.append(
            {
                "ruleId": rule_id,
                "level": level,
                "message": {"text": text},
                "locations": [
                    {
                        "physicalLocation": {
                            "artifactLocation": {"uri": f.file.replace("\\", "/")},
                            "region": {"startLine": max(f.line, 1)},
                        }
                    }
                ],
                "properties": {
                    "status": f.status,
                    "type": f.type,
                    "resource": f.resource,
                    "commit": f.commit,
                    "accessKeyId": f.access_key_id,
                    "versionId": f.version_id,
                },
            }
        )
    document = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "khoa scan",
                        "version": version,
                        "rules": list(rules.values()),
                    }
                },
                "results": results,
            }
        ],
    }
    return json.dumps(document, indent=2)
