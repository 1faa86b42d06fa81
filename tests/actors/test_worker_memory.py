"""What a worker process holds that its tasks may not need: the domain loads at its first task,
and the task history is written in bounded pipelines."""

from __future__ import annotations

import subprocess
import sys
import time

import redis as redis_lib
import sqlalchemy.exc

from actors import task_history
from actors.middleware import TaskHistory, find, is_transient
from actors.middleware import task_history as history_middleware
from actors.task_history import TaskEvent

#: Libraries of the domain (database, graph, model, WhatsApp) that a worker or producer must not
#: load before a task needs them.
HEAVY = ("sqlalchemy", "langgraph", "langchain_core", "psycopg", "httpx", "google")


def _loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split()) & set(HEAVY)


def test_importing_the_actors_loads_no_domain_library():
    # Given a fresh interpreter (a worker process, the web app, a producer), when it imports the
    # actors and their broker, then none of the domain's libraries is loaded ...
    assert _loaded_after("import actors") == set()


def test_the_first_task_that_needs_the_domain_loads_it():
    # ... and the first run of a task that needs it loads it: a validation error is raised
    # after the import, so the body ran.
    loaded = _loaded_after(
        "import actors\n"
        "from app.errors import InvalidTaskArguments\n"
        "try:\n"
        "    actors.update_message_status_task.fn({})\n"
        "except InvalidTaskArguments:\n"
        "    pass\n"
    )
    assert "sqlalchemy" in loaded


def test_database_errors_stay_transient_without_importing_sqlalchemy_up_front():
    # SQLAlchemy is imported in this test process: its transient errors are found through sys.modules.
    assert is_transient(sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("server closed")))
    assert is_transient(sqlalchemy.exc.TimeoutError("pool exhausted"))
    assert not is_transient(sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("duplicate")))
    assert not is_transient(ValueError("bad argument"))


def _event(task_id: str) -> TaskEvent:
    return TaskEvent(task_id, "process_message_task", "task-succeeded", "w1@host", time.time(), {"state": "SUCCESS"})


def test_a_large_buffer_is_written_in_chunks(make_broker, redis_client, monkeypatch):
    broker = make_broker()
    history = find(broker, TaskHistory)
    history._client = broker.client
    chunks = []
    real_write = task_history.write_events

    def recording(client, events, **kwargs):
        chunks.append(len(events))
        real_write(client, events, **kwargs)

    monkeypatch.setattr(task_history, "write_events", recording)
    monkeypatch.setattr(history_middleware, "FLUSH_CHUNK", 100)
    for n in range(250):
        history._add(_event(f"t{n}"))

    assert history.flush() == 250
    assert chunks == [100, 100, 50]
    assert task_history.get_task(redis_client, "t249")["state"] == "SUCCESS"


def test_when_redis_fails_half_way_only_the_unwritten_events_are_kept(make_broker, redis_client, monkeypatch):
    broker = make_broker()
    history = find(broker, TaskHistory)
    history._client = broker.client
    real_write = task_history.write_events
    calls = []

    def fail_second(client, events, **kwargs):
        calls.append(len(events))
        if len(calls) == 2:
            raise redis_lib.ConnectionError("connection lost")
        real_write(client, events, **kwargs)

    monkeypatch.setattr(task_history, "write_events", fail_second)
    monkeypatch.setattr(history_middleware, "FLUSH_CHUNK", 100)
    for n in range(250):
        history._add(_event(f"t{n}"))

    # The first chunk went; the second failed: it and the third wait, in order, for the next flush.
    assert history.flush() == 100
    assert [e.task_id for e in history._buffer] == [f"t{n}" for n in range(100, 250)]
    assert history._buffer_bytes == sum(200 + len("SUCCESS") for _ in range(150))
    assert task_history.get_task(redis_client, "t99") is not None
    assert task_history.get_task(redis_client, "t100") is None

    monkeypatch.setattr(task_history, "write_events", real_write)
    assert history.flush() == 150
    assert task_history.get_task(redis_client, "t249")["state"] == "SUCCESS"


def test_a_time_limit_during_the_first_domain_import_leaves_no_half_imported_module(tmp_path, monkeypatch):
    # Given a domain module whose import takes a while, and a task thread that loads the domain
    import builtins
    import threading

    from dramatiq.middleware import raise_thread_exception

    from actors import runtime
    from facade.exceptions import SoftTimeLimitExceeded

    (tmp_path / "slow_domain_probe.py").write_text(
        "import builtins\n"
        "probe = builtins._slow_domain_probe\n"
        "probe['started'].set()\n"
        "probe['release'].wait(30)\n"
        "total = 0\n"
        "for n in range(200_000):\n"
        "    total += n\n"
        "probe['finished'] = True\n"
    )
    probe = {"started": threading.Event(), "release": threading.Event(), "finished": False}
    monkeypatch.setattr(builtins, "_slow_domain_probe", probe, raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(runtime, "DOMAIN_MODULES", ("slow_domain_probe",))
    monkeypatch.setattr(runtime, "_domain_loaded", threading.Event())
    monkeypatch.setattr(runtime, "_domain_thread", None)
    outcome = []

    def task():
        try:
            runtime.load_domain()
            outcome.append("loaded")
        except SoftTimeLimitExceeded:
            outcome.append("soft limit")

    thread = threading.Thread(target=task)
    thread.start()
    assert probe["started"].wait(30)

    # When the soft limit is raised into the task's thread in the middle of the import
    raise_thread_exception(thread.ident, SoftTimeLimitExceeded)
    probe["release"].set()
    thread.join(30)

    # Then the task sees its limit, and the module was imported whole, for the next task to use
    assert outcome == ["soft limit"]
    # (the limit may reach the task before it started waiting: the import goes on in its own thread)
    assert runtime._domain_loaded.wait(30)
    assert probe["finished"] is True
    runtime.load_domain()
    import slow_domain_probe  # noqa: F401

    monkeypatch.delitem(sys.modules, "slow_domain_probe")
