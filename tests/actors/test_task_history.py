"""The workers' task history: buffered events flushed in batches, bounded by count and age."""

from __future__ import annotations

import time

import dramatiq
import pytest

from actors import keys, task_history
from actors.middleware import TaskHistory, find
from actors.task_history import TaskEvent
from tests.support.waiting import wait_for


def event(task_id, kind="task-succeeded", *, task="process_message_task", worker="w1@host", runtime_s=None, **fields):
    return TaskEvent(task_id, task, kind, worker, time.time(), fields, runtime_s=runtime_s)


def test_a_batch_of_events_builds_records_and_counters(redis_client):
    task_history.write_events(redis_client, [
        event("t1", "task-started", state="STARTED", args="['a']"),
        event("t1", "task-succeeded", state="SUCCESS", runtime_s=0.2),
        event("t2", "task-failed", task="check_buffer_task", state="FAILURE", exception="ValueError('x')",
              runtime_s=30.0),
    ], max_tasks=10, ttl_s=60)

    record = task_history.get_task(redis_client, "t1")
    assert record["state"] == "SUCCESS" and record["args"] == "['a']" and record["worker"] == "w1@host"
    assert task_history.event_counts(redis_client) == {
        ("process_message_task", "task-started", "w1@host"): 1,
        ("process_message_task", "task-succeeded", "w1@host"): 1,
        ("check_buffer_task", "task-failed", "w1@host"): 1,
    }
    hist = task_history.runtime_histograms(redis_client)
    quick = dict(hist[("process_message_task", "w1@host")].buckets)
    assert quick["0.1"] == 0 and quick["0.25"] == 1 and quick["+Inf"] == 1
    slow = hist[("check_buffer_task", "w1@host")]
    assert dict(slow.buckets)["10.0"] == 0 and slow.count == 1 and slow.sum_s == pytest.approx(30.0)


def test_the_history_keeps_at_most_max_tasks_dropping_the_oldest_with_their_records(redis_client):
    for n in range(5):
        task_history.write_events(redis_client, [event(f"t{n}")], max_tasks=3, ttl_s=60)
        time.sleep(0.002)  # distinct scores
    assert [t["uuid"] for t in task_history.all_tasks(redis_client)] == ["t4", "t3", "t2"]
    assert not redis_client.exists(keys.task_record_key("t0"))
    # the counters are not bounded by the history: they count every event
    assert task_history.event_counts(redis_client)[("process_message_task", "task-succeeded", "w1@host")] == 5


def test_records_expire_with_the_age_bound(redis_client):
    task_history.write_events(redis_client, [event("old")], max_tasks=10, ttl_s=1)
    assert 0 < redis_client.pttl(keys.task_record_key("old")) <= 1000
    # an id older than the bound is dropped from the index by the next write
    redis_client.zadd(keys.task_index_key(), {"old": int(time.time() * 1000) - 5000})
    task_history.write_events(redis_client, [event("new")], max_tasks=10, ttl_s=1)
    assert [t["uuid"] for t in task_history.all_tasks(redis_client)] == ["new"]


def test_a_worker_records_each_tasks_lifecycle_without_a_redis_call_per_task(make_broker, redis_client,
                                                                             start_worker):
    # Given a broker with the project's middleware and two actors, one failing for good
    broker = make_broker()

    def ok(x):
        return x * 2

    def bad():
        raise ValueError("no good")

    dramatiq.actor(ok, actor_name="ok", queue_name="default", broker=broker)
    dramatiq.actor(bad, actor_name="bad", queue_name="default", broker=broker, max_retries=0)
    history = find(broker, TaskHistory)
    flushed = []
    real_flush = history.flush
    history.flush = lambda: flushed.append(real_flush()) or flushed[-1]  # type: ignore[method-assign]

    # When a worker runs three of them
    start_worker(broker)
    sent = [broker.get_actor("ok").send(n) for n in range(2)] + [broker.get_actor("bad").send()]
    broker.join("default")

    # Then the history shows each with its outcome, written by the background flusher
    def records():
        found = {i.message_id: task_history.get_task(redis_client, i.message_id) for i in sent}
        return found if all(r and r["state"] in ("SUCCESS", "FAILURE") for r in found.values()) else None

    # (waiting on what the flushes wrote: the records may land before a flush returns its count)
    wait_for(lambda: sum(n for n in flushed if n) == 9)
    found = records()
    assert found is not None
    assert [found[m.message_id]["state"] for m in sent] == ["SUCCESS", "SUCCESS", "FAILURE"]
    assert found[sent[0].message_id]["args"] == "[0]" and found[sent[1].message_id]["result"] == "2"
    failed = found[sent[2].message_id]
    assert failed["exception"] == "ValueError('no good')" and "no good" in failed["traceback"]
    assert failed["runtime"] >= 0 and failed["worker"].startswith("pid")
    # nine events (received, started, finished per task) went in batches: never one write per event,
    # at most one per hook call (a task's received+started, its end)
    writes = [n for n in flushed if n]
    assert sum(writes) == 9 and len(writes) <= 6 and max(writes) >= 2


def test_events_wait_in_the_buffer_while_redis_is_unreachable(make_broker):
    broker = make_broker()
    history = find(broker, TaskHistory)
    import redis as redis_lib

    history._client = redis_lib.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    history._add(event("t1"))
    assert history.flush() == 0
    assert len(history._buffer) == 1


def test_a_filtered_query_reads_full_records_only_for_its_page(redis_client, monkeypatch):
    events = [event(f"t{n:02}", "task-failed" if n % 2 else "task-succeeded",
                    state="FAILURE" if n % 2 else "SUCCESS", traceback="x" * 5000) for n in range(40)]
    task_history.write_events(redis_client, events, max_tasks=100, ttl_s=60)
    fetched = []
    real = task_history.get_tasks

    def counting(client, ids, **kw):
        fetched.extend(ids)
        return real(client, ids, **kw)

    monkeypatch.setattr(task_history, "get_tasks", counting)
    total, page = task_history.find(redis_client, task_history.TaskFilter(state="failure"), limit=5)
    assert total == 20 and len(page) == 5
    assert all(t["state"] == "FAILURE" and t["traceback"] == "x" * 5000 for t in page)
    assert sorted(fetched) == sorted(t["uuid"] for t in page)
    total, page = task_history.find(redis_client, task_history.TaskFilter(search="t3"), sort_by="uuid", limit=3)
    assert total == 10 and [t["uuid"] for t in page] == ["t30", "t31", "t32"]


def test_a_query_answers_at_most_max_page_tasks(redis_client):
    task_history.write_events(redis_client, [event(f"t{n}") for n in range(task_history.MAX_PAGE + 5)],
                              max_tasks=5000, ttl_s=60)
    total, page = task_history.find(redis_client, task_history.TaskFilter(), limit=10 ** 6)
    assert total == task_history.MAX_PAGE + 5 and len(page) == task_history.MAX_PAGE


def test_a_renamed_workers_counters_go_once_it_has_been_silent_past_the_age_bound(redis_client):
    task_history.write_events(redis_client, [event("a", worker="dramatiq.1@old", runtime_s=0.1),
                                             event("b", worker="dramatiq.2@new", runtime_s=0.1)],
                              max_tasks=10, ttl_s=60)
    assert task_history.recent_workers(redis_client) == {"dramatiq.1@old", "dramatiq.2@new"}
    # the old name's last event is now older than the bound: the next batch drops its fields
    redis_client.zadd(keys.task_workers_key(), {"dramatiq.1@old": int(time.time() * 1000) - 61_000})
    task_history.write_events(redis_client, [event("c", worker="dramatiq.2@new", runtime_s=0.1)],
                              max_tasks=10, ttl_s=60)
    assert task_history.recent_workers(redis_client) == {"dramatiq.2@new"}
    assert {w for (_t, _k, w) in task_history.event_counts(redis_client)} == {"dramatiq.2@new"}
    assert {w for (_t, w) in task_history.runtime_histograms(redis_client)} == {"dramatiq.2@new"}
    assert task_history.event_counts(redis_client)[("process_message_task", "task-succeeded", "dramatiq.2@new")] == 2


def test_a_task_abandoned_at_the_hard_limit_that_returns_late_is_recorded_once(make_broker, redis_client):
    from actors.consumer import InflightMessage

    broker = make_broker()
    history = find(broker, TaskHistory)
    history._client = broker.client
    message = InflightMessage(dramatiq.Message(queue_name="default", actor_name="process_message_task", args=(1,),
                                           kwargs={}, options={"retries": 1}), raw=b"", inflight_key="x")
    history.before_process_message(broker, message)
    # the node gives it up at the hard limit and records the retry at once ...
    message.abandoned = True
    history.record_abandoned(broker, message, "retried", TimeoutError("hard limit"))
    # ... then the blocked thread returns late
    history.after_process_message(broker, message, exception=TimeoutError("late"))
    history.flush()
    kinds = {kind: n for (_t, kind, _w), n in task_history.event_counts(redis_client).items()}
    assert kinds == {"task-received": 1, "task-started": 1, "task-retried": 1}
    assert task_history.get_task(redis_client, message.message_id)["state"] == "RETRY"


def test_the_last_events_are_written_when_the_worker_stops(make_broker, redis_client, start_worker):
    broker = make_broker()
    dramatiq.actor(lambda: None, actor_name="quick", queue_name="default", broker=broker)
    history = find(broker, TaskHistory)
    history.flush_interval_s = 3600  # only the shutdown writes
    worker = start_worker(broker)
    sent = broker.get_actor("quick").send()
    broker.join("default")
    worker.join()
    assert task_history.get_task(redis_client, sent.message_id) is None
    worker.stop()
    assert task_history.get_task(redis_client, sent.message_id)["state"] == "SUCCESS"


def test_a_cold_exit_writes_the_buffered_events_first(make_broker, redis_client):
    from actors import hard_exit

    broker = make_broker()
    history = find(broker, TaskHistory)
    history.flush_interval_s = 3600
    history.after_worker_boot(broker, None)
    try:
        history._add(event("cold", state="SUCCESS"))
        # what exit_now runs before os._exit
        assert history._flush_before_exit in hard_exit._cleanups
        for cleanup in list(hard_exit._cleanups):
            if cleanup == history._flush_before_exit:
                cleanup()
        assert task_history.get_task(redis_client, "cold")["state"] == "SUCCESS"
    finally:
        history.after_worker_shutdown(broker, None)
    assert history._flush_before_exit not in hard_exit._cleanups


def test_flushes_never_overlap(make_broker, redis_client):
    broker = make_broker()
    history = find(broker, TaskHistory)
    history._client = broker.client
    history._add(event("t1", state="SUCCESS"))
    with history._flush_lock:  # a flush under way
        assert history.flush(wait_s=0.05) == 0
    assert len(history._buffer) == 1
    assert history.flush() == 1 and task_history.get_task(redis_client, "t1")["state"] == "SUCCESS"


class Costly:
    calls = 0

    def __repr__(self):
        Costly.calls += 1
        return "Costly()"


def test_clip_builds_only_what_it_keeps():
    for value in ([0], 2, {"a": 1, "b": [1, (2,), (3, 4)], "c": None}, (1,), (), {}, set(), {1},
                  ["x'y", b"z", 1.5, True], frozenset({1})):
        assert task_history.clip(value, 1000) == repr(value)
    assert task_history.clip("abcdef", 4) == "abc…"
    Costly.calls = 0
    clipped = task_history.clip({"items": [Costly()] * 1_000_000, "text": "x" * 5_000_000}, 1000)
    assert len(clipped) == 1000 and clipped.startswith("{'items': [Costly(), Costly()")
    assert Costly.calls < 200


def test_the_worker_name_is_looked_up_once(make_broker):
    from actors.middleware.node_state import NodeState

    broker = make_broker()
    history = find(broker, TaskHistory)
    node_state = find(broker, NodeState)
    node_state.node_name = "celery@first"
    assert history._worker_name(broker) == "celery@first"
    node_state.node_name = "celery@second"
    assert history._worker_name(broker) == "celery@first"


def test_the_buffer_is_bounded_by_bytes_too(make_broker, monkeypatch):
    from actors.middleware import task_history as middleware

    monkeypatch.setattr(middleware, "MAX_BUFFERED_BYTES", 1_000_000)
    broker = make_broker()
    history = find(broker, TaskHistory)
    for n in range(20):
        history._add(event(f"t{n}", traceback="x" * 100_000))
    assert len(history._buffer) == 9 and history._buffer[-1].task_id == "t19"
    assert history._buffer_bytes == sum(middleware.event_size(e) for e in history._buffer) <= 1_000_000
    assert history.dropped == 11


def test_a_busy_conversations_requeue_is_recorded_as_requeued_not_succeeded(make_broker, redis_client,
                                                                           start_worker):
    from actors.busy import requeue_later

    broker = make_broker()

    def waits_once(n):
        if n == 0:
            requeue_later(actor, 1)

    actor = dramatiq.actor(waits_once, actor_name="waits_once", queue_name="default", broker=broker)
    start_worker(broker)
    first = actor.send(0)

    def ended():
        record = task_history.get_task(redis_client, first.message_id)
        return record if record and record["state"] not in ("STARTED",) else None

    record = wait_for(ended)
    assert record["state"] == "REQUEUED"
    again = wait_for(lambda: (task_history.get_task(redis_client, record["requeued_as"]) or {}).get("state")
                     == "SUCCESS")
    assert again
    kinds = {kind: n for (_t, kind, _w), n in task_history.event_counts(redis_client).items()}
    assert kinds["task-requeued"] == 1 and kinds["task-succeeded"] == 1


def test_a_state_filter_reads_its_states_index_which_follows_each_change_and_the_bounds(redis_client):
    def states():
        return {s: task_history.find(redis_client, task_history.TaskFilter(state=s))[0]
                for s in ("STARTED", "SUCCESS", "FAILURE")}

    task_history.write_events(redis_client, [event("t1", "task-started", state="STARTED"),
                                             event("t2", "task-started", state="STARTED")], max_tasks=2, ttl_s=60)
    assert states() == {"STARTED": 2, "SUCCESS": 0, "FAILURE": 0}
    task_history.write_events(redis_client, [event("t1", state="SUCCESS")], max_tasks=2, ttl_s=60)
    assert states() == {"STARTED": 1, "SUCCESS": 1, "FAILURE": 0}
    assert [t["uuid"] for t in task_history.find(redis_client, task_history.TaskFilter(state="success"))[1]] == ["t1"]
    time.sleep(0.002)
    # a third task pushes the oldest (t2) out of the history and out of its state's index
    task_history.write_events(redis_client, [event("t3", "task-failed", state="FAILURE")], max_tasks=2, ttl_s=60)
    assert states() == {"STARTED": 0, "SUCCESS": 1, "FAILURE": 1}
    assert redis_client.zcard(keys.task_state_index_key("STARTED")) == 0


@pytest.mark.parametrize("flt", [
    task_history.TaskFilter(taskname="check_buffer_task"), task_history.TaskFilter(taskname="tasks.check_buffer_task"),
    task_history.TaskFilter(workername="w2@host"), task_history.TaskFilter(search="BOOM"),
    task_history.TaskFilter(search="t1"), task_history.TaskFilter(state="FAILURE", search="boom", workername="w1@host"),
    task_history.TaskFilter(state="success", taskname="process_message_task"),
])
def test_a_filter_run_in_redis_finds_what_the_filter_accepts(redis_client, flt, monkeypatch):
    monkeypatch.setattr(task_history, "SEARCH_SLICE", 7)  # several slices
    events = []
    for n in range(30):
        failed = n % 3 == 0
        events.append(event(f"t{n}", "task-failed" if failed else "task-succeeded",
                            task="check_buffer_task" if n % 2 else "process_message_task",
                            worker="w2@host" if n % 5 == 0 else "w1@host", state="FAILURE" if failed else "SUCCESS",
                            args=f"['arg {n}']", exception="ValueError('boom')" if failed else None))
    for e in events:
        task_history.write_events(redis_client, [e], max_tasks=100, ttl_s=60)
        time.sleep(0.002)
    expected = [t["uuid"] for t in task_history.all_tasks(redis_client) if flt.accepts(t)]
    total, page = task_history.find(redis_client, flt, limit=4, offset=1)
    assert expected and total == len(expected)
    assert [t["uuid"] for t in page] == expected[1:5]
