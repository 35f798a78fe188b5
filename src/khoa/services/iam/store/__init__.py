"""Where every SQL statement and transaction of IAM lives; handlers call these intention-revealing
methods and never see a connection.

One store per kind of thing, so each stays short and a newcomer can guess where a query lives:
``entities`` (users, groups, roles, membership), ``keys`` (access keys), ``policies`` (managed
policies and versions), ``permissions`` (inline policies, attachments), ``tags``, and ``reports``
(whole-account and whole-entity reads); ``usage`` reads the last-use tables the leader keeps from
the audit trail (GetAccessKeyLastUsed). ``tables`` holds the statements several of them share inside
one transaction. Quotas that must hold under concurrency are checked inside the writing transaction,
so the stores raise IAM's errors (LimitExceeded, EntityAlreadyExists, DeleteConflict) themselves.
"""

from __future__ import annotations

from sqlalchemy import Engine

from khoa.audit.usage import UsageReader
from khoa.services.iam.store.entities import EntityStore
from khoa.services.iam.store.keys import AccessKeyStore, KeyOwner
from khoa.services.iam.store.permissions import PermissionStore
from khoa.services.iam.store.policies import PolicyRecord, PolicyStore
from khoa.services.iam.store.reports import AccountSnapshot, EntityPolicies, ReportStore
from khoa.services.iam.store.tags import TagStore

__all__ = [
    "AccessKeyStore",
    "AccountSnapshot",
    "EntityPolicies",
    "EntityStore",
    "IamStore",
    "KeyOwner",
    "PermissionStore",
    "PolicyRecord",
    "PolicyStore",
    "ReportStore",
    "TagStore",
]


class IamStore:
    """All of IAM's storage, over one database engine."""

    def __init__(self, engine: Engine) -> None:
        self.entities = EntityStore(engine)
        self.keys = AccessKeyStore(engine)
        self.policies = PolicyStore(engine)
        self.permissions = PermissionStore(engine)
        self.tags = TagStore(engine)
        self.reports = ReportStore(engine)
        self.usage = UsageReader(engine)
