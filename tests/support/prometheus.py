"""Reading a Prometheus exposition as Prometheus does (prometheus_client's parser)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Samples", "samples_of"]

#: Every sample, keyed by (sample name, labels).
Samples = dict[tuple[str, frozenset], float]


def samples_of(text: str) -> Samples:
    """Every sample of the exposition ``text``, keyed by (sample name, labels)."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}
