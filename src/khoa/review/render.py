"""The review's output: text for people, JSON for scripts, SARIF 2.1.0 for code-scanning UIs, markdown
for pull requests and tickets."""

from __future__ import annotations

import json
from typing import Any

from khoa.review.model import Severity
from khoa.review.runner import Review

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_SARIF_LEVEL = {Severity.HIGH: "error", Severity.MEDIUM: "warning", Severity.LOW: "note"}
INFORMATION_URI = "https://github.com/khoa/khoa/blob/main/docs/review.md"


def as_json(review: Review) -> str:
    return json.dumps(review.as_json(), indent=2)


def as_text(review: Review) -> str:
    lines = []
    for f in review.findings:
        lines += [
            f"{f.severity.label.upper():<6} {f.rule}  {f.resource}",
            f"       {f.message}",
            f"       fix: {f.fix}",
        ]
    if review.findings:
        lines.append("")
    counts = {s: sum(1 for f in review.findings if f.severity == s) for s in Severity}
    lines.append(
        f"{len(review.findings)} finding(s): {counts[Severity.HIGH]} high, {counts[Severity.MEDIUM]} medium, "
        f"{counts[Severity.LOW]} low; {len(review.passed)} of {len(review.rules)} rules passed"
    )
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def as_markdown(review: Review) -> str:
    lines = ["# Khoa review", ""]
    if review.findings:
        lines += ["| severity | rule | resource | finding | fix |", "|---|---|---|---|---|"]
        lines += [
            f"| {f.severity.label} | `{f.rule}` | `{_cell(f.resource)}` "
            f"| {_cell(f.message)} | {_cell(f.fix)} |"
            for f in review.findings
        ]
    else:
        lines.append("No findings.")
    lines += [
        "",
        f"Passed ({len(review.passed)} of {len(review.rules)}): "
        + (", ".join(f"`{rule}`" for rule in review.passed) or "none"),
    ]
    return "\n".join(lines)


def as_sarif(review: Review, version: str) -> str:
    rules: list[dict[str, Any]] = [
        {
            "id": rule.id,
            "name": rule.title,
            "shortDescription": {"text": rule.title},
            "fullDescription": {"text": f"{rule.title} (severity {rule.severity.label}: {rule.why})"},
            "help": {"text": rule.fix},
            "helpUri": f"{INFORMATION_URI}#{rule.id}",
            "defaultConfiguration": {"level": _SARIF_LEVEL[rule.severity]},
            "properties": {"severity": rule.severity.label},
        }
        for rule in review.rules
    ]
    index = {rule.id: n for n, rule in enumerate(review.rules)}
    results = [
        {
            "ruleId": f.rule,
            "ruleIndex": index[f.rule],
            "level": _SARIF_LEVEL[f.severity],
            "message": {"text": f"{f.message}. Fix: {f.fix}"},
            "locations": [
                {
                    "logicalLocations": [{"fullyQualifiedName": f.resource, "kind": "resource"}],
                }
            ],
            "properties": {"severity": f.severity.label, "resource": f.resource},
        }
        for f in review.findings
    ]
    document = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "khoa review",
                        "version": version,
                        "informationUri": INFORMATION_URI,
                        "rules": rules,
                    }
                },
                "results": results,
            }
        ],
    }
    return json.dumps(document, indent=2)
