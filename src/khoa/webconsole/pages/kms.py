"""KMS keys in the console: the region's keys a page at a time, one key's details, and the key's
life-cycle actions (enable, disable, schedule and cancel deletion, automatic rotation).

Everything goes through the KMS API as the signed-in principal, so what a person sees and may do is
exactly what their policies allow, and every action lands in the trail with the console's user agent.
The details page is made of several API calls; one the principal may not make (AccessDenied) leaves
its section saying so instead of failing the whole page, since a person allowed to describe a key
often is not allowed to read its policy or grants.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any
from urllib.parse import quote

from botocore.exceptions import ClientError

from khoa.webconsole.http import BadRequest, Page, Redirect, Request, Route

# One API page per console page. Each listed key costs a DescribeKey and a ListAliases call, so a
# page stays bounded however many keys the region holds.
KEYS_PER_PAGE = 25
ALIASES_PER_KEY = 10
GRANTS_PER_PAGE = 50
TAGS_SHOWN = 50
_DAYS = re.compile(r"^\d{1,4}$")
_DENIED_CODES = frozenset({"AccessDeniedException", "AccessDenied"})


@dataclass(frozen=True)
class Section:
    """One part of the details page: the API's answer, or ``denied`` when the principal may not see it,
    or ``unavailable`` (with the API's error code) when the call does not apply to this key."""

    value: Any = None
    denied: bool = False
    unavailable: str = ""


def _denied(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code", "") in _DENIED_CODES


def _section(call: Callable[[], Any], *, tolerate_all: bool = False) -> Section:
    """Run one sub-call of a page. AccessDenied becomes a denied section; with ``tolerate_all``
    any other API error becomes an unavailable one (e.g. rotation of a key that has none)."""
    try:
        return Section(call())
    except ClientError as error:
        if _denied(error):
            return Section(denied=True)
        if tolerate_all:
            return Section(unavailable=error.response.get("Error", {}).get("Code", "error"))
        raise


def _now(request: Request) -> datetime:
    """The domain clock (deletion dates are on it), for countdowns."""
    return datetime.fromtimestamp(request.tools.now(), UTC)


def _key_url(key_id: str) -> str:
    return "/console/kms/keys/" + quote(key_id, safe="")


def list_keys(request: Request) -> Page:
    kms = request.client_api.client("kms")
    marker = request.arg("next")
    extra = {"Marker": marker} if marker else {}
    listed = kms.list_keys(Limit=KEYS_PER_PAGE, **extra)
    rows = []
    for entry in listed.get("Keys", []):
        key_id = entry["KeyId"]
        described = _section(partial(kms.describe_key, KeyId=key_id))
        aliases = _section(partial(kms.list_aliases, KeyId=key_id, Limit=ALIASES_PER_KEY))
        rows.append(
            {
                "key_id": key_id,
                "url": _key_url(key_id),
                "meta": described.value["KeyMetadata"] if described.value else None,
                "denied": described.denied,
                "aliases": [a["AliasName"] for a in aliases.value["Aliases"]] if aliases.value else [],
                "more_aliases": bool(aliases.value and aliases.value.get("Truncated")),
            }
        )
    return Page(
        "kms/list.html",
        {
            "title": "KMS keys",
            "rows": rows,
            "next_token": listed.get("NextMarker") if listed.get("Truncated") else None,
            "first": not marker,
            "now": _now(request),
        },
    )


def key_details(request: Request) -> Page:
    key_id = request.params["key_id"]
    kms = request.client_api.client("kms")
    meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
    key_id = meta["KeyId"]
    customer = meta.get("KeyManager") == "CUSTOMER"
    symmetric = meta.get("KeySpec", meta.get("CustomerMasterKeySpec")) == "SYMMETRIC_DEFAULT"
    rotatable = customer and symmetric and meta.get("Origin") == "AWS_KMS"
    if customer and symmetric:
        rotation = _section(lambda: kms.get_key_rotation_status(KeyId=key_id), tolerate_all=True)
    else:
        rotation = Section(unavailable="not applicable")
    grants_marker = request.arg("grants_next")
    grants_extra = {"Marker": grants_marker} if grants_marker else {}
    grants = _section(lambda: kms.list_grants(KeyId=key_id, Limit=GRANTS_PER_PAGE, **grants_extra))
    return Page(
        "kms/key.html",
        {
            "title": f"Key {key_id}",
            "key": meta,
            "key_url": _key_url(key_id),
            "customer": customer,
            "symmetric": symmetric,
            "rotatable": rotatable,
            "rotation": rotation,
            "aliases": _section(lambda: kms.list_aliases(KeyId=key_id, Limit=50)),
            "grants": grants,
            "grants_next": grants.value.get("NextMarker")
            if grants.value and grants.value.get("Truncated")
            else None,
            "grants_first": not grants_marker,
            "policy": _section(lambda: kms.get_key_policy(KeyId=key_id, PolicyName="default")),
            "tags": _section(lambda: kms.list_resource_tags(KeyId=key_id, Limit=TAGS_SHOWN)),
            "now": _now(request),
        },
    )


def enable_key(request: Request) -> Redirect:
    key_id = request.params["key_id"]
    request.client_api.client("kms").enable_key(KeyId=key_id)
    return Redirect(_key_url(key_id), notice="Key enabled.")


def disable_key(request: Request) -> Redirect:
    key_id = request.params["key_id"]
    request.require_confirmation()
    request.client_api.client("kms").disable_key(KeyId=key_id)
    return Redirect(_key_url(key_id), notice="Key disabled: it cannot be used until it is enabled again.")


def schedule_deletion(request: Request) -> Redirect:
    key_id = request.params["key_id"]
    request.require_confirmation()
    raw = request.field("pending_window_days", "30").strip()
    if not _DAYS.match(raw):
        raise BadRequest("The waiting period must be a whole number of days (7 to 30).")
    answer = request.client_api.client("kms").schedule_key_deletion(
        KeyId=key_id, PendingWindowInDays=int(raw)
    )
    when = answer.get("DeletionDate")
    on = f" on {when.astimezone(UTC):%Y-%m-%d %H:%M} UTC" if isinstance(when, datetime) else ""
    return Redirect(_key_url(key_id), notice=f"Key scheduled for deletion{on}; it cannot be used meanwhile.")


def cancel_deletion(request: Request) -> Redirect:
    key_id = request.params["key_id"]
    request.client_api.client("kms").cancel_key_deletion(KeyId=key_id)
    return Redirect(
        _key_url(key_id), notice="Deletion cancelled. The key is disabled: enable it to use it again."
    )


def enable_rotation(request: Request) -> Redirect:
    key_id = request.params["key_id"]
    request.client_api.client("kms").enable_key_rotation(KeyId=key_id)
    return Redirect(_key_url(key_id), notice="Automatic rotation enabled.")


def disable_rotation(request: Request) -> Redirect:
    key_id = request.params["key_id"]
    request.require_confirmation()
    request.client_api.client("kms").disable_key_rotation(KeyId=key_id)
    return Redirect(_key_url(key_id), notice="Automatic rotation disabled.")


def create_form(request: Request) -> Page:
    return Page("kms/create.html", {"title": "Create a KMS key"})


def create_key(request: Request) -> Redirect:
    description = request.field("description", "").strip()
    created = request.client_api.client("kms").create_key(
        Description=description, KeySpec="SYMMETRIC_DEFAULT", KeyUsage="ENCRYPT_DECRYPT"
    )
    key_id = created["KeyMetadata"]["KeyId"]
    return Redirect(_key_url(key_id), notice="Key created.")


ROUTES = [
    Route("GET", "/console/kms", list_keys),
    Route("GET", "/console/kms/create", create_form),
    Route("POST", "/console/kms/create", create_key),
    Route("GET", "/console/kms/keys/{key_id}", key_details),
    Route("POST", "/console/kms/keys/{key_id}/enable", enable_key),
    Route("POST", "/console/kms/keys/{key_id}/disable", disable_key),
    Route("POST", "/console/kms/keys/{key_id}/schedule-deletion", schedule_deletion),
    Route("POST", "/console/kms/keys/{key_id}/cancel-deletion", cancel_deletion),
    Route("POST", "/console/kms/keys/{key_id}/rotation/enable", enable_rotation),
    Route("POST", "/console/kms/keys/{key_id}/rotation/disable", disable_rotation),
]
