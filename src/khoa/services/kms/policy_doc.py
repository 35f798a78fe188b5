"""Key policy documents: AWS's default key policy, validation of supplied ones by the one policy
parser, and the policy lockout safety check."""

from __future__ import annotations

from typing import Any

from khoa.access.policy import KEY_POLICY_MAX_BYTES, Policy, PolicyError, refuse_allow_not_principal
from khoa.protocol.context import RequestContext
from khoa.services.kms import errors
from khoa.services.kms.authz import request_context
from khoa.services.kms.backend import KmsBackend
from khoa.services.kms.store import KeyRecord


def default_key_policy(account_id: str) -> str:
    """The policy AWS attaches when CreateKey gets none (the "default key policy").

    Laid out byte for byte as AWS returns it from GetKeyPolicy (Jackson's pretty printer).
    """
    return (
        "{\n"
        '  "Version" : "2012-10-17",\n'
        '  "Id" : "key-default-1",\n'
        '  "Statement" : [ {\n'
        '    "Sid" : "Enable IAM User Permissions",\n'
        '    "Effect" : "Allow",\n'
        '    "Principal" : {\n'
        f'      "AWS" : "arn:aws:iam::{account_id}:root"\n'
        "    },\n"
        '    "Action" : "kms:*",\n'
        '    "Resource" : "*"\n'
        "  } ]\n"
        "}"
    )


def validate_key_policy(kms: KmsBackend, text: str) -> Policy:
    """Refuse documents AWS would refuse with MalformedPolicyDocumentException.

    Key policies are resource policies: every statement names a principal and a resource, and
    NotPrincipal goes only with Deny. The one policy parser (khoa.access.policy) decides what is well
    formed; AWS caps key policies at 32 KB.
    Every IAM user and role it names must exist (AWS binds each to its unique ID on save).
    """
    if len(text.encode("utf-8", "surrogatepass")) > KEY_POLICY_MAX_BYTES:
        # KMS reports length quotas with LimitExceededException.
        raise errors.limit_exceeded(f"The key policy exceeds the {KEY_POLICY_MAX_BYTES}-byte size quota.")
    try:
        policy = Policy.parse(text, "resource", require_principal=True, require_resource=True)
        refuse_allow_not_principal(policy)
    except PolicyError as exc:
        raise errors.malformed_policy(str(exc)) from None
    if kms.authorizer.directory.missing_principals(policy):
        raise errors.malformed_policy("Policy contains a statement with one or more invalid principals.")
    return policy


LOCKOUT_MESSAGE = "The new key policy will not allow you to update the key policy in the future."


def check_lockout(
    kms: KmsBackend, ctx: RequestContext, key: KeyRecord, policy: Policy, params: dict[str, Any]
) -> None:
    """The policy lockout safety check (botocore: PutKeyPolicy / CreateKey
    ``BypassPolicyLockoutSafetyCheck``): unless bypassed, the new key policy must let the caller make a
    later PutKeyPolicy request. Evaluated by the real evaluator, so a policy that delegates to the
    account counts the caller's IAM policies, and an explicit Deny of kms:PutKeyPolicy fails it."""
    if params.get("BypassPolicyLockoutSafetyCheck"):
        return
    decision = kms.authorizer.decide(
        ctx,
        "kms:PutKeyPolicy",
        key.arn,
        resource_account=key.account_id,
        resource_policy=policy,
        key_policy=True,
        context=lambda: request_context(kms, ctx, {}, key),
    )
    if not decision.allowed:
        raise errors.malformed_policy(LOCKOUT_MESSAGE)
