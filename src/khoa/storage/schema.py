"""The schema. Times are stored as UTC epoch seconds (double precision) so SQLite and PostgreSQL agree.

Secret columns (``*_sealed``) only ever hold values sealed by the barrier.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

meta = Table(
    "khoa_meta",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", LargeBinary, nullable=False),
)

accounts = Table(
    "accounts",
    metadata,
    Column("account_id", String(12), primary_key=True),
    Column("name", String(256), nullable=False),
    Column("created_at", Float, nullable=False),
)

access_keys = Table(
    "access_keys",
    metadata,
    Column("access_key_id", String(128), primary_key=True),
    Column("account_id", String(12), ForeignKey("accounts.account_id"), nullable=False),
    Column("secret_sealed", LargeBinary, nullable=False),
    Column("principal_kind", String(32), nullable=False),
    Column("principal_name", String(128), nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
)

kms_keys = Table(
    "kms_keys",
    metadata,
    Column("key_id", String(36), primary_key=True),
    Column("account_id", String(12), nullable=False),
    Column("region", String(32), nullable=False),
    Column("description", Text, nullable=False),
    Column("key_spec", String(32), nullable=False),
    Column("key_usage", String(32), nullable=False),
    Column("origin", String(32), nullable=False),
    Column("key_manager", String(16), nullable=False),
    Column("state", String(32), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("deletion_date", Float),
    Column("pending_window_days", Integer),
    Column("policy", Text, nullable=False),
    Column("rotation_enabled", Boolean, nullable=False),
    Column("rotation_period_days", Integer),
    Column("next_rotation_at", Float),
    Column("on_demand_started_at", Float),
    Column("current_version_id", String(64)),
    Column("valid_to", Float),
    Column("expiration_model", String(40)),
    Column("multi_region", Boolean, nullable=False),
    Index("ix_kms_keys_account_region", "account_id", "region", "created_at"),
)

kms_key_versions = Table(
    "kms_key_versions",
    metadata,
    Column("version_id", String(64), primary_key=True),
    Column("key_id", String(36), ForeignKey("kms_keys.key_id", ondelete="CASCADE"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("material_sealed", LargeBinary),
    Column("material_digest", String(64)),
    Column("created_at", Float, nullable=False),
    Column("rotation_type", String(16)),
    Index("ix_kms_key_versions_key", "key_id", "seq", unique=True),
)

kms_aliases = Table(
    "kms_aliases",
    metadata,
    Column("account_id", String(12), primary_key=True),
    Column("region", String(32), primary_key=True),
    Column("alias_name", String(256), primary_key=True),
    Column("target_key_id", String(36), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_kms_aliases_target", "target_key_id"),
)

kms_tags = Table(
    "kms_tags",
    metadata,
    Column("key_id", String(36), ForeignKey("kms_keys.key_id", ondelete="CASCADE"), primary_key=True),
    Column("tag_key", String(128), primary_key=True),
    Column("tag_value", String(256), nullable=False),
)

kms_grants = Table(
    "kms_grants",
    metadata,
    Column("grant_id", String(64), primary_key=True),
    Column("key_id", String(36), ForeignKey("kms_keys.key_id", ondelete="CASCADE"), nullable=False),
    Column("account_id", String(12), nullable=False),
    Column("name", String(256)),
    Column("grantee_principal", String(256), nullable=False),
    Column("retiring_principal", String(256)),
    Column("operations", Text, nullable=False),
    Column("constraints", Text),
    Column("issuing_account", String(256), nullable=False),
    Column("created_at", Float, nullable=False),
    Index("ix_kms_grants_key", "key_id", "created_at"),
)

kms_import_parameters = Table(
    "kms_import_parameters",
    metadata,
    Column("token_id", String(64), primary_key=True),
    Column("key_id", String(36), ForeignKey("kms_keys.key_id", ondelete="CASCADE"), nullable=False),
    Column("wrapping_algorithm", String(40), nullable=False),
    Column("wrapping_key_sealed", LargeBinary, nullable=False),
    Column("valid_to", Float, nullable=False),
    Index("ix_kms_import_parameters_key", "key_id"),
)

leases = Table(
    "leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(64), nullable=False),
    Column("expires_at", Float, nullable=False),
)
