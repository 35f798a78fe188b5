"""CheckLeakedValues and ReportLeakedValues: is a value found outside Khoa one that Khoa holds?

Each candidate is fingerprinted with the installation's key (khoa.crypto.fingerprint) and looked up
among the fingerprints of the caller's account only (every Region of it); a match names the resource
(for an access key or STS credential: its user's, the root's or the role's ARN, with the key id in
``AccessKeyId``), the version, the JSON field, and whether the value still works (``live``) or worked
once (``former``, with ``InvalidSince``). Nothing returned, logged or audited contains a value.

Live means: a secret version with any staging label; the latest version of a SecureString
parameter; an Active access key; an STS credential not expired.
"""

from __future__ import annotations

from typing import Any

from khoa.protocol.context import RequestContext
from khoa.services.leaks import errors, respond
from khoa.services.leaks.backend import LeaksBackend
from khoa.services.leaks.store import FingerprintMatch
from khoa.storage import fingerprints

LIVE = "live"
FORMER = "former"
_WIRE_MEMBERS = (
    "Id",
    "Status",
    "ResourceType",
    "ResourceArn",
    "AccessKeyId",
    "VersionId",
    "VersionStages",
    "Field",
    "InvalidSince",
)


def _status(m: FingerprintMatch, now: float) -> tuple[str, float | None]:
    """live or former, and for former when it stopped working (None: not known)."""
    if m.resource_type == fingerprints.SECRET:
        return (LIVE, None) if m.stages else (FORMER, m.invalid_since)
    if m.resource_type == fingerprints.PARAMETER:
        if m.current_version is not None and str(m.current_version) == m.version_id:
            return LIVE, None
        return FORMER, m.invalid_since if m.invalid_since is not None else m.superseded_at
    if m.resource_type == fingerprints.ACCESS_KEY:
        return (LIVE, None) if m.key_status == "Active" else (FORMER, m.invalid_since)
    expires = m.expires_at
    if expires is not None and expires <= now:
        return FORMER, expires
    if not m.session_exists:
        return FORMER, m.invalid_since
    return LIVE, None


def _match(candidate_id: str, m: FingerprintMatch, now: float) -> dict[str, Any]:
    status, since = _status(m, now)
    match: dict[str, Any] = {
        "Id": candidate_id,
        "Status": status,
        "ResourceType": m.resource_type,
        "ResourceArn": m.resource_arn,
    }
    if m.access_key_id:
        match["AccessKeyId"] = m.access_key_id
    if m.version_id:
        match["VersionId"] = m.version_id
    if m.resource_type == fingerprints.SECRET:
        match["VersionStages"] = m.stages
    if m.field:
        match["Field"] = m.field
    if status == FORMER and since is not None:
        match["InvalidSince"] = since
    match["Region"] = m.region  # for responses only; not sent (see wire)
    return match


def find_matches(
    backend: LeaksBackend, ctx: RequestContext, candidates: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The matches of ``candidates`` in the caller's account, live ones first, each with ``Region``
    (the resource's Region, "" for IAM and STS) besides the wire members."""
    seen: set[str] = set()
    by_digest: dict[str, list[str]] = {}
    for candidate in candidates:
        candidate_id = candidate["Id"]
        if candidate_id in seen:
            raise errors.duplicate_ids(candidate_id)
        seen.add(candidate_id)
        by_digest.setdefault(backend.fingerprinter.digest(candidate["Value"]), []).append(candidate_id)
    now = ctx.now.timestamp()
    results: list[dict[str, Any]] = []
    found = backend.store.matches(ctx.account_id, list(by_digest))
    for m in found:
        for candidate_id in by_digest.get(m.fingerprint, []):
            results.append(_match(candidate_id, m, now))
    order = {cid: i for i, cid in enumerate(c["Id"] for c in candidates)}
    results.sort(
        key=lambda r: (
            r["Status"] != LIVE,
            order[r["Id"]],
            r["ResourceType"],
            r["ResourceArn"],
            r.get("VersionId", ""),
            r.get("Field") or "",
        )
    )
    return results


def wire(match: dict[str, Any]) -> dict[str, Any]:
    """A match as the API returns it (the members of the model's Match shape)."""
    return {k: match[k] for k in _WIRE_MEMBERS if k in match}


def check_leaked_values(backend: LeaksBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    """Authorised (khoa:CheckLeakedValues) and rate-limited before it runs (authtable.py)."""
    return {"Matches": [wire(m) for m in find_matches(backend, ctx, params["Candidates"])]}


def report_leaked_values(
    backend: LeaksBackend, ctx: RequestContext, params: dict[str, Any]
) -> dict[str, Any]:
    """The check, then (unless ``Respond`` is false) the response to each live match (respond.py).
    The trail records the call's SourceUrl, Matches and Responses (no value), which the
    ``secret-leaked`` alert rule reads."""
    matches = find_matches(backend, ctx, params["Candidates"])
    responses: list[dict[str, Any]] = []
    if params.get("Respond", True) and matches:  # respond.py decides what each match needs
        responses = respond.respond(backend, ctx, matches)
    return {"Matches": [wire(m) for m in matches], "Responses": responses}


OPERATIONS = {"CheckLeakedValues": check_leaked_values, "ReportLeakedValues": report_leaked_values}
