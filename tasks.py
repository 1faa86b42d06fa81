"""What ``celery -A tasks`` names: the runbook's five tasks, re-exported."""

from actors import (  # noqa: F401
    TASKS,
    broker,
    check_buffer_task,
    process_message_task,
    sync_operator_message_to_graph_task,
    update_langgraph_state_task,
    update_message_status_task,
)

__all__ = [
    "broker",
    "TASKS",
    "update_langgraph_state_task",
    "sync_operator_message_to_graph_task",
    "process_message_task",
    "check_buffer_task",
    "update_message_status_task",
]
