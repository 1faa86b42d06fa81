"""``/metrics``: Flower's metric names plus the queues' depths, in Prometheus's text format.

Every value is read from Redis at scrape time (no in-process state), so
the counters are the workers' and stay monotonic across monitor
restarts, and two monitors export the same numbers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import falcon
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from actors import registry, task_history
from actors.names import CELERY_APP
from actors.queue_samples import queue_stats

if TYPE_CHECKING:
    from facade.monitor.app import Sources

__all__ = ["MetricsResource", "MonitorCollector"]

#: ``assistant_queue_messages``'s states, from the broker's counts.
STATES = ("waiting", "delayed", "inflight", "dead")


class MonitorCollector:
    """A prometheus_client collector reading the monitor's sources on each scrape."""

    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def collect(self):
        client = self.sources.client
        events = CounterMetricFamily("flower_events", "Number of task events recorded by the workers.",
                                     labels=["task", "type", "worker"])
        counts = task_history.event_counts(client)
        for (task, kind, worker), count in sorted(counts.items()):
            events.add_metric([task, kind, worker], count)
        yield events

        runtime = HistogramMetricFamily("flower_task_runtime_seconds", "Task runtime in seconds.",
                                        labels=["task", "worker"])
        for (task, worker), hist in sorted(task_history.runtime_histograms(client).items()):
            runtime.add_metric([task, worker], hist.buckets, hist.sum_s)
        yield runtime

        nodes = registry.live_nodes(client)
        online = GaugeMetricFamily("flower_worker_online", "Worker online status (1 online, 0 seen but gone).",
                                   labels=["worker"])
        executing = GaugeMetricFamily("flower_worker_number_of_currently_executing_tasks",
                                      "Number of tasks currently executing on a worker.", labels=["worker"])
        live = {n.name for n in nodes}
        # 0 only for workers that recorded an event within the history's age bound
        seen = task_history.recent_workers(client)
        for name in sorted(live | seen):
            online.add_metric([name], 1 if name in live else 0)
        prefetched = GaugeMetricFamily("flower_worker_prefetched_tasks",
                                       "Number of tasks of given type prefetched at a worker.",
                                       labels=["worker", "task"])
        for node in nodes:
            executing.add_metric([node.name], len(node.active))
            reserved: dict[str, int] = {}
            for task in node.reserved:
                name = str(task.get("name") or "").removeprefix(CELERY_APP + ".")  # the runbook's name
                reserved[name] = reserved.get(name, 0) + 1
            for name, count in sorted(reserved.items()):
                prefetched.add_metric([node.name, name], count)
        yield online
        yield executing
        yield prefetched

        depth = GaugeMetricFamily("assistant_queue_messages", "Messages of a queue by state.",
                                  labels=["queue", "state"])
        age = GaugeMetricFamily("assistant_queue_oldest_waiting_age_seconds",
                                "Seconds the oldest waiting message of a queue has waited (0 when empty).",
                                labels=["queue"])
        for queue in self.sources.queues:
            stats = queue_stats(self.sources.broker, queue)
            for state in STATES:
                depth.add_metric([queue, state], stats[state])
            age.add_metric([queue], stats["oldest_age_s"])
        yield depth
        yield age


class MetricsResource:
    def __init__(self, sources: Sources) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(MonitorCollector(sources))  # type: ignore[arg-type]

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = CONTENT_TYPE_LATEST
        resp.data = generate_latest(self.registry)
