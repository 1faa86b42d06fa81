"""The worker's start-up banner, laid out as Celery 5 prints it."""

from __future__ import annotations

import platform
from datetime import datetime

from actors import keys
from actors.worker_spec import WorkerSpec

__all__ = ["banner", "QUEUE_FORMAT"]

#: Celery's queue line (celery/app/amqp.py), our list key as ``key``.
QUEUE_FORMAT = ".> {name:<16} exchange={exchange}({type}) key={routing_key}"

_ART = [
    " -------------- ",
    "--- ***** ----- ",
    "-- ******* ---- ",
    "- *** --- * --- ",
    "- ** ---------- ",
    "- ** ---------- ",
    "- ** ---------- ",
    "- ** ---------- ",
    "- *** --- * --- ",
    "-- ******* ---- ",
    "--- ***** ----- ",
    " -------------- ",
]


def banner(spec: WorkerSpec, *, app: str, queue_names: list[str], task_names: list[str] | None,
           dramatiq_version: str) -> str:
    """The banner; ``task_names`` None leaves out ``[tasks]`` (log level above INFO)."""
    events = "ON" if spec.task_events else "OFF (enable -E to monitor tasks in this worker)"
    right = [
        f"{spec.node_name} v{spec.sw_ver} (dramatiq {dramatiq_version})",
        "",
        f"{platform.platform()} {datetime.now():%Y-%m-%d %H:%M:%S}",
        "",
        "[config]",
        f".> app:         {app}",
        f".> transport:   {spec.broker_shown}",
        ".> results:     disabled://",
        f".> concurrency: {spec.concurrency} ({spec.pool})",
        f".> task events: {events}",
        "",
        "[queues]",
    ]
    lines = [left + text for left, text in zip(_ART, right, strict=True)]
    for name in sorted(queue_names):
        lines.append(" " * 16 + QUEUE_FORMAT.format(name=name, exchange="celery", type="direct",
                                                    routing_key=keys.queue_key(name)))
    if task_names is not None:
        lines += ["", "[tasks]"] + [f"  . {name}" for name in sorted(task_names)]
    return "\n".join(lines) + "\n"
