"""AWS's policy evaluation logic.

1. An explicit Deny in any policy that applies (identity-based, resource-based, permissions boundary,
   session) wins.
2. Within one account, an identity-based *or* a resource-based Allow suffices. How far a
   resource-based Allow reaches depends on whom it names: the caller itself (an IAM user's ARN, the
   session's own ``assumed-role`` ARN, or ``*``) is allowed outright, not limited by an implicit deny
   in identity-based policies, a permissions boundary or a session policy; a role's ARN stands in for
   the identity-based allow of that role's sessions, which the boundary and session policies still
   limit; the account (its ID or ``arn:aws:iam::ACCOUNT:root``) only delegates to IAM policies.
3. Across accounts both sides must allow: the resource-based policy must name the caller (directly,
   through its role, or by its account) and the caller's own policies must allow too.
4. KMS key policies and role trust policies are *required*: even within the account they must allow
   the caller, either naming it or delegating to its account, after which IAM policies decide.
5. Permission boundaries and session policies only narrow what identity-based policies allow.

The account root user is not subject to identity-based policies, boundaries or session policies, but
a resource-based Deny applies to it and a key policy must still name its account.

Service control policies (an organization's guardrails, :func:`evaluate_scps`) apply to every
principal of a member account, its root user included, and never to the management account: they
never grant, so they are checked first and can only deny.

The result is a :class:`Decision` that says which kind of policy decided, so errors and the audit
trail can explain it in AWS's words.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from khoa.access.policy import Policy, Statement
from khoa.auth.principal import Principal

IDENTITY = "identity-based"
RESOURCE = "resource-based"
BOUNDARY = "permissions boundary"
SESSION = "session"
TRUST = "role trust"
SCP = "service control policy"

# How AWS's AccessDenied messages name each kind of policy: (implicit deny, explicit deny).
_PHRASES = {
    IDENTITY: ("no identity-based policy", "an identity-based policy"),
    RESOURCE: ("no resource-based policy", "a resource-based policy"),
    BOUNDARY: ("no permissions boundary", "a permissions boundary"),
    SESSION: ("no session policy", "a session policy"),
    TRUST: ("no role trust policy", "the role trust policy"),
    SCP: ("no service control policy", "a service control policy"),
}

# How a resource-based statement names the caller, strongest first.
CALLER = "caller"  # the caller itself (user ARN, session ARN, "*", or the account for its root user)
ROLE = "role"  # the role of an assumed-role session
ACCOUNT = "account"  # the caller's account: delegation to IAM policies


@dataclass(frozen=True)
class Decision:
    allowed: bool
    # Which kind of policy decided: "identity-based", "resource-based", "permissions boundary",
    # "session", "role trust" or "service control policy".
    policy_kind: str = ""
    explicit_deny: bool = False
    deciding_sid: str = ""

    def explain(self, action: str) -> str:
        """The clause AWS appends to AccessDenied messages ("" when allowed)."""
        if self.allowed:
            return ""
        implicit, explicit = _PHRASES.get(
            self.policy_kind, (f"no {self.policy_kind} policy", f"a {self.policy_kind} policy")
        )
        if self.explicit_deny:
            return f"with an explicit deny in {explicit}"
        return f"because {implicit} allows the {action} action"


@dataclass
class Request:
    principal: Principal
    action: str
    resource: str
    resource_account: str
    context: dict[str, list[str]] = field(default_factory=dict)


def _account_names(account_id: str) -> set[str]:
    return {account_id, f"arn:aws:iam::{account_id}:root"}


def _names_role(value: str, principal: Principal) -> bool:
    """Does ``value`` name the role behind an assumed-role session? Role names are unique in an
    account whatever their path, so ``role/NAME`` and ``role/PATH/NAME`` both name role NAME."""
    prefix = f"arn:aws:iam::{principal.account_id}:role/"
    return (
        principal.kind == "AssumedRole"
        and bool(principal.name)
        and value.startswith(prefix)
        and value.rsplit("/", 1)[-1] == principal.name
    )


def _how_named(value: str, principal: Principal) -> str | None:
    """How one ``"AWS"`` principal value names the caller (principal values take no wildcards)."""
    if value == "*":
        return CALLER
    if value in _account_names(principal.account_id):
        return CALLER if principal.is_root else ACCOUNT
    if value == principal.arn:
        return CALLER
    if _names_role(value, principal):
        return ROLE
    return None


_STRENGTH = {CALLER: 3, ROLE: 2, ACCOUNT: 1}


def _strongest(pairs: tuple[tuple[str, str], ...], principal: Principal) -> str | None:
    best: str | None = None
    for kind, value in pairs:
        if kind != "AWS":
            continue  # services, federated and canonical users are never Khoa callers
        how = _how_named(value, principal)
        if how is not None and (best is None or _STRENGTH[how] > _STRENGTH[best]):
            best = how
    return best


def _identities(principal: Principal) -> list[str]:
    """The identities AWS checks a NotPrincipal against: the account, the role, the caller."""
    chain = [principal.account_id]
    if not principal.is_root:
        chain.append(principal.arn)
    return chain


def _excluded(pairs: tuple[tuple[str, str], ...], principal: Principal) -> bool:
    """Whether a NotPrincipal lists every identity of the caller (its account, role and own ARN)."""
    listed = []
    for identity in _identities(principal):
        hit = False
        for kind, value in pairs:
            if kind != "AWS":
                continue
            if value == "*":
                hit = True
            elif identity == principal.account_id:
                hit = hit or value in _account_names(identity)
            else:
                hit = hit or value == identity
        listed.append(hit)
    if principal.kind == "AssumedRole":
        listed.append(any(k == "AWS" and (v == "*" or _names_role(v, principal)) for k, v in pairs))
    return all(listed)


def principal_match(statement: Statement, principal: Principal, *, has_boundary: bool = False) -> str | None:
    """How a resource-policy statement applies to the caller: CALLER, ROLE, ACCOUNT, or None.

    ``NotPrincipal`` with ``Deny`` applies unless the caller's account, role and own ARN are all
    listed (AWS may check each in turn), and always to a principal with a permissions boundary, as
    IAM documents. ``NotPrincipal`` with ``Allow`` is not supported ("NotPrincipal must be used with
    "Effect":"Deny""): every service refuses to store it, and one found in storage anyway applies to
    nobody, so it never grants (fail closed) -- read as "everyone not listed" it would grant every
    principal of every account.
    """
    if statement.principals is not None:
        return _strongest(statement.principals, principal)
    if statement.not_principals is not None:
        if statement.effect != "Deny":
            return None
        every = _excluded(statement.not_principals, principal)
        return CALLER if (has_boundary or not every) else None
    return None


def _matching(policies: list[Policy], request: Request) -> list[Statement]:
    return [
        statement
        for policy in policies
        for statement in policy.statements
        if statement.matches_action(request.action)
        and statement.matches_resource(request.resource, request.context)
        and statement.matches_conditions(request.context)
    ]


def _any_allow(statements: list[Statement]) -> bool:
    return any(s.effect == "Allow" for s in statements)


def evaluate_scps(request: Request, levels: tuple[tuple[Policy, ...], ...]) -> Decision:
    """The organization's guardrail for the caller's account: SCPs never grant, they only limit.

    An explicit Deny in any SCP denies; otherwise each level (the root, then the account) must have an
    SCP statement that allows the action. Allowed here means only "not limited": the caller's own and
    the resource's policies still decide (:func:`evaluate`). No levels: no SCP applies (not in an
    organization, SCPs not enabled, or the management account).
    """
    matches = [_matching(list(level), request) for level in levels]
    for found in matches:
        for statement in found:
            if statement.effect == "Deny":
                return Decision(False, SCP, True, statement.sid)
    for found in matches:
        if not _any_allow(found):
            return Decision(False, SCP)
    return Decision(True)


def evaluate(
    request: Request,
    *,
    identity: list[Policy],
    resource: Policy | None = None,
    boundary: Policy | None = None,
    session: list[Policy] | None = None,
    key_policy: bool = False,
    resource_kind: str = RESOURCE,
    scps: tuple[tuple[Policy, ...], ...] = (),
) -> Decision:
    """Decide one request.

    ``scps`` are the service control policies governing the caller's account, by level
    (:func:`evaluate_scps`): checked first, they can only turn an allow into a deny. ``key_policy``
    marks a resource policy that must allow even within the account (KMS key policies, role trust
    policies); ``resource_kind`` names it in denials ("role trust" for trust policies).
    """
    if scps:
        guardrail = evaluate_scps(request, scps)
        if not guardrail.allowed:
            return guardrail
    principal = request.principal
    same_account = principal.account_id == request.resource_account
    root = principal.is_root
    boundaries = [] if root or boundary is None else [boundary]
    sessions = [] if root else list(session or [])
    resource_matches: list[tuple[Statement, str]] = []
    if resource is not None:
        for statement in _matching([resource], request):
            how = principal_match(statement, principal, has_boundary=bool(boundaries))
            if how is not None:
                resource_matches.append((statement, how))
    identity_matches = _matching(identity, request)
    boundary_matches = _matching(boundaries, request)
    session_matches = [_matching([p], request) for p in sessions]
    # 1. An explicit deny anywhere.
    for kind, matches in (
        (IDENTITY, identity_matches),
        (BOUNDARY, boundary_matches),
        (SESSION, [s for found in session_matches for s in found]),
    ):
        for statement in matches:
            if statement.effect == "Deny":
                return Decision(False, kind, True, statement.sid)
    for statement, _how in resource_matches:
        if statement.effect == "Deny":
            return Decision(False, resource_kind, True, statement.sid)
    # 2. What the resource-based policy grants, and to whom.
    granted = {how for statement, how in resource_matches if statement.effect == "Allow"}
    identity_allow = root or _any_allow(identity_matches)
    if same_account and CALLER in granted:
        return Decision(True)
    if (key_policy or not same_account) and not granted:
        return Decision(False, resource_kind)
    # Within the account, a grant to the session's role stands in for an identity-based allow.
    if not (identity_allow or (same_account and ROLE in granted)):
        return Decision(False, IDENTITY)
    # 3. Boundaries and session policies narrow what was allowed.
    if boundaries and not _any_allow(boundary_matches):
        return Decision(False, BOUNDARY)
    if not all(_any_allow(found) for found in session_matches):
        return Decision(False, SESSION)
    return Decision(True)
