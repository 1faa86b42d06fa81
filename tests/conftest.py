"""Test set-up: a private Redis database and a fresh PostgreSQL database per run.

The environment is set before anything imports :mod:`actors`, because
importing it builds the broker from the environment.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
import uuid

import psycopg
import pytest
import redis
from dramatiq import Worker

#: The machine's services; override for another host.
REDIS_BASE = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


#: Longer than CI's whole run (90 min): a lock or database older than this
#: belongs to a run that was killed.
STALE_AFTER_S = 3 * 3600


def _claim_redis_db() -> int:
    """A database number no other test run uses: a lock in db 0, and an empty db."""
    admin = redis.Redis.from_url(REDIS_BASE + "/0")
    for n in range(1, 16):
        if admin.set(f"tests:whatsapp-tasks:db-lock:{n}", os.getpid(), nx=True, ex=STALE_AFTER_S):
            if redis.Redis.from_url(f"{REDIS_BASE}/{n}").dbsize() == 0:
                return n
            admin.delete(f"tests:whatsapp-tasks:db-lock:{n}")
    raise RuntimeError("no empty Redis database (1-15) is free for the tests")


def _create_pg_database() -> tuple[str, str]:
    """A new database for this run, named with its creation time; databases of
    runs killed more than STALE_AFTER_S ago are dropped on the way."""
    now = int(time.time())
    name = f"test_wa_{now}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        for (old,) in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'test\\_wa\\_%'").fetchall():
            parts = old.split("_")
            if len(parts) == 4 and parts[2].isdigit() and now - int(parts[2]) > STALE_AFTER_S:
                conn.execute(f'DROP DATABASE IF EXISTS "{old}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return name, f"{base}/{name}"


#: This process's Redis database and PostgreSQL database (None in a pytest-xdist controller,
#: which runs no test: only the processes that run tests claim them).
REDIS_DB: int | None = None
PG_DB_NAME: str | None = None


def pytest_configure(config):
    """Claim this process's Redis database and PostgreSQL database before any test module
    (and so :mod:`actors`) is imported."""
    global REDIS_DB, PG_DB_NAME
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        return
    REDIS_DB = _claim_redis_db()
    PG_DB_NAME, pg_url = _create_pg_database()
    os.environ["REDIS_URI"] = f"{REDIS_BASE}/{REDIS_DB}"
    os.environ["DB_URL"] = pg_url


os.environ.pop("GOOGLE_API_KEY", None)
os.environ["LANGGRAPH_STRICT_MSGPACK"] = "true"
# Workers started by tests serve no metrics unless a test asks (a free port each):
# parallel runs on one machine would fight over the default port.
os.environ["WORKER_METRICS_PORT"] = "0"
os.environ.pop("LOG_FORMAT", None)


def pytest_sessionfinish(session, exitstatus):
    if REDIS_DB is None:
        return
    redis.Redis.from_url(f"{REDIS_BASE}/{REDIS_DB}").flushdb()
    redis.Redis.from_url(REDIS_BASE + "/0").delete(f"tests:whatsapp-tasks:db-lock:{REDIS_DB}")
    try:
        from actors import runtime

        rt = runtime._current
        if rt is not None:
            rt.sessions.kw["bind"].dispose()
    except Exception:
        pass
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{PG_DB_NAME}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_url() -> str:
    return os.environ["REDIS_URI"]


@pytest.fixture
def redis_client(redis_url):
    """The private Redis database, empty before and after the test."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def beating(redis_client):
    """``beating(name, info=..., processes=...)``: a worker node that keeps beating, as a live one
    does, until the test ends (one beat expires after 3 intervals, and a subprocess can take longer
    than that to start on a loaded machine)."""
    from actors import registry

    stop = threading.Event()
    threads = []

    def start(name, **state):
        registry.beat(redis_client, name, **state)

        def keep():
            while not stop.wait(registry.INTERVAL_S / 2):
                registry.beat(redis_client, name, **state)

        thread = threading.Thread(target=keep, daemon=True)
        thread.start()
        threads.append(thread)

    yield start
    stop.set()
    for thread in threads:
        thread.join(10)


@pytest.fixture(scope="session")
def engine():
    """The run's PostgreSQL database, migrated to head (app tables and checkpoints)."""
    from app.db import create_schema, make_engine

    engine = make_engine(os.environ["DB_URL"])
    create_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def checkpoints(engine):
    """LangGraph's PostgreSQL checkpointer on the run's database."""
    from app.checkpoints import open_checkpoints

    checkpoints = open_checkpoints(os.environ["DB_URL"])
    checkpoints.setup()
    yield checkpoints
    checkpoints.close()


@pytest.fixture
def db(engine, checkpoints):
    """A session factory on the run's PostgreSQL database, emptied after the test."""
    from sqlalchemy import text

    from app.db import Base, make_session_factory

    yield make_session_factory(engine)
    with engine.begin() as conn:
        names = ", ".join([t.name for t in Base.metadata.sorted_tables]
                          + ["checkpoints", "checkpoint_blobs", "checkpoint_writes"])
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


@pytest.fixture
def services(runtime):
    """The conversation domain's collaborators, on the test runtime."""
    from actors import runtime as rt_module

    return rt_module.services(runtime)


@pytest.fixture
def whatsapp():
    """The WhatsApp client the actors send through: an in-memory recorder."""
    from tests.support.whatsapp_fake import RecordingWhatsApp

    return RecordingWhatsApp()

@pytest.fixture
def config(redis_url):
    from app.config import Config

    return Config.from_env()


@pytest.fixture
def make_broker(redis_client, config):
    from actors.setup import build_broker

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
def model():
    """The model the runtime answers with: the offline one, recording its inputs."""
    from tests.support.conversations import RecordingModel

    return RecordingModel()


@pytest.fixture
def runtime(db, redis_client, config, whatsapp, checkpoints, model):
    """Actors' runtime on the test databases, sending through ``whatsapp``."""
    from actors import runtime as rt_module

    rt = rt_module.Runtime(config=dataclasses.replace(config), sessions=db, redis=redis_client, model=model,
                           whatsapp=whatsapp, checkpoints=checkpoints)
    rt_module.install(rt)
    yield rt
    rt_module.install(None)


@pytest.fixture
def start_worker():
    """Start an in-process Dramatiq worker; stopped after the test."""
    workers = []

    def start(broker, **options) -> Worker:
        options.setdefault("worker_timeout", 100)
        options.setdefault("worker_threads", 2)
        worker = Worker(broker, **options)
        worker.start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


def pytest_terminal_summary(terminalreporter):
    """The chaos suite's figures (tests/chaos/conftest.py ``figures``), printed and kept."""
    import json
    from pathlib import Path

    rows = []
    for reports in terminalreporter.stats.values():
        for report in reports:
            if getattr(report, "when", None) != "call":
                continue
            for name, values in getattr(report, "user_properties", ()):
                if name == "chaos_figures":
                    rows.append({"test": report.nodeid, "outcome": report.outcome, **values})
    if not rows:
        return
    terminalreporter.section("chaos figures")
    for row in rows:
        values = ", ".join(f"{k}={v}" for k, v in row.items() if k not in ("test", "outcome"))
        terminalreporter.write_line(f"{row['test']} [{row['outcome']}]: {values}")
    out = Path(__file__).resolve().parents[1] / ".run" / "chaos-figures.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(rows, indent=1, default=str))
