"""STS operations. Temporary credentials are stored sealed; only a digest of the session token is kept."""

from __future__ import annotations

import json
import re
import string
from typing import Any

from sqlalchemy import select

from khoa.auth.sessions import issue_session
from khoa.iam.policy import Policy, PolicyError
from khoa.protocol.context import RequestContext
from khoa.protocol.errors import AWSError
from khoa.services.iam import aws_managed
from khoa.services.sts.authtable import ROLE_KEY
from khoa.storage import schema

# A managed policy ARN: the account (or "aws" for AWS managed policies), then the path and name.
_POLICY_ARN = re.compile(r"^arn:aws:iam::(\d{12}|aws):policy/(?:[\x21-\x7e]*/)?[\w+=,.@-]+$")
_ALNUM = string.ascii_uppercase + string.digits
DEFAULT_DURATION = 3600
CHAINED_MAX = 3600


def get_caller_identity(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    principal = ctx.principal
    return {"UserId": principal.user_id, "Account": principal.account_id, "Arn": principal.arn}


def get_access_key_info(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    access_key_id = params["AccessKeyId"]
    credential = ctx.runtime.credentials.lookup(access_key_id)
    if credential is None:
        raise AWSError("InvalidParameterValue", "The access key ID is not valid.")
    return {"Account": credential.principal.account_id}


def _validation(message: str) -> AWSError:
    return AWSError("ValidationError", message)


def assume_role(ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    """Issue the session. Authorised before it runs (sts/authtable.py: the caller's policies and the
    role's trust policy), which also found the role; nothing here runs for a caller who may not assume
    it, so the role's limits and its account's policies stay hidden from such callers."""
    role = ctx.extras[ROLE_KEY]
    role_arn = params["RoleArn"]
    role_account = role.account_id
    duration = params.get("DurationSeconds", DEFAULT_DURATION)
    if ctx.principal.kind == "AssumedRole" and duration > CHAINED_MAX:
        raise _validation(
            "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by "
            "role chaining."
        )
    if duration > (role.max_session_duration or DEFAULT_DURATION):
        raise _validation("The requested DurationSeconds exceeds the MaxSessionDuration set for this role.")
    session_policy = params.get("Policy")
    if session_policy is not None:
        try:
            Policy.parse(session_policy, "session")
        except PolicyError as exc:
            raise AWSError("MalformedPolicyDocument", str(exc)) from None
    documents = [session_policy] if session_policy else []
    for item in params.get("PolicyArns", []):
        documents.append(_managed_document(ctx, item.get("arn", ""), role_account))
    tags = {t["Key"]: t["Value"] for t in params.get("Tags", [])}
    combined = _combine(documents)
    session_name = params["RoleSessionName"]
    credentials = issue_session(
        ctx.runtime.engine,
        ctx.runtime.barrier,
        account_id=role_account,
        role_id=role.principal_id,
        role_arn=role_arn,
        session_name=session_name,
        now=ctx.now,
        duration_seconds=duration,
        session_policy=combined,
        session_tags=tags or None,
        source_identity=params.get("SourceIdentity") or ctx.principal.source_identity or None,
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
        "PackedPolicySize": min(100, len(combined or "") * 100 // 2048),
    }
    if params.get("SourceIdentity"):
        result["SourceIdentity"] = params["SourceIdentity"]
    return result


def _managed_document(ctx: RequestContext, arn: str, role_account: str) -> str:
    """The default version of a managed session policy, which AWS requires to be in the role's account
    (or an AWS managed policy). Any other ARN gets the same answer as a policy that does not exist,
    without being looked up, so the call reveals nothing about other accounts' policies."""
    unusable = AWSError("InvalidParameterValue", f"Policy {arn} does not exist or is not attachable.")
    match = _POLICY_ARN.match(arn)
    if match is None or match.group(1) not in (role_account, aws_managed.ACCOUNT):
        raise unusable
    if match.group(1) == aws_managed.ACCOUNT and aws_managed.ensure(ctx.runtime.engine, arn) is None:
        raise unusable
    managed = schema.iam_managed_policies
    versions = schema.iam_policy_versions
    with ctx.runtime.engine.connect() as conn:
        document = conn.execute(
            select(versions.c.document)
            .join(managed, managed.c.arn == versions.c.policy_arn)
            .where(managed.c.arn == arn)
            .where(managed.c.account_id == match.group(1))
            .where(versions.c.version_id == managed.c.default_version)
        ).scalar()
    if document is None:
        raise unusable
    return str(document)


def _combine(documents: list[str]) -> str | None:
    """Several session policies narrow together: keep them as one document per policy in a JSON list."""
    if not documents:
        return None
    if len(documents) == 1:
        return documents[0]
    statements: list[Any] = []
    for document in documents:
        data = json.loads(document)
        raw = data.get("Statement", [])
        statements.extend(raw if isinstance(raw, list) else [raw])
    return json.dumps({"Version": "2012-10-17", "Statement": statements})


OPERATIONS = {
    "GetCallerIdentity": get_caller_identity,
    "AssumeRole": assume_role,
    "GetAccessKeyInfo": get_access_key_info,
}
