"""Who is calling, and whose a key is: GetCallerIdentity and GetAccessKeyInfo."""

from __future__ import annotations

from typing import Any

from khoa.protocol.context import RequestContext
from khoa.services.sts import errors
from khoa.services.sts.backend import StsBackend


def get_caller_identity(sts: StsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    principal = ctx.principal
    return {"UserId": principal.user_id, "Account": principal.account_id, "Arn": principal.arn}


def get_access_key_info(sts: StsBackend, ctx: RequestContext, params: dict[str, Any]) -> dict[str, Any]:
    """The account owning a key (long-term or session); AWS answers this for any key it knows."""
    credential = sts.credentials.lookup(params["AccessKeyId"])
    if credential is None:
        raise errors.invalid_parameter_value("The access key ID is not valid.")
    return {"Account": credential.principal.account_id}


OPERATIONS = {
    "GetCallerIdentity": get_caller_identity,
    "GetAccessKeyInfo": get_access_key_info,
}
