"""update_message_status_task: record a delivery status Meta reported."""

from __future__ import annotations

from actors import runtime
from actors.task_options import runbook_task

__all__ = ["update_message_status_task"]


@runbook_task(queue="default", priority=1)
def update_message_status_task(status: dict) -> str | None:
    """Store ``status`` (one ``value.statuses[]`` entry); returns the message's status."""
    # The domain (SQLAlchemy, LangGraph) loads at the first run, not at import: see actors.runtime.
    runtime.load_domain()
    from app.db.session import session_scope
    from app.status import StatusUpdate, record_status

    update = StatusUpdate.parse(status)
    with session_scope(runtime.get().sessions) as session:
        return record_status(session, update)
