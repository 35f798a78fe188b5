"""Storage: one SQLAlchemy Core schema for SQLite and PostgreSQL, migrated by Alembic."""
