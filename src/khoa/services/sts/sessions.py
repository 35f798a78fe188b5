"""Temporary credentials: AssumeRole (same- and cross-account). Sessions are stored with their
secret sealed and only a digest of their token."""

from __future__ import annotations

import re
from typing import Any

from khoa.access import aws_managed
from khoa.access.directory import session_policy_text
from khoa.access.policy import Policy, PolicyError
from khoa.protocol.context import RequestContext
from khoa.services.sts import errors
from khoa.services.sts.authtable import ROLE_KEY
from khoa.services.sts.backend import StsBackend
from khoa.services.sts.chain import CHAIN_KEY, Lineage

# A managed policy ARN: the account (or "aws" for AWS managed policies), then the path and name.
_POLICY_ARN = re.compile(r"^arn:aws:iam::(\d{12}|aws):policy/(?:[\x21-\x7e]*/)?[\w+=,.@-]+$")
DEFAULT_DURATION = 3600
CHAINED_MAX = 3600


def assume_role(sts: StsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    """Issue the session. Authorised before it runs (sts/authtable.py: the caller's policies and the
    role's trust policy), which also found the role and the session's lineage (chain.py: the source
    identity and transitive tags a role chain carries over); nothing here runs for a caller who may
    not assume it, so the role's limits and its account's policies stay hidden from such callers."""
    role = ctx.extras[ROLE_KEY]
    role_arn = params["RoleArn"]
    role_account = role.account_id
    duration = params.get("DurationSeconds", DEFAULT_DURATION)
    if ctx.principal.kind == "AssumedRole" and duration > CHAINED_MAX:
        raise errors.validation(
            "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by "
            "role chaining."
        )
    if duration > (role.max_session_duration or DEFAULT_DURATION):
        raise errors.validation(
            "The requested DurationSeconds exceeds the MaxSessionDuration set for this role."
        )
    session_policy = params.get("Policy")
    if session_policy is not None:
        try:
            Policy.parse(session_policy, "session")
        except PolicyError as exc:
            raise errors.malformed_policy(str(exc)) from None
    # The session keeps the managed session policies' ARNs, as AWS packs them: each applies as its
    # current default version whenever the session is used (khoa.access.directory).
    policy_arns = [item.get("arn", "") for item in params.get("PolicyArns", [])]
    for arn in policy_arns:
        _check_attachable(sts, arn, role_account)
    chain: Lineage = ctx.extras[CHAIN_KEY]
    tags = chain.tags
    stored = session_policy_text(session_policy or None, policy_arns)
    session_name = params["RoleSessionName"]
    credentials = sts.store.start_session(
        account_id=role_account,
        role_id=role.principal_id,
        role_arn=role_arn,
        session_name=session_name,
        now=ctx.now,
        duration_seconds=duration,
        session_policy=stored,
        session_tags=tags or None,
        source_identity=chain.source_identity,
        transitive_tag_keys=chain.transitive_keys or None,
    )
    result: dict[str, Any] = {
        "Credentials": {
            "AccessKeyId": credentials.access_key_id,
            "SecretAccessKey": credentials.secret_access_key,
            "SessionToken": credentials.session_token,
            "Expiration": credentials.expiration,
        },
        "AssumedRoleUser": {
            "AssumedRoleId": f"{role.principal_id}:{session_name}",
            "Arn": f"arn:aws:sts::{role_account}:assumed-role/{role.name}/{session_name}",
        },
        "PackedPolicySize": _packed_size(session_policy, policy_arns),
    }
    if params.get("SourceIdentity"):
        result["SourceIdentity"] = params["SourceIdentity"]
    return result


def _check_attachable(sts: StsBackend, arn: str, role_account: str) -> None:
    """A managed session policy must exist in the role's account (or be an AWS managed policy). Any
    other ARN gets the same answer as a policy that does not exist, without being looked up, so the
    call reveals nothing about other accounts' policies."""
    unusable = errors.policy_not_attachable(arn)
    match = _POLICY_ARN.match(arn)
    if match is None or match.group(1) not in (role_account, aws_managed.ACCOUNT):
        raise unusable
    if match.group(1) == aws_managed.ACCOUNT:
        document = aws_managed.document(arn)
    else:
        document = sts.store.policy_document(arn, role_account)
    if document is None:
        raise unusable


def _packed_size(inline: str | None, policy_arns: list[str]) -> int:
    """PackedPolicySize: the share (percent) of the session's room its session policies take, as AWS
    counts them: the inline policy's text and the managed policies' ARNs (not their documents)."""
    packed = len(inline or "") + sum(len(arn) for arn in policy_arns)
    return min(100, packed * 100 // 2048)


OPERATIONS = {"AssumeRole": assume_role}
