"""The one entry point services call to authorise an action on a resource.

Builds the request context (global condition keys plus the service's own), gathers the caller's
policies, evaluates them with the resource's policy, and raises the service's AccessDenied error with
AWS's message ("User: ARN is not authorized to perform: ACTION on resource: ARN because ...").
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from khoa.access.decisions import DecisionMemo
from khoa.access.directory import CallerPolicies, Directory, OrgPlace, ScpLevels, parsed
from khoa.access.evaluate import RESOURCE, TRUST, Decision, Request, evaluate
from khoa.access.policy import Policy
from khoa.auth.principal import Principal
from khoa.protocol.context import RequestContext
from khoa.protocol.errors import AWSError

_QUERY_SERVICES = ("iam", "sts")
# aws:PrincipalType as IAM reports it, by CloudTrail identity type.
_PRINCIPAL_TYPES = {"Root": "Account", "IAMUser": "User", "AssumedRole": "AssumedRole"}
# Actions a role trust policy must allow, even within the role's account.
_TRUST_ACTIONS = frozenset(
    {
        "sts:assumerole",
        "sts:assumerolewithsaml",
        "sts:assumerolewithwebidentity",
        "sts:tagsession",
        "sts:setsourceidentity",
        "sts:setcontext",
    }
)


# Where a request's context notes the accounts, other than the caller's, whose resources it was
# authorised on (a set): CloudTrail records such a call in each owner's trail too (khoa.server.recording).
RESOURCE_OWNERS = "khoa:resource-owners"


def _no_scps(account_id: str) -> ScpLevels:
    return ()


def _no_organization(account_id: str) -> OrgPlace | None:
    return None


@functools.lru_cache(maxsize=8)
def _clock_facts(second: int) -> tuple[str, str]:
    """aws:CurrentTime and aws:EpochTime of one second (formatted once, not per request)."""
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), str(second)


def request_facts(ctx: RequestContext) -> tuple[Any, ...]:
    """Every value of the request the global condition keys are made from, but its caller: the
    second of its clock, Region, transport, address, network and calling service. The memo of
    decisions keys on this tuple, and :func:`facts_of` builds the facts from it, the caller, the
    resource's account and both accounts' places in their organizations alone (all of them in the
    key), so whatever a fact is made of is part of the key by construction."""
    extras = ctx.extras
    network = extras.get("network")
    return (
        int(ctx.now.timestamp()),
        ctx.region,
        bool(extras.get("secure_transport")),
        ctx.source_ip,
        (network.get("vpc_source_ip") or None) if network else None,
        (network.get("vpc_id") or None) if network else None,
        extras.get("kms:ViaService") or None,
    )


@functools.lru_cache(maxsize=1024)
def _issue_time(second: int) -> str:
    """aws:TokenIssueTime of a session issued in ``second`` (epoch): ISO 8601 in UTC to the second, as
    AWS writes dates (and as the revocation policy's cutoff is written)."""
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def facts_of(
    principal: Principal,
    request: tuple[Any, ...],
    resource_account: str | None,
    principal_org: OrgPlace | None = None,
    resource_org: OrgPlace | None = None,
) -> dict[str, list[str]]:
    """The global condition keys of a call by ``principal`` with :func:`request_facts` ``request`` on
    a resource of ``resource_account`` (None: not known, no aws:ResourceAccount), whose accounts sit
    in organizations at ``principal_org`` and ``resource_org`` (None: in none, or not known: no
    aws:PrincipalOrgID/Paths, aws:ResourceOrgID/Paths). Every value comes from these, which the memo
    of decisions keys on (the whole Principal, the request's facts, the resource's account and both
    accounts' places)."""
    second, region, secure, source_ip, vpc_source_ip, vpc_id, via = request
    current_time, epoch_time = _clock_facts(second)
    principal_arn = principal.arn
    if principal.kind == "AssumedRole":
        principal_arn = f"arn:aws:iam::{principal.account_id}:role/{principal.name}"
    context: dict[str, list[str]] = {
        "aws:principalarn": [principal_arn],
        "aws:principalaccount": [principal.account_id],
        "aws:principaltype": [_PRINCIPAL_TYPES.get(principal.kind, principal.kind)],
        "aws:principalisawsservice": ["false"],
        "aws:userid": [principal.user_id],
        "aws:currenttime": [current_time],
        "aws:epochtime": [epoch_time],
        "aws:requestedregion": [region],
        "aws:securetransport": ["true" if secure else "false"],
    }
    if resource_account:
        # The account that owns the resource (for AssumeRole, the role's).
        context["aws:resourceaccount"] = [resource_account]
    # Present for a principal, or a resource, of an account in an organization (IAM User Guide,
    # global condition keys): the organization's ID and the account's paths in it (multivalued).
    if principal_org is not None:
        context["aws:principalorgid"] = [principal_org[0]]
        context["aws:principalorgpaths"] = list(principal_org[1])
    if resource_account and resource_org is not None:
        context["aws:resourceorgid"] = [resource_org[0]]
        context["aws:resourceorgpaths"] = list(resource_org[1])
    if principal.kind == "IAMUser":
        context["aws:username"] = [principal.name]
    if principal.source_identity:
        context["aws:sourceidentity"] = [principal.source_identity]
    # Present only when temporary credentials sign the request (IAM User Guide, global condition
    # keys: aws:TokenIssueTime); AWS's "revoke active sessions" policy (id_roles_use_revoke-sessions:
    # Deny * when DateLessThan aws:TokenIssueTime <cutoff>) compares it.
    if principal.kind == "AssumedRole":
        if principal.issued_at is not None:
            context["aws:tokenissuetime"] = [_issue_time(int(principal.issued_at))]
        # Present in every request signed with temporary credentials, "false" unless MFA was checked
        # when they were issued, which Khoa never does (IAM User Guide, aws:MultiFactorAuthPresent):
        # without it a Deny on "Bool aws:MultiFactorAuthPresent false" would never match.
        context["aws:multifactorauthpresent"] = ["false"]
    if vpc_source_ip:
        context["aws:vpcsourceip"] = [vpc_source_ip]
        if vpc_id:
            context["aws:sourcevpc"] = [vpc_id]
    elif source_ip:
        context["aws:sourceip"] = [source_ip]
    if via:
        context["kms:viaservice"] = [via]
    context["aws:viaawsservice"] = ["true" if via else "false"]
    return context


def base_context(ctx: RequestContext, resource_account: str | None = None) -> dict[str, list[str]]:
    """The global condition keys of a request (the facts the directory holds aside: its caller's
    tags and the accounts' organizations) on a resource of ``resource_account`` (aws:ResourceAccount
    is left out without it)."""
    return facts_of(ctx.principal, request_facts(ctx), resource_account)


def _account_of(resource: str) -> str | None:
    """The account an ARN names (its fifth field); None for "*" and for what is not an ARN."""
    parts = resource.split(":", 5)
    return parts[4] if len(parts) == 6 and parts[0] == "arn" and parts[4] else None


def access_denied(ctx: RequestContext, action: str, resource: str, decision: Decision) -> AWSError:
    """AccessDenied, with the policy type that decided only when the resource is the caller's own.

    AWS adds that clause ("because no resource-based policy allows ...") to requests within an account
    (or organization) only: told to a caller from elsewhere it would tell a missing resource from one
    whose policy refuses them, so another tenant could enumerate roles, keys and secrets by name.
    """
    message = f"User: {ctx.principal.arn} is not authorized to perform: {action} on resource: {resource}"
    owner = _account_of(resource)
    if owner is None or owner == ctx.principal.account_id:
        message = f"{message} {decision.explain(action)}"
    if ctx.service in _QUERY_SERVICES:
        return AWSError("AccessDenied", message, 403)
    return AWSError("AccessDeniedException", message)


class Authorizer:
    """Evaluates a request against the caller's policies and the resource's policy.

    Services receive one through their ``build_service`` (it is the only way they reach the caller's
    policies); the composition root builds it once per process. ``allow_everything`` is development
    mode (``--dev``), where every authenticated call is allowed, as in moto and LocalStack.
    """

    def __init__(
        self,
        directory: Directory,
        *,
        allow_everything: bool = False,
        guardrails: Callable[[str], ScpLevels] | None = None,
        organizations: Callable[[str], OrgPlace | None] | None = None,
    ) -> None:
        self.directory = directory
        self.allow_everything = allow_everything
        # The SCPs governing an account (by default the directory's, cached and revoked with it).
        if guardrails is None:
            guardrails = directory.scps_for if isinstance(directory, Directory) else _no_scps
        self.guardrails = guardrails
        # Where an account sits in its organization (by default the directory's, cached with the SCPs).
        if organizations is None:
            organizations = (
                directory.organization_of if isinstance(directory, Directory) else _no_organization
            )
        self.organizations = organizations
        self._decisions = DecisionMemo()

    def clear(self) -> None:
        """Forget cached policies and decisions (access may have been taken away)."""
        self.directory.clear()
        self._decisions.clear()

    def condition_context(
        self, ctx: RequestContext, resource_account: str | None = None
    ) -> dict[str, list[str]]:
        """The global condition keys :meth:`decide` evaluates a request by ``ctx`` on a resource of
        ``resource_account`` with (the service's own keys aside): what ``khoa access explain`` matches
        statements against, so that it shows the statements the decision saw."""
        principal = ctx.principal
        account = resource_account or ctx.account_id
        places = (self.organizations(principal.account_id), self.organizations(account))
        caller = self.directory.for_principal(principal)
        return self._facts(principal, request_facts(ctx), account, places, caller)

    @staticmethod
    def _facts(
        principal: Principal,
        request_values: tuple[Any, ...],
        account: str,
        places: tuple[OrgPlace | None, OrgPlace | None],
        caller: CallerPolicies,
    ) -> dict[str, list[str]]:
        facts = facts_of(principal, request_values, account, *places)
        if caller.arn and principal.kind == "AssumedRole":
            facts["aws:principalarn"] = [caller.arn]  # the role's ARN, with its path
        for tag_key, tag_value in caller.tags.items():
            facts[f"aws:principaltag/{tag_key.lower()}"] = [tag_value]
        return facts

    def decide(
        self,
        ctx: RequestContext,
        action: str,
        resource: str,
        *,
        resource_account: str | None = None,
        resource_policy: str | Policy | None = None,
        key_policy: bool = False,
        context: dict[str, list[str]] | Callable[[], dict[str, list[str]]] | None = None,
    ) -> Decision:
        """Evaluate; ``context`` may be a function, called only when policies must really be evaluated
        (the account root on its own resources skips it, which keeps the hot path cheap)."""
        principal = ctx.principal
        account = resource_account or ctx.account_id
        if account != principal.account_id:
            ctx.extras.setdefault(RESOURCE_OWNERS, set()).add(account)
        if self.allow_everything:
            return Decision(True)
        # The organization's SCPs govern every principal of a member account, its root user too.
        scps = self.guardrails(principal.account_id)
        if principal.is_root and account == principal.account_id and resource_policy is None and not scps:
            return Decision(True)
        caller = self.directory.for_principal(principal)
        if callable(context):
            context = context()
        # A stored resource policy that no longer parses is read as an explicit deny, never as empty.
        policy = parsed(resource_policy, "resource") if isinstance(resource_policy, str) else resource_policy
        trust = policy is not None and action.lower() in _TRUST_ACTIONS
        # Every input of the evaluation below, so a repeated request is answered from the memo: the
        # facts are made from the caller (the whole Principal: its session's issue time and source
        # identity too), the resource's account, the caller's policies (its tags and ARN with them),
        # the request's facts and the service's context, so the key holds those rather than the facts.
        request_values = request_facts(ctx)
        places = (self.organizations(principal.account_id), self.organizations(account))
        policies = (caller, policy, scps)
        memo_key = self._decisions.key(
            (principal, action, resource, account, key_policy, trust, request_values, places),
            policies,
            context or {},
        )
        decision = self._decisions.get(memo_key)
        if decision is not None:
            return decision
        facts = self._facts(principal, request_values, account, places, caller)
        if context:
            facts.update({k.lower(): v for k, v in context.items()})
        request = Request(
            principal=principal, action=action, resource=resource, resource_account=account, context=facts
        )
        decision = evaluate(
            request,
            identity=caller.identity,
            resource=policy,
            boundary=caller.boundary,
            session=caller.session,
            key_policy=key_policy or trust,
            resource_kind=TRUST if trust else RESOURCE,
            scps=scps,
        )
        self._decisions.put(memo_key, decision, policies)
        return decision

    def authorize(self, ctx: RequestContext, action: str, resource: str, **kwargs: Any) -> None:
        """Raise the service's AccessDenied error unless ``action`` on ``resource`` is allowed."""
        decision = self.decide(ctx, action, resource, **kwargs)
        if not decision.allowed:
            raise access_denied(ctx, action, resource, decision)
