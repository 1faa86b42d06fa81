"""Web tests: Falcon's test client over the real app, a real Redis and a recording enqueue."""

from __future__ import annotations

import dataclasses

import falcon.testing
import pytest

from app.web import create_app
from tests.support.fixtures import APP_SECRET

VERIFY_TOKEN = "test-verify-token"
OPERATOR_TOKEN = "test-operator-token"


class RecordingEnqueue:
    """Stands in for the broker: keeps every ``enqueue`` call; can be told to fail."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple, dict | None, dict]] = []
        self.fail_on: set[str] = set()

    def __call__(self, task_name, args=(), kwargs=None, **options):
        if task_name in self.fail_on:
            raise ConnectionError(f"broker down for {task_name}")
        self.calls.append((task_name, tuple(args), kwargs, options))
        return f"id-{len(self.calls)}"

    def named(self, task_name):
        return [c for c in self.calls if c[0] == task_name]


@pytest.fixture
def enqueue():
    return RecordingEnqueue()


@pytest.fixture
def web_config(config):
    return dataclasses.replace(config, whatsapp_app_secret=APP_SECRET, whatsapp_verify_token=VERIFY_TOKEN,
                               operator_token=OPERATOR_TOKEN, buffer_window_s=3.0)


@pytest.fixture
def make_client(redis_client, enqueue, web_config, db):
    """A test client over ``create_app`` with optional config overrides."""

    def make(**overrides):
        config = dataclasses.replace(web_config, **overrides)
        ids = iter(f"uuid-{n}" for n in range(1, 1000))
        app = create_app(config, enqueue=enqueue, redis_client=redis_client, sessions=db,
                         new_id=lambda: next(ids))
        return falcon.testing.TestClient(app)

    return make


@pytest.fixture
def client(make_client):
    return make_client()


@pytest.fixture
def health_client(redis_client, enqueue, web_config, db):
    """``health_client(**config_overrides)``: the app with wsgi's broker probe, built from the config."""
    from actors.health import BrokerHealth
    from actors.periodic import QUEUES

    probes = []

    def make(**overrides):
        config = dataclasses.replace(web_config, **overrides)
        probe = BrokerHealth(config)
        probes.append(probe)
        app = create_app(config, enqueue=enqueue, health=probe, queues=QUEUES, redis_client=redis_client, sessions=db)
        return falcon.testing.TestClient(app)

    yield make
    for probe in probes:
        probe.close()
