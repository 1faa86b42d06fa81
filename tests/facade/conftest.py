"""Fixtures of the facade's tests: real ``celery`` worker processes."""

from __future__ import annotations

import pytest

from tests.support.celery_worker import CeleryWorker


@pytest.fixture
def celery_worker(tmp_path, global_broker, redis_client):
    """Start ``celery -A tasks <args>``; everything it started is killed after the test."""
    started: list[CeleryWorker] = []

    def start(args: str | list[str], split_stderr: bool = False, **env: str) -> CeleryWorker:
        argv = args.split() if isinstance(args, str) else args
        worker = CeleryWorker(argv, tmp_path / f"worker-{len(started)}.log", env=env, split_stderr=split_stderr)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill_all()
