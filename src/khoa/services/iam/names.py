"""The kinds of IAM entity and how their identifiers and ARNs are formed (no storage here)."""

from __future__ import annotations

import re
import secrets
import string

from khoa.services.iam import errors

USER, GROUP, ROLE = "user", "group", "role"
LABEL = {USER: "User", GROUP: "Group", ROLE: "Role"}
"""How AWS spells each kind in operation names and messages (``CreateUser``, "User with name…")."""

_ID_PREFIX = {USER: "AIDA", ROLE: "AROA", GROUP: "AGPA", "policy": "ANPA"}
_ALNUM = string.ascii_uppercase + string.digits
_POLICY_ARN = re.compile(r"^arn:aws:iam::(\d{12}|aws):policy(/(?:[\x21-\x7e]*/)?)([\w+=,.@-]+)$")

# A user's, group's or role's ARN (account, kind, path, name): what SimulatePrincipalPolicy accepts.
ENTITY_ARN = re.compile(r"^arn:aws:iam::(\d{12}):(user|group|role)(/(?:.*/)?)([\w+=,.@-]+)$")


def new_id(kind: str) -> str:
    """A new unique ID with AWS's prefix for ``kind`` (``AIDA…`` for a user, ``ANPA…`` for a policy)."""
    return _ID_PREFIX[kind] + "".join(secrets.choice(_ALNUM) for _ in range(17))


def entity_arn(account_id: str, kind: str, path: str, name: str) -> str:
    return f"arn:aws:iam::{account_id}:{kind}{path}{name}"


def policy_arn(account_id: str, path: str, name: str) -> str:
    return f"arn:aws:iam::{account_id}:policy{path}{name}"


def parse_policy_arn(arn: str) -> tuple[str, str, str]:
    """(account or "aws", path, name) of a managed policy ARN; InvalidInput when it is not one."""
    match = _POLICY_ARN.match(arn)
    if match is None:
        raise errors.invalid_input(f"ARN {arn} is not valid.")
    return match.group(1), match.group(2), match.group(3)
