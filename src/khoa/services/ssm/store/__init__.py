"""Where every SQL statement and transaction of Parameter Store lives; handlers call these
intention-revealing methods and never see a connection.

One module per kind of thing: ``parameters`` (parameters and versions, behind the caches GetParameter
reads through; :class:`ParameterStore` is the whole store and holds the others), ``labels``, ``tags``,
and ``listing`` (the filtered, keyset-paged reads of GetParametersByPath and DescribeParameters);
``records`` holds the tables and the rows handed out. What must hold under concurrency (the tag
quota, the version limit, one writer per version, ten labels per version and each label on one version)
is checked inside the writing transaction, so the stores raise Parameter Store's errors themselves.
Writers of a parameter's versions and labels take its lock first (``records.lock``).
"""

from __future__ import annotations

from khoa.services.ssm.store.labels import LabelStore
from khoa.services.ssm.store.listing import Filter, ListingStore
from khoa.services.ssm.store.parameters import MAX_VERSIONS, ParameterStore
from khoa.services.ssm.store.records import NewVersion, ParameterRow, VersionRow
from khoa.services.ssm.store.tags import MAX_TAGS, TagStore

__all__ = [
    "MAX_TAGS",
    "MAX_VERSIONS",
    "Filter",
    "LabelStore",
    "ListingStore",
    "NewVersion",
    "ParameterRow",
    "ParameterStore",
    "TagStore",
    "VersionRow",
]
