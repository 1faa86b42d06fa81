"""The systems the benchmarks compare, with equivalent worker shapes.

======================  ==================================================================
``ours``                this project: ``dramatiq bench.noop_app -p 2 -t 8`` (its broker and
                        middleware, the same actors ``celery -A tasks worker`` runs)
``dramatiq``            stock Dramatiq: ``dramatiq bench.stock_dramatiq_app -p 2 -t 8``
                        (``dramatiq.brokers.redis.RedisBroker``)
``celery-prefork``      Celery 5.7: ``celery -A bench.celery_app worker -P prefork -c 2``
``celery-threads``      Celery 5.7: ``celery -A bench.celery_app worker -P threads -c 16``
``ours-prefork``        (on request) this project through its facade, Celery's shapes:
``ours-threads``        ``celery -A tasks worker -P prefork -c 2`` / ``-P threads -c 16``
======================  ==================================================================

Each system's producer side (:class:`Client`) is imported only in the
process that benchmarks that system (``bench.run_one``), so no system's
imports or connections weigh on another's numbers.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from bench.procs import free_port

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

#: The Redis lists every system's stamping tasks push their latencies (ms) to.
LATENCY_KEY = "bench:latency_ms"
STATE_LATENCY_KEY = "bench:state_latency_ms"


@dataclass(frozen=True)
class System:
    name: str
    label: str
    family: str  # ours | dramatiq | celery
    worker: tuple[str, ...]
    #: The same system as a prefork pool of 2 single-thread children, for
    #: ``--max-tasks-per-child`` (None: the system has no such option).
    prefork: tuple[str, ...] | None

    def env(self, redis_url: str) -> dict[str, str]:
        """The environment of this system's worker and producer processes."""
        env = {**os.environ, "BENCH_REDIS_URL": redis_url, "REDIS_URI": redis_url,
               "PYTHONPATH": str(ROOT)}
        env.pop("GOOGLE_API_KEY", None)
        if self.family == "ours":
            env["WORKER_EXTRA_MODULES"] = "bench.noop_app"
            # Its metrics exposition (a process of the worker's tree under the plain dramatiq CLI)
            # on a port of its own: on the default one, taken by another worker on the machine, it
            # would exit at once and drop out of the memory figures.
            env["WORKER_METRICS_PORT"] = str(free_port())
        return env


_FACADE = (PY, "-m", "facade", "-A", "tasks", "worker", "-l", "info", "-Q", "default,state")
_CELERY = (PY, "-m", "celery", "-A", "bench.celery_app", "worker", "-l", "info", "-Q", "celery,state")

SYSTEMS: dict[str, System] = {s.name: s for s in (
    System("ours", "this project (2 proc x 8 thr)", "ours",
           (PY, "-m", "dramatiq", "bench.noop_app", "--processes", "2", "--threads", "8"),
           (*_FACADE, "-P", "prefork", "-c", "2")),
    System("dramatiq", "stock Dramatiq (2 proc x 8 thr)", "dramatiq",
           (PY, "-m", "dramatiq", "bench.stock_dramatiq_app", "--processes", "2", "--threads", "8"),
           None),
    System("celery-prefork", "Celery prefork -c 2", "celery", (*_CELERY, "-P", "prefork", "-c", "2"),
           (*_CELERY, "-P", "prefork", "-c", "2")),
    System("celery-threads", "Celery threads -c 16", "celery", (*_CELERY, "-P", "threads", "-c", "16"), None),
    System("ours-prefork", "this project, facade prefork -c 2", "ours", (*_FACADE, "-P", "prefork", "-c", "2"),
           (*_FACADE, "-P", "prefork", "-c", "2")),
    System("ours-threads", "this project, facade threads -c 16", "ours", (*_FACADE, "-P", "threads", "-c", "16"),
           None),
)}


class Client:
    """The producer side of one system: send the four benchmark tasks and count what is left."""

    #: The Redis list of waiting ``default`` messages.
    waiting_key = "celery"
    batch_supported = False

    def __init__(self, redis_url: str) -> None:
        self.redis = redis.Redis.from_url(redis_url)

    def send(self, task: str, arg: Any) -> None:
        raise NotImplementedError

    def send_batch(self, task: str, args: list[Any]) -> None:
        raise NotImplementedError

    def waiting(self) -> int:
        return int(self.redis.llen(self.waiting_key))

    def pending(self) -> int:
        """Messages of the ``default`` queue waiting or held by a worker."""
        raise NotImplementedError


class OursClient(Client):
    batch_supported = True

    def __init__(self, redis_url: str) -> None:
        super().__init__(redis_url)
        import actors
        from actors.batch import send_many
        from bench import noop_app

        self.broker = actors.broker
        self.tasks = {name: getattr(noop_app, name) for name in
                      ("bench_noop", "bench_stamp", "bench_state_stamp", "bench_bulk")}
        self._send_many = send_many

    def send(self, task: str, arg: Any) -> None:
        self.tasks[task].send(arg)

    def send_batch(self, task: str, args: list[Any]) -> None:
        """The broker's batch send (:func:`actors.batch.send_many`): one Lua call, one round trip."""
        self._send_many(self.tasks[task], [(arg,) for arg in args])

    def pending(self) -> int:
        sizes = self.broker.queue_sizes("default")
        return int(sizes["waiting"] + sizes["inflight"] + sizes["delayed"])


class StockDramatiqClient(Client):
    waiting_key = "dramatiq:default"

    def __init__(self, redis_url: str) -> None:
        super().__init__(redis_url)
        from bench import stock_dramatiq_app as app

        self.tasks = {name: getattr(app, name) for name in
                      ("bench_noop", "bench_stamp", "bench_state_stamp", "bench_bulk")}

    def send(self, task: str, arg: Any) -> None:
        self.tasks[task].send(arg)

    def pending(self) -> int:
        # A message's body stays in this hash until it is acked.
        return int(self.redis.hlen("dramatiq:default.msgs"))


class CeleryClient(Client):
    def __init__(self, redis_url: str) -> None:
        super().__init__(redis_url)
        from bench import celery_app as app

        self.tasks = {name: getattr(app, name) for name in
                      ("bench_noop", "bench_stamp", "bench_state_stamp", "bench_bulk")}

    def send(self, task: str, arg: Any) -> None:
        self.tasks[task].delay(arg)

    def pending(self) -> int:
        # kombu keeps a delivered message in the ``unacked`` hash until it is acked.
        return int(self.redis.llen("celery")) + int(self.redis.hlen("unacked"))


def client_for(system: System, redis_url: str) -> Client:
    """The producer of ``system``; call in a process of its own, with ``system.env`` set."""
    cls = {"ours": OursClient, "dramatiq": StockDramatiqClient, "celery": CeleryClient}[system.family]
    return cls(redis_url)
