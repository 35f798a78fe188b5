"""What a new role session carries over from the session that asks for it (role chaining): its source
identity and its transitive session tags. Pure: the caller and the request's parameters only.

AWS's rules, checked before anything is authorised (they depend only on the caller and the request):

- Tag keys are case-insensitive (case is kept): two tags whose keys differ only in case are refused
  (STS AssumeRole API reference, Tags: "you cannot have separate Department and department tag keys").
- TransitiveTagKeys must name passed tags (AssumeRole, TransitiveTagKeys; AWS answers
  InvalidParameterValue).
- A session inherits the transitive tags of the session that calls AssumeRole, and they stay
  transitive; passing a tag with the same key as an inherited one fails (AssumeRole API reference,
  Tags: "If you pass a session tag with the same key as an inherited tag, the operation fails"; IAM
  User Guide, "Chaining roles with session tags"). AWS answers InvalidParameterValue.
- Once set, the source identity persists to every later session of the chain and cannot be changed
  (IAM User Guide, "Monitor and control actions taken with assumed roles"); passing the same value
  again is allowed, another one fails with ValidationError (HTTP 400).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from khoa.auth.principal import Principal
from khoa.services.sts import errors

CHAIN_KEY = "sts:chain"


@dataclass(frozen=True)
class Lineage:
    """The new session's source identity and tags, and what of them the request itself sets."""

    # Passed in the request (aws:RequestTag/*, aws:TagKeys; sts:TransitiveTagKeys).
    passed_tags: dict[str, str]
    requested_transitive: tuple[str, ...]
    # Inherited from the calling session's transitive tags.
    inherited_tags: dict[str, str]
    # The new session's source identity: passed, or inherited from the calling session.
    source_identity: str | None

    @property
    def tags(self) -> dict[str, str]:
        """Every tag of the new session: the inherited transitive ones and the passed ones."""
        return {**self.inherited_tags, **self.passed_tags}

    @property
    def transitive_keys(self) -> list[str]:
        """The keys the new session passes on in turn: the inherited ones stay transitive."""
        return [*self.inherited_tags, *self.requested_transitive]


def lineage(principal: Principal, params: dict[str, Any]) -> Lineage:
    """The lineage of the session ``params`` (an AssumeRole request) asks ``principal`` for; raises
    AWS's error when the request breaks a rule of the chain."""
    passed = {t["Key"]: t["Value"] for t in params.get("Tags") or []}
    by_lower = {key.lower(): key for key in passed}
    if len(by_lower) < len(params.get("Tags") or []):
        raise errors.duplicate_tag_keys()
    requested: dict[str, str] = {}  # lower-cased key → the key as the request spells it
    for key in params.get("TransitiveTagKeys") or []:
        if key.lower() not in by_lower:
            raise errors.transitive_key_not_passed()
        requested.setdefault(key.lower(), key)
    inherited = inherited_tags(principal)
    if any(key.lower() in by_lower for key in inherited):
        raise errors.transitive_tag_conflict()
    current = principal.source_identity or None
    wanted = params.get("SourceIdentity") or None
    if current is not None and wanted is not None and wanted != current:
        raise errors.source_identity_already_set()
    return Lineage(
        passed_tags=passed,
        requested_transitive=tuple(requested.values()),
        inherited_tags=inherited,
        source_identity=wanted or current,
    )


def inherited_tags(principal: Principal) -> dict[str, str]:
    """The calling session's transitive tags (none for a caller that is not a role session)."""
    if principal.kind != "AssumedRole" or not principal.transitive_tag_keys:
        return {}
    transitive = {key.lower() for key in principal.transitive_tag_keys}
    return {key: value for key, value in principal.session_tags if key.lower() in transitive}
