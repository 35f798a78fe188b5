"""Authorising KMS requests: key policies (required), IAM policies, grants, and KMS condition keys.

Runs before each handler (the service's ``authorizer``), over the service's collaborators (the key
store, and ``kms.authorizer`` for policy evaluation and the caller's IAM identity), never over the
request context's application state. It names the key(s) a request touches exactly as the handler
will (so a missing key still gets the handler's NotFoundException), and evaluates
``kms:<Operation>`` against the key policy with the KMS condition keys AWS defines. Grants are
consulted when policies do not allow (never over an explicit deny): a grant for the caller that lists
the operation, and whose constraint admits the request, allows it.

*How* an operation on a key was allowed is recorded in ``ctx.extras`` (a :class:`Basis`: by policy,
or by which grants), because what the handler may then do depends on it: a CreateGrant allowed only
by grants may create nothing wider than those grants (``grant_rules.child_within``). Handlers that
need the basis ask for it with :func:`basis_for`, which fails closed when the authoriser recorded
none. RetireGrant is authorised by the grant itself (its retiring principal, or its grantee when it
lists RetireGrant) or by ``kms:RetireGrant`` on the key within the key's account; the grant is found
here, from the token or from KeyId and GrantId, and the handler retires exactly the grant authorised.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from khoa.access.authorize import access_denied
from khoa.access.directory import parsed as parsed_policy
from khoa.access.evaluate import SCP, Decision
from khoa.audit.usage import UsageBehind
from khoa.blocking import refuse_on_the_loop
from khoa.crypto import ciphertext
from khoa.protocol.context import RequestContext
from khoa.protocol.errors import AWSError
from khoa.services.kms import errors, grant_rules
from khoa.services.kms.backend import KmsBackend
from khoa.services.kms.resolve import alias_arn, alias_target, resolve_key
from khoa.services.kms.store import KeyRecord

_ALIAS_OPERATIONS = ("CreateAlias", "UpdateAlias", "DeleteAlias")
_SYMMETRIC_DEFAULT = "SYMMETRIC_DEFAULT"
# Algorithm parameters a request names itself (each required by its operations when they apply).
_ALGORITHM_PARAMS = {
    "SigningAlgorithm": "kms:signingalgorithm",
    "MacAlgorithm": "kms:macalgorithm",
    "KeyAgreementAlgorithm": "kms:keyagreementalgorithm",
}
# kms:EncryptionAlgorithm, by action: the parameter it is read from, SYMMETRIC_DEFAULT when omitted
# (its default). The data key operations name no algorithm: they always use SYMMETRIC_DEFAULT ("").
_ENCRYPTION_ALGORITHM = {
    "Encrypt": "EncryptionAlgorithm",
    "Decrypt": "EncryptionAlgorithm",
    "ReEncryptFrom": "SourceEncryptionAlgorithm",
    "ReEncryptTo": "DestinationEncryptionAlgorithm",
    "GenerateDataKey": "",
    "GenerateDataKeyWithoutPlaintext": "",
    "GenerateDataKeyPair": "",
    "GenerateDataKeyPairWithoutPlaintext": "",
}
# The parameter naming the key (kms:RequestAlias), by action; KeyId for every other one.
_KEY_REFERENCE = {"ReEncryptFrom": "SourceKeyId", "ReEncryptTo": "DestinationKeyId"}
# Request parameters read as they are sent, only when sent (kms:BypassPolicyLockoutSafetyCheck and
# kms:ExpirationModel too: AWS documents allowing a request only when it omits them with Null).
_REQUEST_PARAMS = {
    "CreateKey": {"BypassPolicyLockoutSafetyCheck": "kms:bypasspolicylockoutsafetycheck"},
    "PutKeyPolicy": {"BypassPolicyLockoutSafetyCheck": "kms:bypasspolicylockoutsafetycheck"},
    "GenerateDataKeyPair": {"KeyPairSpec": "kms:datakeypairspec"},
    "GenerateDataKeyPairWithoutPlaintext": {"KeyPairSpec": "kms:datakeypairspec"},
    "GetParametersForImport": {
        "WrappingAlgorithm": "kms:wrappingalgorithm",
        "WrappingKeySpec": "kms:wrappingkeyspec",
    },
    "ImportKeyMaterial": {"ExpirationModel": "kms:expirationmodel"},
}
# AWS's defaults of parameters its condition keys read even when a request omits them.
DEFAULT_ROTATION_PERIOD_DAYS = 365  # EnableKeyRotation's RotationPeriodInDays
DEFAULT_PENDING_WINDOW_DAYS = 30  # ScheduleKeyDeletion's PendingWindowInDays
_DAY = 86400.0
# Facts of the key that cost a read (its tags, aliases and last use), and the text naming each in a
# (decoded, lower-cased) condition key or policy variable that may ask for it.
_TAGS, _ALIASES, _LAST_USE = "resourcetag", "resourcealiases", "trailingdayswithoutkeyusage"
_COSTLY = frozenset((_TAGS, _ALIASES, _LAST_USE))


@functools.lru_cache(maxsize=4096)
def _policy_asks(policy: str) -> frozenset[str]:
    """Which of the costly facts (_TAGS, _ALIASES, _LAST_USE) a key policy may ask for, asked once per
    policy text (immutable).

    Read from the policy as evaluation reads it (parsed, from the same cache), never from its stored
    text: a JSON escape (``"aws:Resource\\u0054ag/x"``) spells the same condition key in other
    characters, and a search of the text would miss it and leave a Deny on it without its fact. A fact
    is asked for when a condition key, or a condition value or Resource/NotResource entry (where a
    policy variable such as ``${aws:ResourceTag/x}`` reads it), names it once lower-cased as condition
    keys are looked up. Anything else than a condition block of the parsed grammar asks for all."""
    names: list[str] = []
    for statement in parsed_policy(policy, "resource").statements:
        names.extend(statement.resources + statement.not_resources)
        for entries in statement.condition.values():
            if not isinstance(entries, dict):
                return _COSTLY  # not the parser's grammar: fail closed
            for key, values in entries.items():
                names.append(str(key))
                names.extend(str(value) for value in (values if isinstance(values, list) else [values]))
    lowered = [name.lower() for name in names]
    return frozenset(fact for fact in _COSTLY if any(fact in name for name in lowered))


def _facts_wanted(kms: KmsBackend, ctx: RequestContext, key: KeyRecord) -> frozenset[str]:
    """The costly facts of ``key`` this request's policies may ask for: all of them but for the
    account root of an account no SCPs govern, whose only policy is the key policy (the hot path).
    SCPs govern a member account's root user too (``Authorizer.decide``), so then all of them."""
    principal = ctx.principal
    if principal.is_root and not kms.authorizer.guardrails(principal.account_id):
        return _policy_asks(key.policy)
    return _COSTLY


def _text(value: Any) -> str:
    """A request parameter as a condition value (booleans as IAM writes them)."""
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _epoch(value: Any) -> str:
    """A timestamp parameter as AWS compares it: Unix time, seconds (Numeric and Date operators)."""
    seconds = value.timestamp() if isinstance(value, datetime) else float(value)
    return str(int(seconds)) if seconds == int(seconds) else repr(seconds)


def _days_without_use(kms: KmsBackend, ctx: RequestContext, key: KeyRecord) -> str:
    """kms:TrailingDaysWithoutKeyUsage: whole days since the key's last cryptographic use, or since
    its creation (where tracking starts) when it was never used."""
    try:
        last = kms.store.usage.key_last_use(key.arn, key.created_at)
    except UsageBehind:
        return "0"  # uses not counted yet: judged as used now, the safer side
    since = key.created_at if last is None else last.event_time
    return str(max(0, int((ctx.now.timestamp() - since) // _DAY)))


def _key_facts(
    kms: KmsBackend,
    ctx: RequestContext,
    operation: str,
    key: KeyRecord,
    params: dict[str, Any],
    context: dict[str, list[str]],
) -> None:
    """The condition keys of the key the request is authorised for (a KMS key resource operation)."""
    context["kms:keyspec"] = context["kms:customermasterkeyspec"] = [key.key_spec]
    context["kms:keyusage"] = context["kms:customermasterkeyusage"] = [key.key_usage]
    context["kms:keyorigin"] = [key.origin]
    context["kms:multiregion"] = ["false"]
    wanted = _facts_wanted(kms, ctx, key)
    if _TAGS in wanted:
        for tag_key, tag_value in kms.store.tags.of(key.key_id).items():
            # Keys differing only in case (refused now, perhaps stored before) share one condition key.
            context.setdefault(f"aws:resourcetag/{tag_key.lower()}", []).append(tag_value)
    if _ALIASES in wanted:
        aliases = kms.store.aliases.names_of(key.key_id)
        if aliases:
            context["kms:resourcealiases"] = list(aliases)
    if operation == "EnableKeyRotation":
        # The period the handler applies: the request's, else the key's own, else AWS's default.
        period = params.get("RotationPeriodInDays", key.rotation_period_days or DEFAULT_ROTATION_PERIOD_DAYS)
        context["kms:rotationperiodindays"] = [_text(period)]
    elif operation == "ScheduleKeyDeletion":
        window = params.get("PendingWindowInDays", DEFAULT_PENDING_WINDOW_DAYS)
        context["kms:schedulekeydeletionpendingwindowindays"] = [_text(window)]
    if operation in ("DisableKey", "ScheduleKeyDeletion") and _LAST_USE in wanted:
        context["kms:trailingdayswithoutkeyusage"] = [_days_without_use(kms, ctx, key)]


def _new_key_facts(params: dict[str, Any], context: dict[str, list[str]]) -> None:
    """CreateKey: the properties of the key it would make, AWS's defaults for those it omits."""
    spec = params.get("KeySpec") or params.get("CustomerMasterKeySpec") or _SYMMETRIC_DEFAULT
    usage = params.get("KeyUsage") or "ENCRYPT_DECRYPT"
    context["kms:keyspec"] = context["kms:customermasterkeyspec"] = [_text(spec)]
    context["kms:keyusage"] = context["kms:customermasterkeyusage"] = [_text(usage)]
    context["kms:keyorigin"] = [_text(params.get("Origin") or "AWS_KMS")]
    context["kms:multiregion"] = [_text(bool(params.get("MultiRegion", False)))]


def request_context(
    kms: KmsBackend,
    ctx: RequestContext,
    params: dict[str, Any],
    key: KeyRecord | None,
    encryption_context: dict[str, str] | None = None,
    *,
    action: str | None = None,
    extra: dict[str, list[str]] | None = None,
) -> dict[str, list[str]]:
    """The KMS condition keys of ``action`` (``kms:<the request's operation>`` unless given) on
    ``key`` (None: an operation on no key), from the request's ``params``, with ``extra`` ones the
    caller knows (kms:ReEncryptOnSameKey). A parameter AWS gives a default has its condition key even
    when the request omits it, with that default."""
    operation = action.split(":", 1)[1] if action else ctx.operation
    context: dict[str, list[str]] = {"kms:calleraccount": [ctx.account_id]}
    if key is not None:
        _key_facts(kms, ctx, operation, key, params, context)
    elif operation == "CreateKey":
        _new_key_facts(params, context)
    if operation in _ENCRYPTION_ALGORITHM:
        name = _ENCRYPTION_ALGORITHM[operation]
        algorithm = params.get(name) if name else None
        context["kms:encryptionalgorithm"] = [_text(algorithm or _SYMMETRIC_DEFAULT)]
    for name, key_name in _ALGORITHM_PARAMS.items():
        if name in params:
            context[key_name] = [_text(params[name])]
    for name, key_name in _REQUEST_PARAMS.get(operation, {}).items():
        if params.get(name) is not None:
            context[key_name] = [_text(params[name])]
    if operation in ("Sign", "Verify"):
        context["kms:messagetype"] = [_text(params.get("MessageType") or "RAW")]
    if operation == "ImportKeyMaterial" and params.get("ValidTo") is not None:
        context["kms:validto"] = [_epoch(params["ValidTo"])]
    reference = params.get(_KEY_REFERENCE.get(operation, "KeyId"))
    if isinstance(reference, str) and "alias/" in reference:
        context["kms:requestalias"] = [reference[reference.index("alias/") :]]
    encryption_context = (
        encryption_context if encryption_context is not None else params.get("EncryptionContext")
    )
    if encryption_context:
        context["kms:encryptioncontextkeys"] = list(encryption_context)
        for ec_key, ec_value in encryption_context.items():
            # Context keys are case-sensitive, condition key names are not: keys differing only in case
            # ("app", "APP") share one condition key with both values, so a Deny checks each of them.
            context.setdefault(f"kms:encryptioncontext:{ec_key.lower()}", []).append(ec_value)
    tags = params.get("Tags")
    if isinstance(tags, list) and tags and isinstance(tags[0], dict) and "TagKey" in tags[0]:
        context["aws:tagkeys"] = [t["TagKey"] for t in tags]
        # The value each key is stored with (a repeated key keeps its last); keys differing only in case
        # (which validate_tags refuses) keep every value, so none is silently left unchecked.
        for tag_key, tag_value in {t["TagKey"]: t.get("TagValue", "") for t in tags}.items():
            context.setdefault(f"aws:requesttag/{tag_key.lower()}", []).append(tag_value)
    tag_keys = params.get("TagKeys")
    if operation == "UntagResource" and isinstance(tag_keys, list) and tag_keys:
        context["aws:tagkeys"] = [str(t) for t in tag_keys]
    if operation == "CreateGrant":
        context["kms:grantoperations"] = list(params.get("Operations", []))
        if params.get("GranteePrincipal"):
            context["kms:granteeprincipal"] = [params["GranteePrincipal"]]
        if params.get("RetiringPrincipal"):
            context["kms:retiringprincipal"] = [params["RetiringPrincipal"]]
        for name in ("GranteeServicePrincipal", "RetiringServicePrincipal"):
            if params.get(name):
                context[f"kms:{name.lower()}"] = [params[name]]
        constraints = params.get("Constraints") or {}
        types = [t for t in ("EncryptionContextEquals", "EncryptionContextSubset") if t in constraints]
        if types:
            context["kms:grantconstrainttype"] = types
        if constraints.get("SourceArn"):
            context["kms:grantconstraintsourcearn"] = [constraints["SourceArn"]]
    if operation in ("CreateGrant", "ListGrants", "RevokeGrant"):
        # Khoa's callers are never an AWS service creating grants for its resources.
        context["kms:grantisforawsresource"] = ["false"]
    if extra:
        context.update(extra)
    return context


_BASIS = "kms:authorized"
_RETIREMENT = "kms:retirement"
_ACCOUNT_ROOT = re.compile(r"^arn:aws:iam::(\d{12}):root$")
_PRINCIPAL_ACCOUNT = re.compile(r"^arn:aws[a-z-]*:(?:iam|sts)::(\d{12}):")


@dataclass(frozen=True)
class GrantRecord:
    """One stored grant, as authorisation reads it."""

    grant_id: str
    key_id: str
    grantee: str
    retiring: str | None
    operations: frozenset[str]
    constraint: grant_rules.Constraint

    @classmethod
    def from_row(cls, row: Any) -> GrantRecord:
        operations, constraint = _parsed_grant(row.operations, row.constraints)
        return cls(
            row.grant_id, row.key_id, row.grantee_principal, row.retiring_principal, operations, constraint
        )


# Stored constraints up to this long are parsed once per process (a grant's operations and
# constraints never change); longer ones (stored before CreateGrant bounded them) every time.
_CACHED_CONSTRAINT_CHARS = 8192


def _parsed_grant(operations: Any, constraints: Any) -> tuple[frozenset[str], grant_rules.Constraint]:
    cacheable = constraints is None or (
        isinstance(constraints, str) and len(constraints) <= _CACHED_CONSTRAINT_CHARS
    )
    if isinstance(operations, str) and cacheable:
        return _parse_grant(operations, constraints)
    return _parse_grant.__wrapped__(operations, constraints)


@functools.lru_cache(maxsize=2048)
def _parse_grant(operations: Any, constraints: Any) -> tuple[frozenset[str], grant_rules.Constraint]:
    """A stored grant's operations and constraint, as CreateGrant wrote them. Whatever cannot be read
    as written by CreateGrant allows nothing (fail closed)."""
    try:
        listed = json.loads(operations)
        stored = json.loads(constraints) if constraints else None
    except (TypeError, ValueError):
        return frozenset(), grant_rules.UNREADABLE
    if not (isinstance(listed, list) and all(isinstance(op, str) for op in listed)):
        return frozenset(), grant_rules.UNREADABLE
    if not isinstance(stored, dict | None):
        return frozenset(listed), grant_rules.UNREADABLE
    return frozenset(listed), grant_rules.parse_constraint(stored)


class Basis(NamedTuple):
    """How an action on a key was allowed: by policy (``grants`` empty), or only by these grants."""

    action: str
    key_id: str
    by_policy: bool
    grants: tuple[GrantRecord, ...]
    decision: Decision  # the policy decision (its explanation words AccessDenied messages)


def caller_names(kms: KmsBackend, ctx: RequestContext) -> set[str]:
    """The principal values that name the caller in a grant (as grantee or retiring principal).

    The caller's own ARN; for a role session also its role, by the role's ARN with its path and by
    ``role/NAME`` (role names are unique in an account whatever the path). An account's root ARN
    names only the account's root user: a grant to an account is not a grant to its IAM identities.
    """
    principal = ctx.principal
    names = {principal.arn}
    if principal.kind == "AssumedRole" and principal.name:
        names.add(f"arn:aws:iam::{principal.account_id}:role/{principal.name}")
        role_arn = kms.authorizer.directory.for_principal(principal).arn
        if role_arn:
            names.add(role_arn)
    return names


# How many of a caller's grants on a key authorisation reads on the event loop. A caller holding more
# that may allow the operation is decided on a request thread instead (khoa.blocking: the call, a
# read, runs again from the start there), so however many grants a tenant creates (up to 50,000 per
# key) no other request waits for them to be read.
GRANTS_READ_ON_THE_LOOP = 100


def _allowing_grants(
    kms: KmsBackend,
    ctx: RequestContext,
    key: KeyRecord,
    operation: str,
    encryption_context: dict[str, str] | None,
) -> tuple[GrantRecord, ...]:
    """The caller's grants on ``key`` that allow ``operation`` with this encryption context: for
    CreateGrant all of them (``check_child_grant`` weighs them together), for any other operation
    the first found (one is enough). Only operations a grant can list are ever allowed by one (never
    ListGrants, RevokeGrant, ...)."""
    if operation not in grant_rules.GRANTABLE_OPERATIONS:
        return ()
    admits = grant_rules.admitter(operation, encryption_context)

    def allowing(rows: list[Any]) -> list[GrantRecord]:
        found = []
        for row in rows:
            grant = GrantRecord.from_row(row)
            if operation in grant.operations and admits(grant.constraint):
                if operation != "CreateGrant":
                    return [grant]
                found.append(grant)
        return found

    names = sorted(caller_names(kms, ctx))
    grants = kms.store.grants
    rows = grants.held_by(key.key_id, names, operation, limit=GRANTS_READ_ON_THE_LOOP + 1)
    if len(rows) > GRANTS_READ_ON_THE_LOOP:
        if operation != "CreateGrant":
            first = allowing(rows[:GRANTS_READ_ON_THE_LOOP])
            if first:
                return tuple(first)
        refuse_on_the_loop("a caller's grants on a key")
        rows = grants.held_by(key.key_id, names, operation)
    return tuple(allowing(rows))


def _record(ctx: RequestContext, basis: Basis) -> None:
    ctx.extras.setdefault(_BASIS, {})[(basis.action, basis.key_id)] = basis


def basis_for(ctx: RequestContext, action: str, key: KeyRecord) -> Basis:
    """How the authoriser allowed ``action`` on ``key`` for this request; AccessDenied (fail closed)
    when it recorded nothing, so a handler can never act on an authorisation that did not happen."""
    basis = ctx.extras.get(_BASIS, {}).get((action, key.key_id))
    if not isinstance(basis, Basis):
        raise access_denied(ctx, action, key.arn, Decision(False, "resource-based"))
    return basis


def _decide_on_key(
    kms: KmsBackend,
    ctx: RequestContext,
    action: str,
    key: KeyRecord,
    context: Callable[[], dict[str, list[str]]],
) -> Decision:
    """``action`` on ``key`` by its key policy (required, as every KMS key policy is) and IAM policies;
    the KMS condition keys are built only if policies must really be evaluated."""
    return kms.authorizer.decide(
        ctx,
        action,
        key.arn,
        resource_account=key.account_id,
        resource_policy=key.policy,
        key_policy=True,
        context=context,
    )


def authorize_key(
    kms: KmsBackend,
    ctx: RequestContext,
    action: str,
    key: KeyRecord,
    params: dict[str, Any],
    encryption_context: dict[str, str] | None = None,
    *,
    extra: dict[str, list[str]] | None = None,
) -> Basis:
    """Authorise ``action`` on ``key`` (policies, then the caller's grants); the :class:`Basis` is
    also recorded for the handler. ``extra``: condition keys only the caller knows."""
    decision = _decide_on_key(
        kms,
        ctx,
        action,
        key,
        lambda: request_context(kms, ctx, params, key, encryption_context, action=action, extra=extra),
    )
    if decision.allowed:
        basis = Basis(action, key.key_id, True, (), decision)
        _record(ctx, basis)
        return basis
    operation = action.split(":", 1)[1]
    # A grant never rescues an explicit deny, nor what the organization's SCPs do not allow.
    if not decision.explicit_deny and decision.policy_kind != SCP:
        allowing = _allowing_grants(
            kms, ctx, key, operation, encryption_context or params.get("EncryptionContext")
        )
        if allowing:
            basis = Basis(action, key.key_id, False, allowing, decision)
            _record(ctx, basis)
            return basis
    raise access_denied(ctx, action, key.arn, decision)


def check_child_grant(
    ctx: RequestContext, key: KeyRecord, operations: list[str], constraints: dict[str, Any] | None
) -> None:
    """CreateGrant's bound: allowed by policy, any grant; allowed only by grants, nothing wider than
    those grants (their operations, constraints at least as strict). AccessDenied otherwise."""
    basis = basis_for(ctx, "kms:CreateGrant", key)
    if basis.by_policy:
        return
    parents = [grant_rules.Parent(g.operations, g.constraint) for g in basis.grants]
    if not grant_rules.child_within(operations, grant_rules.parse_constraint(constraints), parents):
        raise access_denied(ctx, "kms:CreateGrant", key.arn, basis.decision)


# -- RetireGrant and ListRetirableGrants ---------------------------------------------------------------


def _principal_account(principal: str) -> str | None:
    match = _PRINCIPAL_ACCOUNT.match(principal)
    if match:
        return match.group(1)
    return principal if principal.isdigit() and len(principal) == 12 else None


def _may_retire(
    kms: KmsBackend, ctx: RequestContext, key: KeyRecord, grant: GrantRecord | None
) -> tuple[bool, Decision]:
    """AWS's RetireGrant rule: an explicit deny of kms:RetireGrant always wins; otherwise the grant's
    retiring principal, its grantee when the grant lists RetireGrant, a principal of an account named
    as retiring principal whose IAM policies allow kms:RetireGrant, or, in the key's account, a
    principal allowed kms:RetireGrant on the key (key policy and IAM policies, as for any key action)."""
    action = "kms:RetireGrant"
    decision = _decide_on_key(kms, ctx, action, key, lambda: request_context(kms, ctx, {}, key))
    if decision.explicit_deny or decision.policy_kind == SCP:
        return False, decision
    if decision.allowed and ctx.account_id == key.account_id:
        return True, decision
    if grant is None:
        return False, decision
    names = caller_names(kms, ctx)
    if grant.retiring in names or (grant.grantee in names and "RetireGrant" in grant.operations):
        return True, decision
    retiring_account = _ACCOUNT_ROOT.match(grant.retiring or "")
    if retiring_account and retiring_account.group(1) == ctx.account_id:
        # The retiring account delegates to its IAM principals with kms:RetireGrant in IAM policies.
        own = kms.authorizer.decide(ctx, action, key.arn, resource_account=ctx.account_id)
        if own.allowed:
            return True, decision
    return False, decision


def _authorize_retire(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> None:
    action = "kms:RetireGrant"
    token = params.get("GrantToken")
    if token:
        grant_id = grant_rules.grant_id_from_token(token)
        row = kms.store.grants.find(grant_id)
        key = kms.store.keys.by_blob(ctx.region, row.key_id) if row is not None else None
        if row is None or key is None:
            raise errors.not_found(f"Grant ID {grant_id} not found")
        allowed, decision = _may_retire(kms, ctx, key, GrantRecord.from_row(row))
        if not allowed:
            if key.account_id != ctx.account_id:
                # Someone else's grant, and the caller has no part in it: as if it did not exist.
                raise errors.not_found(f"Grant ID {grant_id} not found")
            raise access_denied(ctx, action, key.arn, decision)
        ctx.extras[_RETIREMENT] = (key.key_id, grant_id)
        return
    if not (params.get("KeyId") and params.get("GrantId")):
        return  # the handler answers ValidationException and retires nothing
    key = _key_or_none(kms, ctx, params["KeyId"], allow_alias=False)
    if key is None:
        return  # the handler answers NotFoundException
    row = kms.store.grants.find(params["GrantId"], key.key_id)
    allowed, decision = _may_retire(kms, ctx, key, GrantRecord.from_row(row) if row is not None else None)
    if not allowed:
        raise access_denied(ctx, action, key.arn, decision)
    ctx.extras[_RETIREMENT] = (key.key_id, params["GrantId"])


def authorized_retirement(ctx: RequestContext) -> tuple[str, str]:
    """(key id, grant id) the authoriser allowed this RetireGrant to retire; fails closed."""
    found = ctx.extras.get(_RETIREMENT)
    if not (isinstance(found, tuple) and len(found) == 2):
        raise access_denied(ctx, "kms:RetireGrant", "*", Decision(False, "resource-based"))
    return found


def retirable_scope(ctx: RequestContext, retiring_principal: str) -> bool:
    """May ListRetirableGrants show grants on other accounts' keys for this retiring principal?
    Only when the principal is in the caller's account (AWS: "specify a principal in your account")."""
    return _principal_account(retiring_principal) == ctx.account_id


def _authorize_list_retirable(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> None:
    """AWS authorises ListRetirableGrants with the caller's IAM policies, the resource being the
    retiring principal; a principal of another account is outside the caller's reach."""
    action = "kms:ListRetirableGrants"
    principal = params.get("RetiringPrincipal")
    if not principal:
        if params.get("RetiringServicePrincipal"):
            # "The RetiringServicePrincipal filter is only usable by callers in a service principal."
            raise access_denied(ctx, action, "*", Decision(False, "identity-based"))
        _authorize_unscoped(kms, ctx, action, "*", params)
        return
    account = _principal_account(principal) or ctx.account_id
    decision = kms.authorizer.decide(
        ctx, action, principal, resource_account=account, context=request_context(kms, ctx, params, None)
    )
    if not decision.allowed:
        raise access_denied(ctx, action, principal, decision)


def _authorize_unscoped(
    kms: KmsBackend, ctx: RequestContext, action: str, resource: str, params: dict[str, Any]
) -> None:
    decision: Decision = kms.authorizer.decide(
        ctx, action, resource, context=request_context(kms, ctx, params, None)
    )
    if not decision.allowed:
        raise access_denied(ctx, action, resource, decision)


def _key_or_none(
    kms: KmsBackend, ctx: RequestContext, ref: str, *, allow_alias: bool = True
) -> KeyRecord | None:
    try:
        return resolve_key(kms, ctx, ref, allow_alias=allow_alias)
    except AWSError:
        return None  # the handler reports the missing key with the right error


def _blob_key(kms: KmsBackend, ctx: RequestContext, blob: bytes) -> KeyRecord | None:
    try:
        parsed = ciphertext.parse(blob)
    except ciphertext.InvalidCiphertext:
        return None
    return kms.store.keys.by_blob(ctx.region, parsed.key_id)


def authorize_request(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    _authorize_request(kms, ctx, params)
    return {}


def _authorize_request(kms: KmsBackend, ctx: RequestContext, params: dict[str, Any]) -> None:
    operation = ctx.operation
    action = f"kms:{operation}"
    if operation == "RetireGrant":
        _authorize_retire(kms, ctx, params)
        return
    if operation == "ListRetirableGrants":
        _authorize_list_retirable(kms, ctx, params)
        return
    if operation in _ALIAS_OPERATIONS:
        name = params.get("AliasName", "")
        _authorize_unscoped(kms, ctx, action, alias_arn(ctx, name), params)
        targets = []
        if operation != "CreateAlias":
            current = alias_target(kms, ctx, name)
            if current is not None:
                targets.append(current)
        if "TargetKeyId" in params:
            target = _key_or_none(kms, ctx, params["TargetKeyId"], allow_alias=False)
            if target is not None:
                targets.append(target.key_id)
        for key_id in dict.fromkeys(targets):
            key = kms.store.keys.get(ctx.account_id, ctx.region, key_id)
            if key is not None:
                authorize_key(kms, ctx, action, key, params)
        return
    if operation == "ReEncrypt":
        source = (
            _key_or_none(kms, ctx, params["SourceKeyId"])
            if params.get("SourceKeyId")
            else _blob_key(kms, ctx, params.get("CiphertextBlob", b""))
        )
        destination = _key_or_none(kms, ctx, params.get("DestinationKeyId", ""))
        same = None
        if source is not None and destination is not None:
            same = {"kms:reencryptonsamekey": ["true" if source.key_id == destination.key_id else "false"]}
        if source is not None:
            authorize_key(
                kms,
                ctx,
                "kms:ReEncryptFrom",
                source,
                params,
                params.get("SourceEncryptionContext"),
                extra=same,
            )
        if destination is not None:
            authorize_key(
                kms,
                ctx,
                "kms:ReEncryptTo",
                destination,
                params,
                params.get("DestinationEncryptionContext"),
                extra=same,
            )
        return
    if operation == "Decrypt" and not params.get("KeyId"):
        key = _blob_key(kms, ctx, params.get("CiphertextBlob", b""))
        if key is not None:
            authorize_key(kms, ctx, action, key, params)
        return
    reference = params.get("KeyId")
    if not reference:
        _authorize_unscoped(kms, ctx, action, "*", params)
        return
    key = _key_or_none(kms, ctx, reference)
    if key is not None:
        authorize_key(kms, ctx, action, key, params)
