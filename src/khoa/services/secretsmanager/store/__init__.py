"""Where every SQL statement and transaction of Secrets Manager lives; handlers call the intention-revealing
methods of :class:`SecretStore` and never see a connection.

``records`` holds what the store hands out (SecretRecord, VersionRecord, SealedValue); ``secrets`` the
store itself (cached reads, and each write as one transaction); ``tables`` the statements several
writes share inside one transaction (the row lock that serialises writers to one secret, label and
tag writes, pruning); ``search`` ListSecrets' filters and keyset paging; ``access`` the log of reads
that writes LastAccessedDate off their path, once the trail has recorded them. Checks that must hold under
concurrency (the tag quota, a rotation's version filled only once) are made inside the writing
transaction, so the store raises Secrets Manager's errors for them itself.

The change events of khoa.changes read and write their own tables; publishing.py calls them.
"""

from __future__ import annotations

from khoa.services.secretsmanager.store.records import (
    NOTHING,
    PLACEHOLDER,
    SealedValue,
    SecretRecord,
    VersionRecord,
)
from khoa.services.secretsmanager.store.search import Keyset
from khoa.services.secretsmanager.store.secrets import Relabel, SecretStore
from khoa.services.secretsmanager.store.tables import MAX_TAGS

__all__ = [
    "MAX_TAGS",
    "NOTHING",
    "PLACEHOLDER",
    "Keyset",
    "Relabel",
    "SealedValue",
    "SecretRecord",
    "SecretStore",
    "VersionRecord",
]
