"""AWS's policy evaluation logic.

An explicit Deny anywhere wins. Otherwise, within one account an identity-based *or* a resource-based
Allow suffices; across accounts both sides must allow. KMS key policies are different: the key policy
must allow, either naming the principal or delegating to its account (``arn:aws:iam::ACCOUNT:root``),
after which the account's IAM policies decide. Permission boundaries and session policies only narrow:
an allow must also be inside them. The result is a :class:`Decision` that says which policy decided, so
errors and the audit trail can explain it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from khoa.auth.principal import Principal
from khoa.iam.matching import wildcard_match
from khoa.iam.policy import Policy, Statement


@dataclass(frozen=True)
class Decision:
    allowed: bool
    # Which kind of policy decided: "identity-based", "resource-based", "permissions boundary", "session".
    policy_kind: str = ""
    explicit_deny: bool = False
    deciding_sid: str = ""

    def explain(self, action: str) -> str:
        """The clause AWS appends to AccessDenied messages."""
        if self.explicit_deny:
            return f"with an explicit deny in a {self.policy_kind} policy"
        return f"because no {self.policy_kind} policy allows the {action} action"


@dataclass
class Request:
    principal: Principal
    action: str
    resource: str
    resource_account: str
    context: dict[str, list[str]] = field(default_factory=dict)


def _principal_arns(principal: Principal) -> set[str]:
    """Every ARN under which a resource policy may name this caller."""
    arns = {principal.arn}
    if principal.kind == "AssumedRole":
        arns.add(f"arn:aws:iam::{principal.account_id}:role/{principal.name}")
    return arns


def principal_match(statement: Statement, principal: Principal) -> str | None:
    """How a resource-policy statement names the caller: "direct", "account" (delegation), or None."""

    def classify(pairs: tuple[tuple[str, str], ...]) -> str | None:
        result = None
        for kind, value in pairs:
            if kind != "AWS":
                continue
            if value == "*":
                return "direct"
            if value in (principal.account_id, f"arn:aws:iam::{principal.account_id}:root"):
                result = result or "account"
                if principal.is_root:
                    return "direct"
                continue
            if any(wildcard_match(value, arn) for arn in _principal_arns(principal)):
                return "direct"
        return result

    if statement.principals is not None:
        return classify(statement.principals)
    if statement.not_principals is not None:
        return None if classify(statement.not_principals) else "direct"
    return None


def _statements_for(policies: list[Policy], request: Request) -> list[tuple[Statement, Policy]]:
    found = []
    for policy in policies:
        for statement in policy.statements:
            if (
                statement.matches_action(request.action)
                and statement.matches_resource(request.resource, request.context)
                and statement.matches_conditions(request.context)
            ):
                found.append((statement, policy))
    return found


def _allows(policies: list[Policy], request: Request) -> bool:
    return any(s.effect == "Allow" for s, _ in _statements_for(policies, request))


def evaluate(
    request: Request,
    *,
    identity: list[Policy],
    resource: Policy | None = None,
    boundary: Policy | None = None,
    session: list[Policy] | None = None,
    key_policy: bool = False,
) -> Decision:
    principal = request.principal
    same_account = principal.account_id == request.resource_account
    resource_matches: list[tuple[Statement, str]] = []
    if resource is not None:
        for statement, _ in _statements_for([resource], request):
            how = principal_match(statement, principal)
            if how is not None:
                resource_matches.append((statement, how))
    # 1. Explicit deny anywhere.
    for kind, policies in (
        ("identity-based", identity),
        ("permissions boundary", [boundary] if boundary else []),
        ("session", session or []),
    ):
        for statement, _ in _statements_for(policies, request):
            if statement.effect == "Deny":
                return Decision(False, kind, True, statement.sid)
    for statement, _how in resource_matches:
        if statement.effect == "Deny":
            return Decision(False, "resource-based", True, statement.sid)
    # 2. Allows.
    resource_direct = any(s.effect == "Allow" and how == "direct" for s, how in resource_matches)
    resource_account = any(s.effect == "Allow" and how == "account" for s, how in resource_matches)
    identity_allow = principal.is_root or _allows(identity, request)
    if key_policy:
        if not (resource_direct or resource_account):
            return Decision(False, "resource-based")
        allowed = (resource_direct and same_account) or identity_allow
        if not allowed:
            return Decision(False, "identity-based")
    elif same_account:
        if not (identity_allow or resource_direct):
            return Decision(False, "identity-based")
    else:
        if not (resource_direct or resource_account):
            return Decision(False, "resource-based")
        if not identity_allow:
            return Decision(False, "identity-based")
    # 3. Boundaries and session policies narrow what was allowed.
    if boundary is not None and not _allows([boundary], request):
        return Decision(False, "permissions boundary")
    if session and not all(_allows([p], request) for p in session):
        return Decision(False, "session")
    return Decision(True)
