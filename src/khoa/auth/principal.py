"""Who a request is from, after authentication."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    """An authenticated caller.

    ``kind`` follows CloudTrail's ``userIdentity.type`` (Root, IAMUser, AssumedRole), so the audit trail
    and policy evaluation can use it directly.
    """

    account_id: str
    arn: str
    user_id: str
    kind: str
    access_key_id: str = ""
    # IAM identity behind the caller: the user, or the role of an assumed-role session.
    name: str = ""
    principal_id: str = ""
    session_name: str = ""
    session_policy: str | None = None
    session_tags: tuple[tuple[str, str], ...] = ()
    source_identity: str = ""
    # Role sessions only: the keys of ``session_tags`` that pass on to every later session of a role
    # chain (TransitiveTagKeys, as given), and when the session was issued (epoch seconds: the
    # aws:TokenIssueTime of its requests). Both are fields, so the decision memo, which keys on the
    # whole Principal, keys on them too.
    transitive_tag_keys: tuple[str, ...] = ()
    issued_at: float | None = None

    @property
    def is_root(self) -> bool:
        return self.kind == "Root"

    @classmethod
    def account_root(cls, account_id: str, access_key_id: str = "") -> Principal:
        return cls(
            account_id=account_id,
            arn=f"arn:aws:iam::{account_id}:root",
            user_id=account_id,
            kind="Root",
            access_key_id=access_key_id,
        )
