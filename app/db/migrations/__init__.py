"""Alembic migrations of the application's tables, shipped inside the package."""
