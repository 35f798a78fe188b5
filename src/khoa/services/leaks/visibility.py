"""Which matches of a leak check may name their resource to the caller.

khoa:CheckLeakedValues and khoa:ReportLeakedValues are granted on ``*`` (scanners' identities hold
them), so they must not become a way to list what the caller may not see: a match names a resource
only when the caller could learn its name anyway.

- A match on a credential's secret access key or session token names its user, the root or its role,
  and its key id: whoever holds the secret can ask sts:GetCallerIdentity with it.
- A secret is named (ARN, version, labels, field, when it stopped working) only when the caller may
  ``secretsmanager:DescribeSecret`` it; a SecureString parameter only when the caller may
  ``ssm:DescribeParameters`` (on ``*``, as AWS and Khoa authorise it); both evaluated by the service's
  own authorisation table, in the resource's Region, with its resource policy and tags.
- An access key id (no secret) names its user only when the caller may ``iam:ListAccessKeys`` for
  that user, the root's keys only to the root; an STS key id its role only when the caller may
  ``iam:GetRole`` on it.

The account root may see everything in its account. A hidden match on a value that proves a leak is
still reported and responded to (the value is the proof), as ``hidden``: its ResourceArn is the
wildcard ARN of its type in the account (:func:`hidden_arn`), without version, field or date; the
resource is named to the account's administrators in the LeakResponse event and the alert. A hidden
match on a key id says nothing and is left out (check.py).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from khoa.protocol.context import RequestContext
from khoa.protocol.errors import AWSError
from khoa.services.leaks.backend import LeaksBackend
from khoa.storage import fingerprints

_HIDDEN = {
    fingerprints.SECRET: "arn:aws:secretsmanager:*:{account}:secret:*",
    fingerprints.PARAMETER: "arn:aws:ssm:*:{account}:parameter/*",
    fingerprints.ACCESS_KEY: "arn:aws:iam::{account}:user/*",
    fingerprints.STS_CREDENTIAL: "arn:aws:iam::{account}:role/*",
}
_NOUNS = {
    fingerprints.SECRET: "a secret",
    fingerprints.PARAMETER: "a SecureString parameter",
    fingerprints.ACCESS_KEY: "an access key",
    fingerprints.STS_CREDENTIAL: "a temporary credential",
}


def hidden_arn(resource_type: str, account_id: str) -> str:
    """What a hidden match of ``resource_type`` says of its resource: "one of this account's"."""
    return _HIDDEN.get(resource_type, "arn:aws:iam::{account}:root").format(account=account_id)


def noun(resource_type: str) -> str:
    return _NOUNS.get(resource_type, "a resource")


def _name(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


class Visibility:
    """Answers, for one request, whether a match may name its resource; each resource is asked about
    once per request."""

    def __init__(self, backend: LeaksBackend, ctx: RequestContext) -> None:
        self.backend = backend
        self.ctx = ctx
        self._known: dict[tuple[str, str, str, bool], bool] = {}

    def _may(self, service: str, operation: str, params: dict[str, Any], region: str = "") -> bool:
        """Whether ``service``'s own authorisation table lets the caller call ``operation``."""
        found = self.backend.services.get(service)
        if found is None:
            return False
        call = dataclasses.replace(
            self.ctx, service=service, operation=operation, region=region or self.ctx.region
        )
        try:
            found.authorizer(call, params)
        except AWSError:
            return False  # refused, or no longer there to be asked about
        return True

    def shown(self, resource_type: str, resource_arn: str, region: str, proves_leak: bool) -> bool:
        if self.ctx.principal.is_root:
            return True
        key = (resource_type, resource_arn, region, proves_leak)
        if key not in self._known:
            self._known[key] = self._decide(resource_type, resource_arn, region, proves_leak)
        return self._known[key]

    def _decide(self, resource_type: str, arn: str, region: str, proves_leak: bool) -> bool:
        if resource_type == fingerprints.SECRET:
            return self._may("secretsmanager", "DescribeSecret", {"SecretId": arn}, region)
        if resource_type == fingerprints.PARAMETER:
            return self._may("ssm", "DescribeParameters", {}, region)
        if proves_leak:
            return True  # the caller holds the credential's secret
        if resource_type == fingerprints.ACCESS_KEY:
            # a key id alone: its user's keys are the caller's to list (the root's: only the root's)
            return not arn.endswith(":root") and self._may("iam", "ListAccessKeys", {"UserName": _name(arn)})
        if resource_type == fingerprints.STS_CREDENTIAL:
            return self._may("iam", "GetRole", {"RoleName": _name(arn)})
        return False
