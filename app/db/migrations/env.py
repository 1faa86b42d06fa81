"""Alembic's environment: runs on the connection :mod:`app.db.migrate` hands over.

There is no alembic.ini: :func:`app.db.migrate.alembic_config` builds
the configuration in code, so migrations run from any directory.
"""

from __future__ import annotations

from alembic import context

from app.db.migrate import include_object
from app.db.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only through app.db.migrate
    raise RuntimeError("run migrations with `assistant migrate` (app.db.migrate.upgrade)")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    include_object=include_object,
    # SQLite cannot ALTER most things; batch mode copies the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
