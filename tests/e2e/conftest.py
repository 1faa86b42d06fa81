"""End-to-end tests: the web app under gunicorn and a ``dramatiq actors`` worker
as subprocesses (tests/support/stack.py), real Redis, PostgreSQL and
WhatsApp stand-in, the offline model."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.stack import Stack, running_stack


@pytest.fixture(scope="session")
def make_stack(engine, checkpoints, tmp_path_factory):
    """Start a stack with extra environment; it runs until the end of the scope
    of the fixture that asked for it (use with ``yield from``)."""

    def make(env: dict[str, str] | None = None, **options) -> Iterator[Stack]:
        with running_stack(tmp_path_factory.mktemp("stack"), env, **options) as stack:
            yield stack

    return make


@pytest.fixture(scope="module")
def shared_stack(make_stack):
    """The stack most tests of a module share: a 0.3 s buffer window, a 5 s maximum wait."""
    yield from make_stack()


@pytest.fixture
def stack(shared_stack, db):
    """The shared stack, its Redis state and stand-in record forgotten before
    the test; the database is emptied after it (``db``)."""
    shared_stack.reset()
    yield shared_stack
    # Let the test's tasks finish before ``db`` empties the tables under them.
    shared_stack.wait_idle()


def pytest_runtest_makereport(item, call):
    # A failed end-to-end test shows what the web app and the worker logged.
    stack = getattr(item, "funcargs", {}).get("stack")
    if call.when == "call" and call.excinfo is not None and stack is not None:
        item.add_report_section("call", "stack logs", stack.logs())
