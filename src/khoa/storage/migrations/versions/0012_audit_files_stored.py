"""audit files stored in the database

Each delivered log file and digest file is kept in its row as well as under the delivering node's
audit directory. Several nodes over one database take turns delivering, each to its own disk, so the
complete trail - what ``khoa audit verify`` checks and ``khoa audit export`` writes out - is the
database's copy; a node's directory holds the files that node delivered. Files delivered before this
revision exist only on disk (``content`` stays NULL, and verify reads them there).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 08:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_FILE = sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")


def upgrade() -> None:
    for table in ("audit_log_files", "audit_digests"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("content", _FILE, nullable=True))


def downgrade() -> None:
    for table in ("audit_log_files", "audit_digests"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("content")
