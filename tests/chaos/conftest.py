"""The chaos and security suite: real processes broken for real (kill -9, SIGTERM,
Redis and PostgreSQL outages, a failing WhatsApp, hostile input, missing
credentials), on loopback only.  Every test here carries the ``chaos`` marker,
so ``./test.sh -m chaos`` runs the suite alone; the plain test command runs it
with everything else.  docs/RELIABILITY.md holds the figures of its last run."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.chaos)


@pytest.fixture
def figures(record_property):
    """``figures(sent=2000, replies=2000, duplicates=0, lost=0)``: the scenario's numbers.

    They travel with the test's report (also across pytest-xdist workers), are printed
    in a "chaos figures" section at the end of the run and written to
    ``.run/chaos-figures.json``; docs/RELIABILITY.md quotes them."""

    def record(**values):
        record_property("chaos_figures", values)

    return record
