"""STAND-IN for the registry writer middleware (branch issue4-worker), for tests only.

Until ``celery ... worker`` and its middleware land, nothing writes a
plain ``dramatiq`` worker into the node registry.  This helper does it
from the test, for one real worker subprocess: while the process lives
it beats every :data:`INTERVAL_S` with the node's info and, as active
tasks, the messages that really sit in the worker's in-flight lists in
Redis.  When the process dies the beats stop, as the real writer's
would.  At merge the lead replaces the calls of
:func:`beat_for_dramatiq_worker` with the real writer (``celery worker
-n NAME``) and deletes this module.
"""

from __future__ import annotations

import json
import subprocess
import threading

import redis

from actors import keys, registry

#: Seconds between the stand-in's beats (shorter than the registry's 2 s).
INTERVAL_S = 0.5


def _inflight_tasks(client: redis.Redis, broker_ids: set[str], node: str, pid: int) -> list[dict]:
    tasks = []
    for broker_id in broker_ids:
        for inflight_key in client.hkeys(keys.inflight_index_key(broker_id)):
            for raw in client.lrange(inflight_key, 0, -1):
                message = json.loads(raw)
                tasks.append({
                    "id": message["message_id"], "name": f"tasks.{message['actor_name']}",
                    "args": message["args"], "kwargs": message["kwargs"], "type": f"tasks.{message['actor_name']}",
                    "hostname": node, "time_start": None, "acknowledged": True,
                    "delivery_info": {"exchange": "", "routing_key": message["queue_name"],
                                      "priority": -message["priority"], "redelivered": False},
                    "worker_pid": pid,
                })
    return tasks


def beat_for_dramatiq_worker(client: redis.Redis, node: str, proc: subprocess.Popen, broker_ids: set[str],
                             *, queues: tuple[str, ...] = ("default", "state")) -> threading.Thread:
    """Keep ``node`` alive in the registry while ``proc`` (a ``dramatiq`` worker) runs.

    ``broker_ids`` are the worker's processes' ids in ``dramatiq:heartbeats``.
    """
    info = {"name": node, "hostname": node.split("@", 1)[-1], "pid": proc.pid, "pool": "prefork",
            "concurrency": 1, "queues": list(queues), "started_at": None, "sw_ident": "dramatiq",
            "prefetch_count": 2, "broker": None}

    def run() -> None:
        stopped = threading.Event()
        while proc.poll() is None:
            active = _inflight_tasks(client, broker_ids, node, proc.pid)
            registry.beat(client, node, info=info, processes={proc.pid: {"active": active, "reserved": []}})
            stopped.wait(INTERVAL_S)

    thread = threading.Thread(target=run, name=f"stand-in-writer-{node}", daemon=True)
    thread.start()
    return thread
