"""Scraping a worker node's metrics port, for tests."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def scrape(port: int) -> dict[tuple[str, frozenset], float] | None:
    """Every sample of ``http://127.0.0.1:port/metrics``, by (name, labels); None while nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
            text = reply.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict[tuple[str, frozenset], float] | None, name: str, **labels: str) -> float:
    """One sample's value (0 when absent: a counter not yet touched)."""
    if samples is None:
        return 0.0
    return samples.get((name, frozenset(labels.items())), 0.0)
