"""The Dramatiq actors of the runbook's five tasks, and their broker.

Importing this package builds the broker from the environment, makes it
Dramatiq's global broker, and only then declares the actors on it, so
``dramatiq actors`` and ``celery -A tasks worker`` run the same thing.
"""

from __future__ import annotations

import dramatiq

from actors.setup import build_broker
from app.config import Config

#: The configuration every actor of this process runs with.
config = Config.from_env()
#: The process's broker.
broker = build_broker(config)
dramatiq.set_broker(broker)

from actors.check_buffer_task import check_buffer_task  # noqa: E402
from actors.process_message_task import process_message_task  # noqa: E402
from actors.sync_operator_message_to_graph_task import sync_operator_message_to_graph_task  # noqa: E402
from actors.update_langgraph_state_task import update_langgraph_state_task  # noqa: E402
from actors.update_message_status_task import update_message_status_task  # noqa: E402

#: The runbook's tasks, by name.
TASKS = {
    a.actor_name: a
    for a in (
        update_langgraph_state_task,
        sync_operator_message_to_graph_task,
        process_message_task,
        check_buffer_task,
        update_message_status_task,
    )
}

__all__ = [
    "broker",
    "config",
    "TASKS",
    "update_langgraph_state_task",
    "sync_operator_message_to_graph_task",
    "process_message_task",
    "check_buffer_task",
    "update_message_status_task",
]
