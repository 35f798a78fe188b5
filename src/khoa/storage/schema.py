"""The schema. Times are stored as UTC epoch seconds (double precision) so SQLite and PostgreSQL agree.

Secret columns (``*_sealed``) only ever hold values sealed by the barrier.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
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
    false,
)
from sqlalchemy.dialects import mysql

metadata = MetaData()

# A delivered audit file (gzipped JSON, up to 5,000 records): beyond MariaDB's 64 KiB BLOB.
_AUDIT_FILE = LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")

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
    # A caller's grants on a key, read when policies do not allow a call (services/kms/authz.py).
    Index("ix_kms_grants_grantee", "key_id", "grantee_principal"),
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

# -- Secrets Manager ------------------------------------------------------------------------------

sm_secrets = Table(
    "sm_secrets",
    metadata,
    Column("secret_id", String(36), primary_key=True),
    Column("account_id", String(12), nullable=False),
    Column("region", String(32), nullable=False),
    Column("name", String(512), nullable=False),
    Column("arn", String(1024), nullable=False),
    Column("description", Text),
    Column("kms_key_id", String(2048)),
    Column("created_at", Float, nullable=False),
    Column("last_changed_at", Float, nullable=False),
    Column("last_accessed_at", Float),
    Column("deleted_at", Float),
    Column("deletion_due_at", Float),
    Column("rotation_enabled", Boolean, nullable=False),
    Column("rotation_lambda_arn", String(2048)),
    Column("rotation_rules", Text),
    Column("last_rotated_at", Float),
    Column("next_rotation_at", Float),
    Column("resource_policy", Text),
    Column("primary_region", String(32)),
    Column("primary_secret_id", String(36)),
    Column("owning_service", String(128)),
    Column("secret_type", String(256)),
    # Whether the secret has a tag list: set when tags are first written, kept when all are removed.
    # AWS leaves Tags out for a secret never tagged and answers "Tags": [] once all were removed.
    Column("tag_list", Boolean, nullable=False, server_default=false()),
    Index("ux_sm_secrets_name", "account_id", "region", "name", unique=True),
    Index("ux_sm_secrets_arn", "arn", unique=True),
    Index("ix_sm_secrets_deletion_due", "deletion_due_at"),
    Index("ix_sm_secrets_primary", "primary_secret_id"),  # a primary's replicas, read on every write
    # ListSecrets' default order, so a page is an index range scan whatever the store's size.
    Index("ix_sm_secrets_listing", "account_id", "region", "created_at", "secret_id"),
)

SM_NO_VALUE = "none"
sm_versions = Table(
    "sm_versions",
    metadata,
    Column("secret_id", String(36), ForeignKey("sm_secrets.secret_id", ondelete="CASCADE"), primary_key=True),
    Column("version_id", String(64), primary_key=True),
    Column("created_at", Float, nullable=False),
    Column("last_accessed_at", Float),
    # "string", "binary", or SM_NO_VALUE for a rotation's version before it has a value
    Column("value_kind", String(8), nullable=False),
    Column("kms_key_arn", String(2048), nullable=False),
    Column("encrypted_data_key", LargeBinary, nullable=False),
    Column("encrypted_value", LargeBinary, nullable=False),
    Index("ix_sm_versions_created", "secret_id", "created_at"),
)

sm_stages = Table(
    "sm_stages",
    metadata,
    Column("secret_id", String(36), ForeignKey("sm_secrets.secret_id", ondelete="CASCADE"), primary_key=True),
    Column("stage", String(256), primary_key=True),
    Column("version_id", String(64), nullable=False),
)

sm_tags = Table(
    "sm_tags",
    metadata,
    Column("secret_id", String(36), ForeignKey("sm_secrets.secret_id", ondelete="CASCADE"), primary_key=True),
    Column("tag_key", String(128), primary_key=True),
    Column("tag_value", String(256), nullable=False),
    Column("position", Integer, nullable=False),
)

# -- SSM Parameter Store --------------------------------------------------------------------------

ssm_parameters = Table(
    "ssm_parameters",
    metadata,
    Column("param_id", String(36), primary_key=True),
    Column("account_id", String(12), nullable=False),
    Column("region", String(32), nullable=False),
    Column("name", String(2048), nullable=False),
    Column("parent_path", String(2048), nullable=False),
    Column("version", Integer, nullable=False),
    Column("tier", String(32), nullable=False),
    Column("policies", Text),
    Column("expires_at", Float),
    Index("ux_ssm_parameters_name", "account_id", "region", "name", unique=True),
    Index("ix_ssm_parameters_parent", "account_id", "region", "parent_path", "name"),
    Index("ix_ssm_parameters_expires", "expires_at"),
)

ssm_parameter_versions = Table(
    "ssm_parameter_versions",
    metadata,
    Column(
        "param_id", String(36), ForeignKey("ssm_parameters.param_id", ondelete="CASCADE"), primary_key=True
    ),
    Column("version", Integer, primary_key=True),
    Column("param_type", String(16), nullable=False),
    Column("value", Text),
    Column("ciphertext", LargeBinary),
    Column("key_id", String(2048)),
    Column("description", Text),
    Column("allowed_pattern", String(1024)),
    Column("data_type", String(128), nullable=False),
    Column("tier", String(32), nullable=False),
    Column("policies", Text),
    Column("modified_at", Float, nullable=False),
    Column("modified_by", String(2048), nullable=False),
)

ssm_labels = Table(
    "ssm_labels",
    metadata,
    Column(
        "param_id", String(36), ForeignKey("ssm_parameters.param_id", ondelete="CASCADE"), primary_key=True
    ),
    Column("label", String(100), primary_key=True),
    Column("version", Integer, nullable=False),
)

ssm_tags = Table(
    "ssm_tags",
    metadata,
    Column(
        "param_id", String(36), ForeignKey("ssm_parameters.param_id", ondelete="CASCADE"), primary_key=True
    ),
    Column("tag_key", String(128), primary_key=True),
    Column("tag_value", String(256), nullable=False),
)

# -- IAM and STS ----------------------------------------------------------------------------------

iam_principals = Table(
    "iam_principals",
    metadata,
    # Users, groups and roles share one table: kind is "user", "group" or "role".
    Column("principal_id", String(32), primary_key=True),
    Column("account_id", String(12), nullable=False),
    Column("kind", String(8), nullable=False),
    Column("name", String(128), nullable=False),
    Column("name_lower", String(128), nullable=False),
    Column("path", String(512), nullable=False),
    Column("arn", String(2048), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("description", Text),
    Column("assume_role_policy", Text),
    Column("max_session_duration", Integer),
    Column("permissions_boundary", String(2048)),
    Index("ux_iam_principals_name", "account_id", "kind", "name_lower", unique=True),
)

iam_group_members = Table(
    "iam_group_members",
    metadata,
    Column("group_id", String(32), primary_key=True),
    Column("user_id", String(32), primary_key=True),
    Index("ix_iam_group_members_user", "user_id"),
)

iam_inline_policies = Table(
    "iam_inline_policies",
    metadata,
    Column("owner_id", String(32), primary_key=True),
    Column("policy_name", String(128), primary_key=True),
    Column("document", Text, nullable=False),
)

iam_managed_policies = Table(
    "iam_managed_policies",
    metadata,
    Column("arn", String(2048), primary_key=True),
    Column("policy_id", String(32), nullable=False),
    Column("account_id", String(12), nullable=False),
    Column("name", String(128), nullable=False),
    Column("path", String(512), nullable=False),
    Column("description", Text),
    Column("default_version", String(16), nullable=False),
    Column("next_version", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_iam_managed_policies_account", "account_id", "name"),
)

iam_policy_versions = Table(
    "iam_policy_versions",
    metadata,
    Column("policy_arn", String(2048), primary_key=True),
    Column("version_id", String(16), primary_key=True),
    Column("document", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)

iam_attachments = Table(
    "iam_attachments",
    metadata,
    Column("owner_id", String(32), primary_key=True),
    Column("policy_arn", String(2048), primary_key=True),
    Index("ix_iam_attachments_policy", "policy_arn"),
)

iam_tags = Table(
    "iam_tags",
    metadata,
    Column("owner_id", String(32), primary_key=True),
    Column("tag_key", String(128), primary_key=True),
    Column("tag_value", String(256), nullable=False),
)

sts_sessions = Table(
    "sts_sessions",
    metadata,
    Column("access_key_id", String(128), primary_key=True),
    Column("account_id", String(12), nullable=False),
    Column("secret_sealed", LargeBinary, nullable=False),
    Column("token_digest", String(64), nullable=False),
    Column("role_id", String(32), nullable=False),
    Column("role_arn", String(2048), nullable=False),
    Column("session_name", String(64), nullable=False),
    Column("session_policy", Text),
    Column("session_tags", Text),
    Column("source_identity", String(64)),
    # JSON list of the keys of session_tags that pass on to later sessions of a role chain.
    Column("transitive_tag_keys", Text),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Index("ix_sts_sessions_expires", "expires_at"),
)

# -- Web console ----------------------------------------------------------------------------------

# A signed-in browser (khoa.webconsole.sessions): the cookie's token is kept only as a digest; the
# credentials the console signs its API calls with are sealed, bound to that digest.
console_sessions = Table(
    "console_sessions",
    metadata,
    Column("digest", String(64), primary_key=True),
    Column("account_id", String(12), nullable=False),
    Column("principal_arn", String(2048), nullable=False),
    Column("access_key_id", String(128), nullable=False),
    Column("secret_sealed", LargeBinary, nullable=False),
    Column("token_sealed", LargeBinary),
    Column("region", String(32), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("last_seen_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Index("ix_console_sessions_expires", "expires_at"),
)

# A single-use sign-in link minted by `khoa console-link` for a role (token kept only as a digest).
console_links = Table(
    "console_links",
    metadata,
    Column("digest", String(64), primary_key=True),
    Column("account_id", String(12), nullable=False),
    Column("role_arn", String(2048), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("redeemed_at", Float),
    Index("ix_console_links_expires", "expires_at"),
)

# -- Audit trail ----------------------------------------------------------------------------------

audit_events = Table(
    "audit_events",
    metadata,
    # 64-bit sequence on PostgreSQL; INTEGER (the rowid alias, which autoincrements) on SQLite.
    Column("seq", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False, unique=True),
    Column("account_id", String(12), nullable=False),
    Column("region", String(32), nullable=False),
    Column("event_time", Float, nullable=False),
    Column("event_source", String(64), nullable=False),
    Column("event_name", String(128), nullable=False),
    Column("username", String(256)),
    Column("access_key_id", String(128)),
    Column("resource_names", Text),
    Column("resource_types", Text),
    Column("read_only", Boolean, nullable=False),
    Column("error_code", String(128)),
    Column("record", Text, nullable=False),
    Column("log_file", String(512)),  # set only on rows delivered before revision 0011
    # Copies of record fields the alert rules read for every event (NULL in rows older than 0011):
    # eventType, the acting principal's ARN (the role for an assumed-role session; NULL when no
    # principal is known) and sourceIPAddress.
    Column("event_type", String(32)),
    Column("principal_arn", String(2048)),
    Column("source_ip", String(256)),
    # LookupEvents pages newest first in (event_time, seq) order within an account and Region;
    # queries by account and time use the prefix.
    Index("ix_audit_events_lookup", "account_id", "event_time", "region", "seq"),
)

# How far each follower of the trail has come, one row each: "trail", log file delivery (every event
# with seq <= delivered_seq is in a log file) and "usage", the last-use tables below (every event
# with seq <= delivered_seq is counted in them), except the sequence numbers in ``held`` (JSON
# [[seq, give-up time], ...]): gaps, numbers handed out to transactions that had not committed when
# the follower passed them (PostgreSQL sequences do not commit in order), read when they appear and
# forgotten once given up. Rows delivered before revision 0011 carry their file in
# audit_events.log_file instead.
audit_delivery = Table(
    "audit_delivery",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("delivered_seq", BigInteger, nullable=False),
    Column("held", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# The newest successful cryptographic use of each KMS key (GetKeyLastUsage, khoa review), the
# newest call signed with each long-term access key (GetAccessKeyLastUsed) and each principal's
# newest successful secret read or key use (khoa review's unused access), kept by the leader from
# the trail (khoa.audit.usage; its cursor is audit_delivery's "usage" row): one row per key, so the
# answer costs one lookup however long the trail, and outlives the trail's retention.
audit_key_usage = Table(
    "audit_key_usage",
    metadata,
    Column("key_arn", String(256), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("event_time", Float, nullable=False),
    Column("operation", String(128), nullable=False),
    Column("event_id", String(36), nullable=False),
    Column("request_id", String(128)),
)
audit_access_key_usage = Table(
    "audit_access_key_usage",
    metadata,
    Column("account_id", String(12), primary_key=True),
    Column("access_key_id", String(128), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("event_time", Float, nullable=False),
    Column("event_source", String(64), nullable=False),
    Column("region", String(32), nullable=False),
)

audit_principal_usage = Table(
    "audit_principal_usage",
    metadata,
    Column("principal_arn", String(2048), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("event_time", Float, nullable=False),
)

# The trail's RSA-2048 signing keys (CloudTrail's per-Region digest keys): the public key as PKCS#1
# DER, the private key sealed by the barrier bound to its fingerprint.
audit_trail_keys = Table(
    "audit_trail_keys",
    metadata,
    Column("fingerprint", String(32), primary_key=True),
    Column("public_key", LargeBinary, nullable=False),
    Column("private_key_sealed", LargeBinary, nullable=False),
    Column("valid_from", Float, nullable=False),
    Column("valid_to", Float),
)

# Digest files written, one chain per (account, Region); position is the 1-based place in its chain.
audit_digests = Table(
    "audit_digests",
    metadata,
    Column("digest_id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    Column("account_id", String(12), nullable=False),
    Column("region", String(32), nullable=False),
    Column("position", Integer, nullable=False),
    Column("s3_object", String(512), nullable=False, unique=True),
    Column("start_time", Float, nullable=False),
    Column("end_time", Float, nullable=False),
    Column("hash_value", String(64), nullable=False),
    Column("signature", Text, nullable=False),
    Column("fingerprint", String(32), nullable=False),
    Column("log_file_count", Integer, nullable=False),
    # The digest file as delivered (gzipped); NULL for digests written before revision 0012.
    Column("content", _AUDIT_FILE),
    Index("ux_audit_digests_chain", "account_id", "region", "position", unique=True),
)

# Log files delivered; digest_id is NULL until a digest lists the file.
audit_log_files = Table(
    "audit_log_files",
    metadata,
    Column("file_id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    Column("s3_object", String(512), nullable=False, unique=True),
    Column("account_id", String(12), nullable=False),
    Column("region", String(32), nullable=False),
    Column("hash_value", String(64), nullable=False),
    Column("oldest_event_time", Float, nullable=False),
    Column("newest_event_time", Float, nullable=False),
    Column("event_count", Integer, nullable=False),
    Column("delivered_at", Float, nullable=False),
    Column("digest_id", BigInteger().with_variant(Integer(), "sqlite")),
    # The log file as delivered (gzipped); NULL for files delivered before revision 0012.
    Column("content", _AUDIT_FILE),
    Index("ix_audit_log_files_digest", "digest_id", "file_id"),
)

# -- Rotation engine ------------------------------------------------------------------------------

rotation_functions = Table(
    "rotation_functions",
    metadata,
    Column("account_id", String(12), primary_key=True),
    Column("region", String(32), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("target", String(2048), nullable=False),
    Column("role_arn", String(2048)),
    Column("secret_sealed", LargeBinary),
    Column("timeout_seconds", Float, nullable=False),
    Column("created_at", Float, nullable=False),
)

rotation_runs = Table(
    "rotation_runs",
    metadata,
    Column("secret_id", String(36), primary_key=True),
    Column("token", String(64), nullable=False),
    Column("step", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", Float, nullable=False),
    Column("last_error", Text),
    Column("started_at", Float, nullable=False),
    Column("owner", String(64)),
    Column("owner_expires_at", Float),
)

# -- Secret change events -------------------------------------------------------------------------

change_events = Table(
    "change_events",
    metadata,
    Column("seq", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    Column("account_id", String(12), nullable=False),
    Column("region", String(32), nullable=False),
    Column("secret_id", String(36), nullable=False),
    Column("secret_arn", String(1024), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("detail", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Index("ix_change_events_secret", "secret_id", "seq"),
)

webhooks = Table(
    "webhooks",
    metadata,
    Column("webhook_id", String(36), primary_key=True),
    Column("account_id", String(12), nullable=False),
    Column("url", String(2048), nullable=False),
    Column("secret_sealed", LargeBinary),
    Column("secret_prefix", String(1024), nullable=False),
    Column("delivered_seq", BigInteger, nullable=False),
    Column("created_at", Float, nullable=False),
)

# -- Alerts ---------------------------------------------------------------------------------------

# Raised alerts, also the outbox of their AlertRaised audit events and notifications: outbox_due_at
# is set while the audit event or a delivery is outstanding, NULL once all are done (or given up).
alerts = Table(
    "alerts",
    metadata,
    Column("alert_id", String(36), primary_key=True),
    Column("rule", String(64), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("account_id", String(12), nullable=False),
    Column("region", String(32), nullable=False),
    Column("raised_at", Float, nullable=False),
    Column("summary", Text, nullable=False),
    Column("details", Text, nullable=False),
    Column("dedupe_key", String(64), nullable=False),  # SHA-256 hex of the rule's dedupe key
    Column("audit_event_id", String(36), nullable=False),
    Column("audited", Boolean, nullable=False),
    Column("webhook_status", String(16)),
    Column("slack_status", String(16)),
    Column("delivery_attempts", Integer, nullable=False),
    Column("outbox_due_at", Float),
    Index("ix_alerts_raised", "raised_at"),
    Index("ix_alerts_dedupe", "rule", "dedupe_key", "raised_at"),
    Index("ix_alerts_outbox", "outbox_due_at"),
)

# (secret, principal) pairs known to read a secret; pair_id and secret_key are SHA-256 hex digests.
alert_seen_principals = Table(
    "alert_seen_principals",
    metadata,
    Column("pair_id", String(64), primary_key=True),
    Column("secret_key", String(64), nullable=False),
    Column("secret_arn", Text, nullable=False),
    Column("principal", Text, nullable=False),
    Column("reason", String(16), nullable=False),
    Column("first_seen_at", Float, nullable=False),
    Index("ix_alert_seen_principals_secret", "secret_key"),
)

# The alert engine's state (the audit cursor), one JSON document per name.
alert_state = Table(
    "alert_state",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# -- Leak detection -------------------------------------------------------------------------------

# Keyed fingerprints (HMAC-SHA256, khoa.crypto.fingerprint) of every value Khoa holds or held, for
# khoa-leaks CheckLeakedValues: never a value. row_id is the SHA-256 hex of what the row is of (type,
# resource, version, field, fingerprint), so writing a row twice (a write's hook and the backfill) is
# harmless. Rows outlive their resource (a deleted key, a pruned version) and then read as former;
# invalid_since is when the value stopped working (labels moved away, a newer parameter version, the
# key deactivated or deleted), expires_at an STS credential's end. region is "" for IAM and STS.
leak_fingerprints = Table(
    "leak_fingerprints",
    metadata,
    Column("row_id", String(64), primary_key=True),
    Column("account_id", String(12), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("region", String(32), nullable=False),
    Column("resource_type", String(16), nullable=False),  # secret, parameter, access-key, sts-credential
    Column("resource_id", String(128), nullable=False),  # secret_id, param_id or access key id
    Column("resource_arn", String(2048), nullable=False),
    Column("version_id", String(64)),
    Column("field", String(256)),
    Column("access_key_id", String(128)),
    Column("created_at", Float, nullable=False),
    Column("invalid_since", Float),
    Column("expires_at", Float),
    Index("ix_leak_fingerprints_match", "account_id", "fingerprint"),
    Index("ix_leak_fingerprints_resource", "resource_id", "version_id"),
)

# khoa-leaks' per-principal token buckets (one row per principal: key is the SHA-256 hex of its ARN),
# shared by every process and node so the rate is the principal's, whichever process answers.
leak_rate_buckets = Table(
    "leak_rate_buckets",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("tokens", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# -- Organizations ----------------------------------------------------------------------------------

# AWS Organizations (services/organizations): an organization, its member accounts, its policies
# (service control policies) and where they are attached. One organization per management account; an
# account belongs to at most one. scp_enabled is the root's SERVICE_CONTROL_POLICY policy type.
org_organizations = Table(
    "org_organizations",
    metadata,
    Column("org_id", String(34), primary_key=True),
    Column("management_account_id", String(12), nullable=False, unique=True),
    Column("root_id", String(32), nullable=False),
    Column("feature_set", String(32), nullable=False),
    Column("scp_enabled", Boolean, nullable=False),
    Column("created_at", Float, nullable=False),
)

org_accounts = Table(
    "org_accounts",
    metadata,
    Column("account_id", String(12), primary_key=True),
    Column("org_id", String(34), nullable=False),
    Column("joined_method", String(16), nullable=False),  # INVITED, CREATED
    Column("joined_at", Float, nullable=False),
    Index("ix_org_accounts_org", "org_id"),
)

org_policies = Table(
    "org_policies",
    metadata,
    Column("org_id", String(34), primary_key=True),
    Column("policy_id", String(130), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("description", String(512), nullable=False),
    Column("policy_type", String(32), nullable=False),
    Column("content", Text, nullable=False),
    Column("aws_managed", Boolean, nullable=False),
    Column("created_at", Float, nullable=False),
)

org_attachments = Table(
    "org_attachments",
    metadata,
    Column("org_id", String(34), primary_key=True),
    Column("policy_id", String(130), primary_key=True),
    Column("target_id", String(100), primary_key=True),
    Index("ix_org_attachments_target", "org_id", "target_id"),
)

# -- KMS custom key stores (external key stores, XKS) ---------------------------------------------

# One row per custom key store. The XKS proxy's SigV4 secret is sealed by the barrier (binding: the
# store id); the access key id is not a secret (it is shown by DescribeCustomKeyStores).
kms_custom_key_stores = Table(
    "kms_custom_key_stores",
    metadata,
    Column("store_id", String(64), primary_key=True),
    Column("account_id", String(12), nullable=False),
    Column("region", String(32), nullable=False),
    Column("name", String(256), nullable=False),
    Column("store_type", String(32), nullable=False),
    Column("connection_state", String(16), nullable=False),
    Column("connection_error_code", String(64)),
    Column("endpoint", String(256), nullable=False),
    Column("uri_path", String(128), nullable=False),
    Column("connectivity", String(32), nullable=False),
    Column("access_key_id", String(128), nullable=False),
    Column("secret_sealed", LargeBinary, nullable=False),
    Column("created_at", Float, nullable=False),
    Index("ix_kms_custom_key_stores_name", "account_id", "region", "name", unique=True),
)

# The external key behind each KMS key of an external key store (one KMS key per external key).
kms_xks_keys = Table(
    "kms_xks_keys",
    metadata,
    Column("key_id", String(36), ForeignKey("kms_keys.key_id", ondelete="CASCADE"), primary_key=True),
    Column("store_id", String(64), nullable=False),
    Column("xks_key_id", String(128), nullable=False),
    Index("ix_kms_xks_keys_external", "store_id", "xks_key_id", unique=True),
)

# -- Access Analyzer --------------------------------------------------------------------------------

# IAM Access Analyzer (services/accessanalyzer): external-access analyzers (ACCOUNT or ORGANIZATION
# zone of trust) and their findings. Findings are recomputed from the current key policies, grants and
# secret policies whenever they are read; a row keeps a finding's id, its status (ACTIVE, ARCHIVED,
# RESOLVED) and its times, and details is the finding's JSON (principal, action, condition, isPublic).
aa_analyzers = Table(
    "aa_analyzers",
    metadata,
    Column("arn", String(1024), primary_key=True),
    Column("account_id", String(12), nullable=False),
    Column("region", String(32), nullable=False),
    Column("name", String(255), nullable=False),
    Column("type", String(32), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("tags", Text, nullable=False),
    Column("archive_rules", Text, nullable=False),
    Index("ux_aa_analyzers_name", "account_id", "region", "name", unique=True),
)

aa_findings = Table(
    "aa_findings",
    metadata,
    Column("analyzer_arn", String(1024), primary_key=True),
    Column("finding_id", String(36), primary_key=True),
    Column("resource_arn", String(2048), nullable=False),
    Column("resource_type", String(64), nullable=False),
    Column("owner_account", String(12), nullable=False),
    Column("status", String(16), nullable=False),
    Column("details", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("analyzed_at", Float, nullable=False),
)
