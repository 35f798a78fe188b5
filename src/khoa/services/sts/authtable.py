"""The STS authorisation table: how AssumeRole, GetAccessKeyInfo and GetCallerIdentity are authorised.

- AssumeRole: ``sts:AssumeRole`` on the role, evaluated against the caller's policies and the role's
  trust policy (both must allow, even within one account, as for every role trust policy); with
  session tags also ``sts:TagSession``, with a source identity also ``sts:SetSourceIdentity``. In a
  role chain the new session's source identity and transitive tags may be inherited (chain.py, whose
  rules are checked first): an inherited source identity needs ``sts:SetSourceIdentity`` and is what
  ``sts:SourceIdentity`` holds (IAM User Guide, "Monitor and control actions taken with assumed
  roles": in role chaining the permission is required in the caller's policy and the trust policy,
  and both aws:SourceIdentity and sts:SourceIdentity are in the request); inherited transitive tags
  need ``sts:TagSession`` (as AWS answers: a chain that carries them into a role whose trust policy
  does not allow it is refused). A role that does not exist is refused with the same AccessDenied,
  so nothing is learnt about which roles exist; the role row found here is handed to the handler
  (``ctx.extras["sts:role"]``, the lineage as ``ctx.extras["sts:chain"]``), which only then
  validates the duration and resolves session policies.
- GetAccessKeyInfo: ``sts:GetAccessKeyInfo`` on ``*`` (AWS requires the permission).
- GetCallerIdentity: no authorisation; AWS documents that no permission is needed to call it and
  that an explicit Deny does not stop it.
"""

from __future__ import annotations

import re
from functools import partial
from typing import Any

from khoa.access.policy import Policy
from khoa.protocol.context import RequestContext
from khoa.services.authorization import AuthorizationTable, exempt, rule
from khoa.services.sts import errors
from khoa.services.sts.backend import StsBackend
from khoa.services.sts.chain import CHAIN_KEY, Lineage, lineage

ROLE_ARN = re.compile(r"^arn:aws:iam::(\d{12}):role/(?:.*/)?([\w+=,.@-]+)$")
ROLE_KEY = "sts:role"
# A trust policy that allows nobody: what a missing role is decided against.
_NO_TRUST = Policy((), "resource")


def assume_role_context(params: dict[str, Any], chain: Lineage) -> dict[str, list[str]]:
    """The STS condition keys of an AssumeRole request: session name, external ID, the new session's
    source identity (passed or inherited), the passed session tags as request tags, and the passed
    transitive tag keys."""
    context: dict[str, list[str]] = {"sts:rolesessionname": [params["RoleSessionName"]]}
    if params.get("ExternalId") is not None:
        context["sts:externalid"] = [params["ExternalId"]]
    if chain.source_identity:
        context["sts:sourceidentity"] = [chain.source_identity]
    for key, value in chain.passed_tags.items():
        context[f"aws:requesttag/{key}"] = [value]
    if chain.passed_tags:
        context["aws:tagkeys"] = list(chain.passed_tags)
    if chain.requested_transitive:
        context["sts:transitivetagkeys"] = list(chain.requested_transitive)
    return context


def authorize_assume_role(sts: StsBackend, ctx: RequestContext, params: dict[str, Any]) -> None:
    if ctx.principal.is_root and not sts.authorizer.allow_everything:
        # AWS refuses the root user here whatever the trust policy says (development mode allows it).
        raise errors.root_may_not_assume_roles()
    role_arn = params["RoleArn"]
    match = ROLE_ARN.match(role_arn)
    if match is None:
        raise errors.validation(f"{role_arn} is invalid")
    # The chain's rules depend on the caller and the request alone: checked before the role is looked
    # up, so their answers tell nothing about the role.
    chain = lineage(ctx.principal, params)
    if params.get("SerialNumber") is not None or params.get("TokenCode") is not None:
        # Khoa holds no MFA devices, so no code can be verified: a session must never look as if
        # MFA had been checked (aws:MultiFactorAuthPresent stays "false" in its requests).
        raise errors.access_denied(
            "MultiFactorAuthentication failed, unable to validate MFA code. Please verify your MFA "
            "serial number is valid and associated with this user."
        )
    role_account = match.group(1)
    role = sts.store.role(role_account, role_arn)
    context = assume_role_context(params, chain)
    if role is None:
        # Decided as a role whose trust policy allows nobody, so the refusal reads exactly as one:
        # which roles exist stays hidden.
        sts.authorizer.authorize(
            ctx,
            "sts:AssumeRole",
            role_arn,
            resource_account=role_account,
            resource_policy=_NO_TRUST,
            context=context,
        )
        raise errors.not_authorized(ctx.principal.arn, "sts:AssumeRole", role_arn)
    # The role is the resource: its tags are aws:ResourceTag and iam:ResourceTag facts (AWS's ABAC
    # tutorial allows sts:AssumeRole on iam:ResourceTag).
    for key, value in sts.store.tags(role.principal_id).items():
        context[f"aws:resourcetag/{key.lower()}"] = context[f"iam:resourcetag/{key.lower()}"] = [value]
    trust: str | Policy = role.assume_role_policy or _NO_TRUST
    actions = ["sts:AssumeRole"]
    if chain.tags:
        actions.append("sts:TagSession")
    if chain.source_identity:
        actions.append("sts:SetSourceIdentity")
    for action in actions:
        sts.authorizer.authorize(
            ctx, action, role_arn, resource_account=role_account, resource_policy=trust, context=context
        )
    ctx.extras[ROLE_KEY] = role
    ctx.extras[CHAIN_KEY] = chain


def table(sts: StsBackend) -> AuthorizationTable:
    """STS's authorisation table, over ``sts``'s store (the role) and authoriser."""

    def get_access_key_info(ctx: RequestContext, params: dict[str, Any]) -> None:
        sts.authorizer.authorize(ctx, "sts:GetAccessKeyInfo", "*")

    return AuthorizationTable(
        "sts",
        {
            "AssumeRole": rule(
                partial(authorize_assume_role, sts),
                "sts:AssumeRole",
                "sts:TagSession",
                "sts:SetSourceIdentity",
            ),
            "GetAccessKeyInfo": rule(get_access_key_info, "sts:GetAccessKeyInfo"),
            # AWS: "No permissions are required to perform this operation. If an administrator
            # attaches a policy to your identity that explicitly denies access to the
            # sts:GetCallerIdentity action, you can still perform this operation."
            "GetCallerIdentity": exempt("AWS requires no permission for GetCallerIdentity"),
        },
    )
