"""Brokers and in-process workers on the run's private Redis database."""

from __future__ import annotations

import dataclasses

import dramatiq
import pytest
from dramatiq import Worker

from actors.setup import build_broker
from app.config import Config
from app.llm import OfflineModel


@pytest.fixture
def config(redis_url) -> Config:
    return Config.from_env()


@pytest.fixture
def make_broker(redis_client, config):
    """Build extra brokers (each one stands for a worker process)."""
    made = []

    def make(**overrides):
        broker = build_broker(config, **overrides)
        made.append(broker)
        return broker

    yield make
    for broker in made:
        broker.close()


@pytest.fixture
def global_broker(redis_client):
    """The broker the five actors are declared on, cleaned up after the test."""
    import actors

    yield actors.broker
    actors.broker.close()


@pytest.fixture
def runtime(db, redis_client, config):
    """Actors' runtime on the test databases."""
    from actors import runtime as rt_module

    rt = rt_module.Runtime(config=dataclasses.replace(config), sessions=db, redis=redis_client, model=OfflineModel())
    rt_module.install(rt)
    yield rt
    rt_module.install(None)


@pytest.fixture
def start_worker():
    """Start an in-process Dramatiq worker; stopped after the test."""
    workers = []

    def start(broker: dramatiq.Broker, **options) -> Worker:
        options.setdefault("worker_timeout", 100)
        options.setdefault("worker_threads", 2)
        worker = Worker(broker, **options)
        worker.start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()
