"""Database layer: the repository, migrations and the embedded dev PostgreSQL."""
