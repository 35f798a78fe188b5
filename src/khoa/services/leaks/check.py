"""CheckLeakedValues and ReportLeakedValues: is a value found outside Khoa one that Khoa holds?

Each candidate is fingerprinted with the installation's key (khoa.crypto.fingerprint) and looked up
among the fingerprints of the caller's account only (every Region of it); a match names the resource
(for an access key or STS credential: its user's, the root's or the role's ARN, with the key id in
``AccessKeyId``), the version, the JSON field, and whether the value still works (``live``) or worked
once (``former``, with ``InvalidSince``). Nothing returned, logged or audited contains a value.

Live means: a secret version with any staging label; the latest version of a SecureString
parameter; an Active access key; an STS credential not expired.

**What proves a leak.** A match is evidence only when holding the value proves the resource
compromised: a secret version's whole value, a plausibly secret JSON leaf of it, a SecureString
version, an access key's secret access key, an STS credential's secret access key or session token
(an unexpired session, by the digest it keeps). JSON leaves follow
:func:`khoa.crypto.fingerprint.plausibly_secret`, applied here again to the candidate, so leaf
fingerprints stored before that rule (``"true"``, ``"us-east-1"``) no longer match.

An access key id (``AKIA…``, ``ASIA…``) is no secret: ListAccessKeys, the trail and error messages
show it, and it signs nothing alone. It is found by the key id the credential's rows carry (ids are
not fingerprinted; fingerprints of ids written by earlier versions are ignored) and CheckLeakedValues
answers it as information (the key and whether it works, which ``khoa scan`` shows as "Khoa access key
id"), but it is never evidence: ReportLeakedValues leaves it out of its answer and never responds to
it, so no key is deactivated, no user quarantined and no ``secret-leaked`` alert raised for an id.

**What a match names** is what the caller may see (visibility.py): a secret or parameter only if the
caller may describe it, otherwise only that a value of this account matched (a wildcard ARN and the
status); an id match the caller may not see is left out. A hidden match that proves a leak is still
responded to.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from khoa.crypto.fingerprint import plausibly_secret
from khoa.protocol.context import RequestContext
from khoa.services.leaks import errors, respond
from khoa.services.leaks.backend import LeaksBackend
from khoa.services.leaks.store import BY_FINGERPRINT, BY_KEY_ID, BY_TOKEN, FingerprintMatch
from khoa.services.leaks.visibility import Visibility, hidden_arn
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
_HIDDEN_MEMBERS = ("Id", "Status", "ResourceType")
# What may be a key id (AKIA…/ASIA… and Khoa's own), looked up by the rows' key id; what may be a
# session token (Khoa's are 152 characters), looked up by its digest.
_KEY_ID = re.compile(r"[A-Z0-9]{16,128}")
_MIN_TOKEN_LENGTH = 64


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


def _match(
    candidate_id: str, m: FingerprintMatch, now: float, proves_leak: bool, shown: bool
) -> dict[str, Any]:
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
    # for responses only; not sent (see wire)
    match["Region"] = m.region
    match["ProvesLeak"] = proves_leak  # a secret (not a key id) matched
    match["Shown"] = shown  # the caller may see which resource it is
    return match


def _candidates(
    m: FingerprintMatch, values: dict[str, str], by_key: dict[str, dict[str, list[str]]]
) -> list[str]:
    """The ids of the candidates ``m`` is a match of (of those ``m.fingerprint`` matched): none for a
    fingerprint row of a key id (written by earlier versions; ids are matched by key id) or for a
    JSON leaf that is not plausibly secret (a fingerprint written before that rule)."""
    ids = by_key[m.matched_on].get(m.fingerprint, [])
    if m.matched_on != BY_FINGERPRINT:
        return ids
    if m.access_key_id:
        return [cid for cid in ids if values[cid] != m.access_key_id]
    if m.resource_type == fingerprints.SECRET and m.field:
        return [cid for cid in ids if plausibly_secret(m.field, values[cid])]
    return ids


def find_matches(
    backend: LeaksBackend, ctx: RequestContext, candidates: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The matches of ``candidates`` in the caller's account, live ones first, each with ``Region``
    (the resource's Region, "" for IAM and STS), ``ProvesLeak`` and ``Shown`` besides the wire
    members (see the module docstring); key id matches the caller may not see are left out."""
    values: dict[str, str] = {}
    by_key: dict[str, dict[str, list[str]]] = {BY_FINGERPRINT: {}, BY_KEY_ID: {}, BY_TOKEN: {}}
    for candidate in candidates:
        candidate_id, value = candidate["Id"], candidate["Value"]
        if candidate_id in values:
            raise errors.duplicate_ids(candidate_id)
        values[candidate_id] = value
        by_key[BY_FINGERPRINT].setdefault(backend.fingerprinter.digest(value), []).append(candidate_id)
        if _KEY_ID.fullmatch(value):
            by_key[BY_KEY_ID].setdefault(value, []).append(candidate_id)
        if len(value) >= _MIN_TOKEN_LENGTH:
            token = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
            by_key[BY_TOKEN].setdefault(token, []).append(candidate_id)
    now = ctx.now.timestamp()
    results: list[dict[str, Any]] = []
    found = backend.store.matches(
        ctx.account_id,
        list(by_key[BY_FINGERPRINT]),
        key_ids=list(by_key[BY_KEY_ID]),
        token_digests=list(by_key[BY_TOKEN]),
        now=now,
    )
    visibility = Visibility(backend, ctx)
    for m in found:
        ids = _candidates(m, values, by_key)
        if not ids:
            continue
        proves_leak = m.matched_on != BY_KEY_ID
        shown = visibility.shown(m.resource_type, m.resource_arn, m.region, proves_leak)
        if not proves_leak and not shown:
            continue  # an id the caller may not see: nothing to say
        for candidate_id in ids:
            results.append(_match(candidate_id, m, now, proves_leak, shown))
    order = {cid: i for i, cid in enumerate(values)}

    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        w = wire(r)
        return (
            r["Status"] != LIVE,
            order[r["Id"]],
            w["ResourceType"],
            w["ResourceArn"],
            w.get("VersionId", ""),
            w.get("Field") or "",
        )

    results.sort(key=key)
    return results


def wire(match: dict[str, Any]) -> dict[str, Any]:
    """A match as the API returns it (the members of the model's Match shape): for a match the caller
    may not see, only that a value of this account matched (visibility.py)."""
    if match.get("Shown") is True:
        return {k: match[k] for k in _WIRE_MEMBERS if k in match}
    hidden = {k: match[k] for k in _HIDDEN_MEMBERS}
    hidden["ResourceArn"] = hidden_arn(match["ResourceType"], match["ResourceArn"].split(":")[4])
    return hidden


def answer(matches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Matches member: each match's wire form, hidden ones that say the same said once."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for match in matches:
        shape = wire(match)
        text = json.dumps(shape, sort_keys=True, default=str)
        if text not in seen:
            seen.add(text)
            out.append(shape)
    return out


def check_leaked_values(backend: LeaksBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    """Authorised (khoa:CheckLeakedValues) and rate-limited before it runs (authtable.py)."""
    return {"Matches": answer(find_matches(backend, ctx, params["Candidates"]))}


def report_leaked_values(
    backend: LeaksBackend, ctx: RequestContext, params: dict[str, Any]
) -> dict[str, Any]:
    """The check, then (unless ``Respond`` is false) the response to each live match (respond.py).
    Only matches that prove a leak are answered and responded to (a key id is not a leak). The trail
    records the call's SourceUrl, Matches and Responses (no value), which the ``secret-leaked`` alert
    rule reads."""
    matches = [m for m in find_matches(backend, ctx, params["Candidates"]) if m["ProvesLeak"]]
    responses: list[dict[str, Any]] = []
    if params.get("Respond", True) and matches:  # respond.py decides what each match needs
        responses = respond.respond(backend, ctx, matches)
    return {"Matches": answer(matches), "Responses": responses}


OPERATIONS = {"CheckLeakedValues": check_leaked_values, "ReportLeakedValues": report_leaked_values}
