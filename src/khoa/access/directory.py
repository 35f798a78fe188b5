"""Which policies apply to a caller: inline and attached policies of the user (and its groups) or of
the assumed role, its permissions boundary, session policies, and principal tags; and, for every
account, the service control policies that govern it and its place in an organization.

A role session's managed session policies (AssumeRole ``PolicyArns``) are stored as their ARNs and
resolved here to each policy's current default version, like every other managed policy: narrowing
or deleting one narrows every live session that passed it (:func:`session_policy_text`).

Lookups are cached per process for ``KHOA_POLICY_CACHE_SECONDS`` (default 2), so the hot path does
not query IAM tables. A change made through Khoa's API takes effect at once on the node that made it
(the revocation epoch, khoa.auth.revocation, empties this cache in every worker process); on other
nodes sharing the database within the cache lifetime.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import Engine, select
from sqlalchemy.engine import Connection

from khoa.access import aws_managed
from khoa.access.policy import Policy, PolicyError, deny_all
from khoa.auth.principal import Principal
from khoa.cache import TTLCache
from khoa.storage import schema

_log = logging.getLogger(__name__)
_PRINCIPALS = schema.iam_principals
_INLINE = schema.iam_inline_policies
_ATTACHED = schema.iam_attachments
_MANAGED = schema.iam_managed_policies
_VERSIONS = schema.iam_policy_versions
_MEMBERS = schema.iam_group_members
_TAGS = schema.iam_tags
_ORGS = schema.org_organizations
_ORG_ACCOUNTS = schema.org_accounts
_ORG_POLICIES = schema.org_policies
_ORG_ATTACHMENTS = schema.org_attachments
_ACCOUNTS = schema.accounts
# An IAM user or role ARN in a Principal element: (account, kind, path and name).
_IAM_ENTITY = re.compile(r"^arn:aws:iam::(\d{12}):(user|role)/(.+)$")

ScpLevels = tuple[tuple[Policy, ...], ...]
"""The service control policies that govern an account, one tuple per level of the organization (the
root, then the account): an action must be allowed at every level. Empty: no SCP applies."""

OrgPlace = tuple[str, tuple[str, ...]]
"""Where an account sits in its organization: the organization's ID (``o-…``) and the account's
organization paths (``o-…/r-…/``, then one ``ou-…/`` per organizational unit, which Khoa does not
serve): the values of aws:PrincipalOrgID / aws:PrincipalOrgPaths for its principals and of
aws:ResourceOrgID / aws:ResourceOrgPaths for its resources."""

# The one key of what a session stores when it has managed session policies (see session_policy_text).
# Never a policy document's: the policy grammar refuses every top-level key but Version, Id, Statement.
_SESSION_POLICIES = "KhoaSessionPolicies"
# An IAM managed policy ARN's account ("aws" for AWS managed policies).
_POLICY_ACCOUNT = re.compile(r"^arn:aws:iam::(\d{12}|aws):policy/")


def session_policy_text(inline: str | None, policy_arns: Iterable[str]) -> str | None:
    """What a role session stores of its session policies: the inline ``Policy`` as given when it is
    the only one; with managed session policies (``PolicyArns``), their ARNs and the inline policy, so
    each ARN is resolved to its policy's current default version whenever the session is used (AWS
    packs the ARNs, not the documents, into the session). Sessions issued before hold a policy
    document (the inline one, or it and the managed ones' documents merged): read as before."""
    arns = list(policy_arns)
    if not arns:
        return inline
    return json.dumps({_SESSION_POLICIES: 1, "Policy": inline, "PolicyArns": arns}, separators=(",", ":"))


def _session_parts(text: str) -> tuple[str | None, tuple[str, ...]] | None:
    """The inline policy and the managed policy ARNs :func:`session_policy_text` stored; None when
    ``text`` is a policy document itself (the inline policy, or a session of the older shape)."""
    if _SESSION_POLICIES not in text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or _SESSION_POLICIES not in data:
        return None
    inline, arns = data.get("Policy"), data.get("PolicyArns")
    if not (inline is None or isinstance(inline, str)) or not isinstance(arns, list):
        raise PolicyError("the stored session policies are not readable")
    if not all(isinstance(arn, str) for arn in arns):
        raise PolicyError("the stored session policies are not readable")
    return inline, tuple(arns)


def _union(policies: list[Policy]) -> Policy:
    """Several session policies as one: a session may do what any of them allows (none: nothing)."""
    if len(policies) == 1:
        return policies[0]
    return Policy(tuple(s for p in policies for s in p.statements), "session", "2012-10-17")


@functools.lru_cache(maxsize=4096)
def parsed(document: str, source: str) -> Policy:
    """Parse a stored document once with the one strict parser.

    Every write path refuses documents the parser refuses, so one that does not parse here was written
    by an older version or behind Khoa's back. Reading it as empty would silently drop its Deny
    statements (fail open); it is read as :func:`deny_all` instead, so every request it takes part in
    is explicitly denied until the document is replaced.
    """
    try:
        return Policy.parse(document, source)
    except PolicyError as exc:
        _log.error("stored %s policy does not parse (%s); denying every request it governs", source, exc)
        return deny_all(source)


@functools.lru_cache(maxsize=1024)
def parsed_scp(document: str) -> Policy:
    """A stored service control policy: identity-policy grammar (no principals), read as a deny of
    everything if it no longer parses (fail closed, as :func:`parsed`)."""
    try:
        return dataclasses.replace(Policy.parse(document, "identity"), source="scp")
    except PolicyError as exc:
        _log.error("stored service control policy does not parse (%s); denying every request", exc)
        return deny_all("scp")


@dataclass(frozen=True)
class CallerPolicies:
    identity: list[Policy] = field(default_factory=list)
    boundary: Policy | None = None
    session: list[Policy] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    # The IAM identity's ARN, path included (for a session, its role's ARN: aws:PrincipalArn).
    arn: str = ""


class Directory:
    def __init__(self, engine: Engine, cache_seconds: float) -> None:
        self.engine = engine
        self._cache: TTLCache[str, CallerPolicies] = TTLCache(cache_seconds, max_size=10_000)
        self._scps: TTLCache[str, ScpLevels] = TTLCache(cache_seconds, max_size=10_000)
        self._places: TTLCache[str, OrgPlace | None] = TTLCache(cache_seconds, max_size=10_000)
        # What a caller without IAM policies has: one object, so decisions about it can be memoised
        # (khoa.access.decisions keys on the policies' identity).
        self._no_policies = CallerPolicies()

    def clear(self) -> None:
        """Forget every cached entry, and what reads in flight (on other threads) would store: they
        may have read what a revocation just changed (khoa.cache)."""
        self._cache.clear()
        self._scps.clear()
        self._places.clear()

    def organization_of(self, account_id: str) -> OrgPlace | None:
        """Where ``account_id`` sits in its organization (:data:`OrgPlace`); None when it is in none.
        Cached and emptied with the SCPs (every Organizations write that changes membership bumps the
        revocation epoch)."""
        return self._places.load(account_id, lambda: self._load_place(account_id))

    def _load_place(self, account_id: str) -> OrgPlace | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(_ORGS.c.org_id, _ORGS.c.root_id)
                .join(_ORG_ACCOUNTS, _ORG_ACCOUNTS.c.org_id == _ORGS.c.org_id)
                .where(_ORG_ACCOUNTS.c.account_id == account_id)
            ).first()
        # Khoa serves no organizational units: every account sits directly under the root.
        return None if row is None else (row.org_id, (f"{row.org_id}/{row.root_id}/",))

    def scps_for(self, account_id: str) -> ScpLevels:
        """The SCPs governing ``account_id``'s principals (root user included): none unless the account
        is a member of an organization whose root has SERVICE_CONTROL_POLICY enabled, and none for the
        organization's management account, which SCPs never affect."""
        return self._scps.load(account_id, lambda: self._load_scps(account_id))

    def _load_scps(self, account_id: str) -> ScpLevels:
        with self.engine.connect() as conn:
            org = conn.execute(
                select(_ORGS)
                .join(_ORG_ACCOUNTS, _ORG_ACCOUNTS.c.org_id == _ORGS.c.org_id)
                .where(_ORG_ACCOUNTS.c.account_id == account_id)
            ).first()
            if org is None or not org.scp_enabled or org.management_account_id == account_id:
                return ()
            rows = conn.execute(
                select(_ORG_ATTACHMENTS.c.target_id, _ORG_POLICIES.c.content)
                .join(
                    _ORG_POLICIES,
                    (_ORG_POLICIES.c.org_id == _ORG_ATTACHMENTS.c.org_id)
                    & (_ORG_POLICIES.c.policy_id == _ORG_ATTACHMENTS.c.policy_id),
                )
                .where(_ORG_ATTACHMENTS.c.org_id == org.org_id)
                .where(_ORG_ATTACHMENTS.c.target_id.in_((org.root_id, account_id)))
                .where(_ORG_POLICIES.c.policy_type == "SERVICE_CONTROL_POLICY")
            ).all()
        # A level with nothing attached allows nothing (AWS refuses to leave a target without an SCP).
        root = tuple(parsed_scp(r.content) for r in rows if r.target_id == org.root_id)
        account = tuple(parsed_scp(r.content) for r in rows if r.target_id == account_id)
        return (root, account)

    def missing_principals(self, policy: Policy) -> list[str]:
        """The IAM users and roles ``policy``'s Principal and NotPrincipal elements name in an account
        of this installation that do not exist. AWS refuses to save such a policy: it binds each
        principal it names to the principal's unique ID as it saves it, so a user or role created later
        under that name never inherits it (khoa.access.forgotten keeps that true when one is deleted).
        Principals of accounts this installation does not hold are beyond its knowledge and pass."""
        return self.missing_entities(
            value
            for statement in policy.statements
            for kind, value in (statement.principals or ()) + (statement.not_principals or ())
            if kind == "AWS"
        )

    def missing_entities(self, values: Iterable[str]) -> list[str]:
        """Those of ``values`` that are the ARN of an IAM user or role in an account of this
        installation which does not exist (other values pass: see :meth:`missing_principals`)."""
        named = {value: match.groups() for value in values if (match := _IAM_ENTITY.match(value))}
        if not named:
            return []
        missing = []
        with self.engine.connect() as conn:
            for value, (account_id, kind, rest) in sorted(named.items()):
                held = conn.execute(
                    select(_ACCOUNTS.c.account_id).where(_ACCOUNTS.c.account_id == account_id)
                )
                if held.first() is None:
                    continue
                query = select(_PRINCIPALS.c.principal_id).where(
                    _PRINCIPALS.c.account_id == account_id, _PRINCIPALS.c.kind == kind
                )
                if kind == "user":  # users are named by their ARN (path included), as policies match them
                    query = query.where(_PRINCIPALS.c.arn == value)
                else:  # roles by their name, whatever the path (role names are unique in an account)
                    name = rest.rsplit("/", 1)[-1]
                    query = query.where(_PRINCIPALS.c.name_lower == name.lower(), _PRINCIPALS.c.name == name)
                if conn.execute(query).first() is None:
                    missing.append(value)
        return missing

    def for_principal(self, principal: Principal) -> CallerPolicies:
        if principal.is_root or not principal.principal_id:
            return self._no_policies
        key = f"{principal.principal_id}|{principal.session_policy or ''}|{principal.session_tags}"
        return self._cache.load(key, lambda: self._load(principal))

    def _documents_for(self, conn: Connection, owner_ids: list[str]) -> list[str]:
        documents = list(
            conn.execute(select(_INLINE.c.document).where(_INLINE.c.owner_id.in_(owner_ids))).scalars()
        )
        attached = conn.execute(
            select(_VERSIONS.c.document)
            .join(_MANAGED, _MANAGED.c.arn == _VERSIONS.c.policy_arn)
            .join(_ATTACHED, _ATTACHED.c.policy_arn == _MANAGED.c.arn)
            .where(_ATTACHED.c.owner_id.in_(owner_ids))
            .where(_VERSIONS.c.version_id == _MANAGED.c.default_version)
        ).scalars()
        documents.extend(attached)
        return documents

    def _load(self, principal: Principal) -> CallerPolicies:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(_PRINCIPALS).where(_PRINCIPALS.c.principal_id == principal.principal_id)
            ).first()
            if row is None:
                return self._no_policies
            owners = [row.principal_id]
            if row.kind == "user":
                owners.extend(
                    conn.execute(
                        select(_MEMBERS.c.group_id).where(_MEMBERS.c.user_id == row.principal_id)
                    ).scalars()
                )
            documents = self._documents_for(conn, owners)
            boundary_document = None
            if row.permissions_boundary:
                boundary_document = conn.execute(
                    select(_VERSIONS.c.document)
                    .join(_MANAGED, _MANAGED.c.arn == _VERSIONS.c.policy_arn)
                    .where(_MANAGED.c.arn == row.permissions_boundary)
                    .where(_VERSIONS.c.version_id == _MANAGED.c.default_version)
                ).scalar()
            tags = {
                r[0]: r[1]
                for r in conn.execute(
                    select(_TAGS.c.tag_key, _TAGS.c.tag_value).where(_TAGS.c.owner_id == row.principal_id)
                ).all()
            }
            session = self._session_policies(conn, principal) if principal.session_policy else []
        identity = [parsed(d, "identity") for d in documents]
        boundary = parsed(boundary_document, "boundary") if boundary_document else None
        if row.permissions_boundary and boundary is None:
            boundary = Policy((), "boundary")  # a missing boundary policy allows nothing
        tags.update(dict(principal.session_tags))
        return CallerPolicies(identity=identity, boundary=boundary, session=session, tags=tags, arn=row.arn)

    def _session_policies(self, conn: Connection, principal: Principal) -> list[Policy]:
        """A role session's session policies, as one policy (an action must be allowed by it).

        Each managed session policy is its current default version; one deleted since the session was
        issued allows nothing (fail closed: the rest still allow what they allow, and a session left
        with none allows nothing at all, never everything). Only the role's account's policies and
        AWS managed ones are read (AssumeRole accepts no other)."""
        text = principal.session_policy or ""
        try:
            parts = _session_parts(text)
        except PolicyError as exc:
            _log.error("stored session policies do not parse (%s); denying every request of the session", exc)
            return [deny_all("session")]
        if parts is None:
            return [parsed(text, "session")]
        inline, arns = parts
        policies = [parsed(inline, "session")] if inline else []
        found: dict[str, str] = {}
        customer = [arn for arn in arns if _policy_account(arn) == principal.account_id]
        if customer:
            rows = conn.execute(
                select(_MANAGED.c.arn, _VERSIONS.c.document)
                .join(_VERSIONS, _VERSIONS.c.policy_arn == _MANAGED.c.arn)
                .where(_MANAGED.c.arn.in_(customer))
                .where(_MANAGED.c.account_id == principal.account_id)
                .where(_VERSIONS.c.version_id == _MANAGED.c.default_version)
            ).all()
            found.update((str(arn), str(document)) for arn, document in rows)
        for arn in arns:
            document = found.get(arn)
            if document is None and _policy_account(arn) == aws_managed.ACCOUNT:
                document = aws_managed.document(arn)
            if document is not None:
                policies.append(parsed(document, "session"))
        return [_union(policies)]


def _policy_account(arn: str) -> str | None:
    match = _POLICY_ACCOUNT.match(arn)
    return match.group(1) if match else None


def load_tags(text: str | None) -> dict[str, str]:
    return json.loads(text) if text else {}
