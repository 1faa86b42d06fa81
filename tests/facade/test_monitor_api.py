"""The monitor's HTTP surface against real Redis: Flower's API shapes, auth, the URL prefix, actions."""

from __future__ import annotations

import base64
import json
import time

import dramatiq
import falcon.testing
import pytest
from prometheus_client.parser import text_string_to_metric_families

from actors import keys, registry, task_history
from actors.task_history import TaskEvent
from facade.monitor import MonitorSettings, Sources, create_app

ACTION = {"X-Monitor-Action": "1"}


@pytest.fixture
def broker(make_broker):
    broker = make_broker()

    def fn(*args, **kwargs):
        return None

    dramatiq.actor(fn, actor_name="process_message_task", queue_name="default", priority=-5, broker=broker)
    dramatiq.actor(fn, actor_name="update_langgraph_state_task", queue_name="state", priority=-8, broker=broker)
    return broker


@pytest.fixture
def make_client(broker):
    def make(**settings) -> falcon.testing.TestClient:
        settings.setdefault("unauthenticated_api", True)
        # falcon.testing's requests name falconframework.org in Host
        settings.setdefault("allowed_hosts", ("localhost", "127.0.0.1", "::1", "falconframework.org"))
        sources = Sources(broker=broker, registered=lambda: ["tasks.process_message_task"])
        return falcon.testing.TestClient(create_app(sources, MonitorSettings(**settings)))

    return make


@pytest.fixture
def client(make_client):
    return make_client()


def record(task_id, kind="task-succeeded", *, task="process_message_task", worker="w1@host", at_s=None, **fields):
    return TaskEvent(task_id, task, kind, worker, at_s or time.time(), fields,
                     runtime_s=fields.get("runtime"))


def write(redis_client, *events):
    task_history.write_events(redis_client, list(events), max_tasks=100, ttl_s=600)


def basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


# -- Flower's API ---------------------------------------------------------------------------------------------


def test_api_workers_lists_live_nodes_with_flowers_keys(client, redis_client):
    registry.beat(redis_client, "w1@host", info={"name": "w1@host", "pool": "solo", "concurrency": 1,
                                                 "queues": ["default", "state"], "pid": 42},
                  processes={42: {"active": [], "reserved": [], "processed": 3, "failed": 1}})
    workers = client.simulate_get("/api/workers").json
    assert list(workers) == ["w1@host"]
    entry = workers["w1@host"]
    assert {"active_queues", "conf", "registered", "stats", "timestamp"} <= set(entry)
    assert [q["name"] for q in entry["active_queues"]] == ["default", "state"]
    assert entry["conf"]["pool"] == "solo" and entry["stats"]["pid"] == 42
    assert entry["timestamp"] == pytest.approx(time.time(), abs=60)
    assert client.simulate_get("/api/workers", params={"status": "1"}).json == {"w1@host": True}
    assert client.simulate_get("/api/workers", params={"workername": "w1@host"}).json.keys() == {"w1@host"}
    unknown = client.simulate_get("/api/workers", params={"workername": "nope@host"})
    assert unknown.status_code == 404 and "nope@host" in unknown.json["reason"]


def test_api_tasks_filters_sorts_and_pages_the_history(client, redis_client):
    now = time.time()
    write(redis_client,
          record("a", state="SUCCESS", args="['hello']", runtime=0.5, at_s=now - 3),
          record("b", "task-failed", state="FAILURE", exception="ValueError('bad')", runtime=2.0, at_s=now - 2),
          record("c", task="update_langgraph_state_task", worker="w2@host", state="SUCCESS", runtime=1.0,
                 at_s=now - 1))

    everything = client.simulate_get("/api/tasks").json
    assert list(everything) == ["c", "b", "a"]  # newest first
    task = everything["a"]
    assert task["name"] == "tasks.process_message_task" and task["uuid"] == "a" and task["state"] == "SUCCESS"
    assert set(task) >= {"received", "started", "succeeded", "args", "kwargs", "retries", "exception",
                         "traceback", "runtime", "worker", "children", "root_id"}

    def ids(**params):
        return list(client.simulate_get("/api/tasks", params=params).json)

    assert ids(state="FAILURE") == ["b"]
    assert ids(taskname="tasks.update_langgraph_state_task") == ["c"] == ids(taskname="update_langgraph_state_task")
    assert ids(workername="w2@host") == ["c"]
    assert ids(search="hello") == ["a"]
    assert ids(sort_by="runtime") == ["a", "c", "b"] and ids(sort_by="-runtime") == ["b", "c", "a"]
    assert ids(limit="1", offset="1") == ["b"]


@pytest.mark.parametrize("params, reason", [
    ({"limit": "ten"}, "limit must be a whole number"),
    ({"limit": "0"}, "limit must be at least 1"),
    ({"offset": "-1"}, "offset must be at least 0"),
    ({"sort_by": "colour"}, "cannot sort by 'colour'"),
    ({"state": "LOST"}, "state must be one of"),
])
def test_bad_task_queries_get_400_with_the_reason(client, params, reason):
    response = client.simulate_get("/api/tasks", params=params)
    assert response.status_code == 400 and reason in response.json["reason"]


def test_tasks_queued_before_any_worker_ran_them_show_as_pending(client, broker, redis_client):
    waiting = broker.get_actor("process_message_task").send("conv", 1)
    delayed = broker.get_actor("update_langgraph_state_task").send_with_options(args=("c2",), delay=60_000)
    tasks = client.simulate_get("/api/tasks").json
    assert tasks[waiting.message_id]["state"] == "PENDING"
    assert tasks[waiting.message_id]["args"] == "['conv', 1]"
    assert tasks[delayed.message_id]["eta"] == pytest.approx(time.time() + 60, abs=5)
    assert client.simulate_get(f"/api/task/info/{waiting.message_id}").json["state"] == "PENDING"


def test_api_task_info_answers_a_task_or_404_json(client, redis_client):
    write(redis_client, record("t1", "task-failed", state="FAILURE", exception="ValueError('x')",
                               traceback="Traceback (most recent call last): ..."))
    info = client.simulate_get("/api/task/info/t1").json
    assert info["state"] == "FAILURE" and info["traceback"].startswith("Traceback")
    missing = client.simulate_get("/api/task/info/nope")
    assert missing.status_code == 404 and missing.json == {"error": "Not Found", "reason": "unknown task 'nope'"}


def test_api_queue_lengths_count_waiting_messages_by_their_redis_list(client, broker):
    for _ in range(3):
        broker.get_actor("process_message_task").send()
    broker.get_actor("update_langgraph_state_task").send()
    assert client.simulate_get("/api/queues/length").json == {
        "active_queues": [{"name": "celery", "messages": 3}, {"name": "state", "messages": 1}]}


def test_api_queue_lengths_agree_with_the_broker_page_counts(client, broker, redis_client):
    broker.get_actor("process_message_task").send()
    # a message the old Celery deployment left in a priority side list is not waiting in our list yet
    redis_client.rpush("celery\x06\x163", b"{}")
    lengths = {q["name"]: q["messages"] for q in client.simulate_get("/api/queues/length").json["active_queues"]}
    assert lengths["celery"] == broker.queue_sizes("default")["waiting"] == 1


def test_api_task_types_and_what_is_not_offered(client):
    assert client.simulate_get("/api/task/types").json == {"task-types": ["tasks.process_message_task"]}
    revoke = client.simulate_post("/api/task/revoke/abc", headers=ACTION)
    assert revoke.status_code == 501 and "revoke is not offered" in revoke.json["reason"]
    ranged = client.simulate_get("/api/tasks", params={"received_start": "2026-01-01 10:00"})
    assert ranged.status_code == 400 and "received_start is not supported" in ranged.json["reason"]


def test_healthcheck_answers_ok(client):
    response = client.simulate_get("/healthcheck")
    assert response.status_code == 200 and response.text == "OK"


def test_metrics_use_flowers_names_and_the_queue_depths(client, broker, redis_client):
    write(redis_client, record("t1", state="SUCCESS", runtime=0.3), record("t2", state="SUCCESS", runtime=4.0))
    registry.beat(redis_client, "w1@host", info={"name": "w1@host"},
                  processes={1: {"active": [{"id": "x"}], "reserved": [
                      {"id": "y", "name": "tasks.process_message_task"},
                      {"id": "z", "name": "tasks.process_message_task"}]}})
    broker.get_actor("process_message_task").send()
    families = {f.name: f for f in text_string_to_metric_families(client.simulate_get("/metrics").text)}

    def value(family, suffix="", **labels):
        return next(s.value for s in families[family].samples
                    if s.name == family + suffix and all(s.labels.get(k) == v for k, v in labels.items()))

    labels = {"task": "process_message_task", "worker": "w1@host"}
    assert value("flower_events", "_total", type="task-succeeded", **labels) == 2
    assert value("flower_task_runtime_seconds", "_count", **labels) == 2
    assert value("flower_task_runtime_seconds", "_bucket", le="0.5", **labels) == 1
    assert value("flower_worker_online", worker="w1@host") == 1
    assert value("flower_worker_number_of_currently_executing_tasks", worker="w1@host") == 1
    assert value("flower_worker_prefetched_tasks", worker="w1@host", task="process_message_task") == 2
    assert value("assistant_queue_messages", queue="default", state="waiting") == 1
    assert value("assistant_queue_messages", queue="state", state="dead") == 0
    assert value("assistant_queue_oldest_waiting_age_seconds", queue="default") >= 0


def test_metrics_say_offline_only_for_workers_seen_within_the_age_bound(client, redis_client):
    write(redis_client, record("t1", worker="gone@host"), record("t2", worker="recent@host"))
    redis_client.zadd(keys.task_workers_key(), {"gone@host": int(time.time() * 1000) - 700_000})
    write(redis_client, record("t3", worker="recent@host"))  # ttl 600 s: gone@host's fields go
    text = client.simulate_get("/metrics").text
    assert 'flower_worker_online{worker="recent@host"} 0.0' in text
    assert "gone@host" not in text


# -- pages ----------------------------------------------------------------------------------------------------


def test_pages_render_and_escape_untrusted_text(client, broker, redis_client):
    write(redis_client, record("t1", state="FAILURE", args="['<script>alert(1)</script>']",
                               exception="ValueError('<b>x</b>')", traceback="Traceback <i>"))
    broker.get_actor("process_message_task").send("<img src=x>")
    for path in ("/", "/workers", "/tasks", "/task/t1", "/broker", "/queue/default", "/queue/celery", "/dead",
                 "/broker/dead/default"):
        response = client.simulate_get(path)
        assert response.status_code == 200, path
        assert "<script>alert" not in response.text and "<img src=x>" not in response.text, path
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in client.simulate_get("/tasks").text
    assert "&lt;img src=x&gt;" in client.simulate_get("/queue/default").text


@pytest.mark.parametrize("path", ["/queue/nope", "/broker/dead/nope", "/task/nope", "/worker/nope@host"])
def test_unknown_things_are_404_json(client, path):
    response = client.simulate_get(path)
    assert response.status_code == 404 and response.json["error"] == "Not Found"


# -- actions --------------------------------------------------------------------------------------------------


def dead_letter(broker, redis_client):
    message = broker.get_actor("process_message_task").send("c", 2)
    entry = {"message_id": message.message_id, "queue_name": "default", "error": "ValueError('x')",
             "traceback": "Traceback", "failed_at": int(time.time() * 1000), "message": message.asdict(),
             "raw": None}
    redis_client.delete("celery")
    redis_client.zadd(keys.dead_key("default"), {message.message_id: entry["failed_at"]})
    redis_client.hset(keys.dead_messages_key("default"), message.message_id, json.dumps(entry))
    return message


def test_retry_action_puts_the_message_back_and_answers_json(client, broker, redis_client):
    message = dead_letter(broker, redis_client)
    response = client.simulate_post(f"/broker/dead/default/{message.message_id}/retry", headers=ACTION)
    assert response.status_code == 200 and response.json["ok"] is True
    assert json.loads(redis_client.lindex("celery", 0))["message_id"] == message.message_id
    again = client.simulate_post(f"/broker/dead/default/{message.message_id}/retry", headers=ACTION)
    assert again.status_code == 404 and "no dead letter" in again.json["reason"]


def test_a_dead_letter_whose_id_holds_a_slash_is_retried_from_its_pages_button(client, broker, redis_client):
    import html
    import re

    message = dead_letter(broker, redis_client)
    odd = "celery/one+two&x=1"
    entry = json.loads(redis_client.hget(keys.dead_messages_key("default"), message.message_id))
    entry["message_id"] = entry["message"]["message_id"] = odd
    redis_client.delete(keys.dead_key("default"), keys.dead_messages_key("default"))
    redis_client.zadd(keys.dead_key("default"), {odd: entry["failed_at"]})
    redis_client.hset(keys.dead_messages_key("default"), odd, json.dumps(entry))
    page = client.simulate_get("/broker/dead/default").text
    retry = html.unescape(re.search(r'class="retry" data-action="([^"]+)"', page).group(1))
    path, _, query = retry.partition("?")
    response = client.simulate_post(path, query_string=query, headers=ACTION)
    assert response.status_code == 200 and response.json["id"] == odd
    assert json.loads(redis_client.lindex("celery", 0))["message_id"] == odd
    missing = client.simulate_post("/broker/dead/default/retry", headers=ACTION)
    assert missing.status_code == 400 and missing.json["reason"] == "id is required"


def test_delete_action_forgets_the_message(client, broker, redis_client):
    message = dead_letter(broker, redis_client)
    response = client.simulate_post(f"/broker/dead/default/{message.message_id}/delete", headers=ACTION)
    assert response.status_code == 200
    assert redis_client.zcard(keys.dead_key("default")) == 0 and redis_client.llen("celery") == 0


@pytest.mark.parametrize("headers, reason", [
    ({}, "actions need the X-Monitor-Action header"),
    ({**ACTION, "Origin": "https://evil.example"}, "cross-origin action refused"),
    ({**ACTION, "Sec-Fetch-Site": "cross-site"}, "cross-site action refused"),
])
def test_actions_a_cross_site_page_could_forge_are_refused(client, broker, redis_client, headers, reason):
    message = dead_letter(broker, redis_client)
    response = client.simulate_post(f"/broker/dead/default/{message.message_id}/retry", headers=headers)
    assert response.status_code == 403 and response.json["reason"] == reason
    assert redis_client.zcard(keys.dead_key("default")) == 1


def test_a_same_origin_action_is_accepted(client, broker, redis_client):
    message = dead_letter(broker, redis_client)
    headers = {**ACTION, "Origin": "http://falconframework.org", "Sec-Fetch-Site": "same-origin"}
    response = client.simulate_post(f"/broker/dead/default/{message.message_id}/retry", headers=headers)
    assert response.status_code == 200


# -- auth and prefix ------------------------------------------------------------------------------------------


def test_basic_auth_guards_everything_but_healthcheck_and_metrics(make_client):
    client = make_client(credentials=("admin:s3cret", "ops:other"))
    for path in ("/", "/tasks", "/api/workers"):
        refused = client.simulate_get(path)
        assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Basic")
        assert client.simulate_get(path, headers=basic("admin", "wrong")).status_code == 401
        assert client.simulate_get(path, headers=basic("admin", "s3cret")).status_code == 200
        assert client.simulate_get(path, headers=basic("ops", "other")).status_code == 200
    assert client.simulate_get("/healthcheck").status_code == 200
    assert client.simulate_get("/metrics").status_code == 200
    assert client.simulate_get("/", headers={"Authorization": "Basic !!!"}).status_code == 401


def test_the_api_needs_auth_unless_flower_unauthenticated_api_is_set(make_client):
    closed = make_client(unauthenticated_api=False)
    refused = closed.simulate_get("/api/workers")
    assert refused.status_code == 401 and "FLOWER_UNAUTHENTICATED_API" in refused.json["reason"]
    assert closed.simulate_get("/workers").status_code == 200  # pages stay open without --basic-auth
    assert make_client(unauthenticated_api=True).simulate_get("/api/workers").status_code == 200


@pytest.mark.parametrize("prefix, path", [("", "//api/workers"), ("/flower", "/flower//api/workers"),
                                          ("/flower", "/flower/api//workers"), ("", "///api/task/info/x")])
def test_repeated_slashes_do_not_open_the_api(make_client, prefix, path):
    client = make_client(unauthenticated_api=False, url_prefix=prefix)
    assert client.simulate_get(path).status_code == 401


def test_actions_need_auth_as_strictly_as_the_api(make_client, broker, redis_client):
    message = dead_letter(broker, redis_client)
    closed = make_client(unauthenticated_api=False)
    refused = closed.simulate_post(f"/broker/dead/default/{message.message_id}/retry", headers=ACTION)
    assert refused.status_code == 401 and redis_client.zcard(keys.dead_key("default")) == 1
    authed = make_client(unauthenticated_api=False, credentials=("admin:pw",))
    assert authed.simulate_post(f"/broker/dead/default/{message.message_id}/retry",
                                headers={**ACTION, **basic("admin", "pw")}).status_code == 200


def test_a_host_name_outside_the_allowlist_is_refused_dns_rebinding(make_client, broker, redis_client):
    client = make_client(allowed_hosts=("localhost", "127.0.0.1", "::1", "monitor.internal"))
    rebound = client.simulate_get("/workers", headers={"Host": "evil.example:5555"})
    assert rebound.status_code == 400 and "FLOWER_ALLOWED_HOSTS" in rebound.json["reason"]
    assert client.simulate_get("/api/workers", headers={"Host": "evil.example"}).status_code == 400
    for host in ("localhost:5555", "127.0.0.1", "[::1]:5555", "MONITOR.internal"):
        assert client.simulate_get("/workers", headers={"Host": host}).status_code == 200, host
    # probes and scrapers name whatever host they reach the monitor by
    assert client.simulate_get("/metrics", headers={"Host": "monitor:5555"}).status_code == 200
    message = dead_letter(broker, redis_client)
    # same-origin after a rebinding: Origin and Host agree, but name the attacker's host
    forged = client.simulate_post(f"/broker/dead/default/{message.message_id}/retry",
                                  headers={**ACTION, "Host": "evil.example:5555", "Origin": "http://evil.example:5555"})
    assert forged.status_code == 400 and redis_client.zcard(keys.dead_key("default")) == 1
    # behind a proxy that rewrites Host, an allowed Origin is accepted
    proxied = client.simulate_post(f"/broker/dead/default/{message.message_id}/retry",
                                   headers={**ACTION, "Host": "127.0.0.1:5555", "Origin": "https://monitor.internal"})
    assert proxied.status_code == 200
    anywhere = make_client(allowed_hosts=("*",))
    assert anywhere.simulate_get("/workers", headers={"Host": "evil.example"}).status_code == 200


def test_allowed_host_names_follow_the_bind_address():
    import socket

    from facade.commands.flower import allowed_host_names

    assert allowed_host_names("127.0.0.1", ()) == ("localhost", "127.0.0.1", "::1")
    assert allowed_host_names("10.0.0.5", ("monitor.example",)) == (
        "localhost", "127.0.0.1", "::1", "monitor.example", "10.0.0.5")
    assert socket.gethostname().lower() in allowed_host_names("0.0.0.0", ())


def test_the_url_prefix_serves_everything_under_it_links_too(make_client):
    client = make_client(url_prefix="/flower")
    page = client.simulate_get("/flower/workers")
    assert page.status_code == 200 and 'href="/flower/tasks"' in page.text
    assert client.simulate_get("/flower/healthcheck").text == "OK"
    assert client.simulate_get("/flower/api/queues/length").status_code == 200
    assert client.simulate_get("/flower").status_code == 301
    outside = client.simulate_get("/workers")
    assert outside.status_code == 404 and "/flower/" in outside.json["reason"]


def test_config_reads_the_monitors_settings():
    from app.config import Config
    from app.errors import ConfigError

    cfg = Config.from_env({"MONITOR_MAX_TASKS": "50", "MONITOR_TASK_TTL_SECONDS": "3600",
                           "FLOWER_UNAUTHENTICATED_API": "true"})
    assert (cfg.monitor_max_tasks, cfg.monitor_task_ttl_s, cfg.flower_unauthenticated_api) == (50, 3600.0, True)
    assert Config.from_env({}).flower_unauthenticated_api is False
    cfg = Config.from_env({"FLOWER_BASIC_AUTH": "admin:pw", "FLOWER_ALLOWED_HOSTS": "Monitor.example, ,x.org"})
    assert cfg.flower_basic_auth == "admin:pw" and "admin:pw" not in repr(cfg)
    assert cfg.flower_allowed_hosts == ("monitor.example", "x.org")
    with pytest.raises(ConfigError, match="FLOWER_UNAUTHENTICATED_API must be true or false"):
        Config.from_env({"FLOWER_UNAUTHENTICATED_API": "maybe"})
    with pytest.raises(ConfigError, match="MONITOR_MAX_TASKS"):
        Config.from_env({"MONITOR_MAX_TASKS": "0"})


def test_a_plain_page_of_tasks_matches_the_same_slice_of_the_full_list(client, broker, redis_client):
    # Given history records and queued messages interleaved in time, one queued message also in the history
    now = time.time()
    write(redis_client, record("old", at_s=now - 30, state="SUCCESS"), record("mid", at_s=now - 10, state="SUCCESS"))
    queued = broker.get_actor("process_message_task").send("q")
    write(redis_client, record(queued.message_id, "task-retried", at_s=now - 5, state="RETRY"))
    fresh = broker.get_actor("update_langgraph_state_task").send("s")
    write(redis_client, record("new", at_s=time.time() + 1, state="SUCCESS"))

    everything = list(client.simulate_get("/api/tasks").json)
    assert len(everything) == 5 and everything[0] == "new" and everything[-1] == "old"
    assert fresh.message_id in everything
    for offset in range(5):
        page = client.simulate_get("/api/tasks", params={"limit": "2", "offset": str(offset)}).json
        assert list(page) == everything[offset:offset + 2]
    # the history's record wins over the queued copy
    assert client.simulate_get("/api/tasks", params={"limit": "5"}).json[queued.message_id]["state"] == "RETRY"
    page = client.simulate_get("/tasks")
    assert page.status_code == 200 and "5 task(s)." in page.text


def test_promtool_finds_nothing_to_lint_in_the_metrics(client, broker, redis_client):
    import shutil
    import subprocess

    promtool = shutil.which("promtool")
    assert promtool, "promtool (Debian's prometheus package) is part of the test set-up"
    write(redis_client, record("t1", state="SUCCESS", runtime=0.3))
    registry.beat(redis_client, "w1@host", info={"name": "w1@host"}, processes={1: {"active": [], "reserved": []}})
    text = client.simulate_get("/metrics").text
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout == result.stderr == "", result.stdout + result.stderr


def test_the_worker_page_shows_its_processes_and_running_tasks(client, redis_client):
    running = {"id": "task-1", "name": "tasks.process_message_task", "args": ["<conv>"], "kwargs": {},
               "time_start": time.time(), "worker_pid": 42}
    registry.beat(redis_client, "w1@host", info={"name": "w1@host", "pool": "prefork", "concurrency": 2,
                                                 "queues": ["default"], "pid": 41},
                  processes={42: {"index": 1, "active": [running], "reserved": [], "processed": 7, "rss_kib": 1000}})
    page = client.simulate_get("/worker/w1@host")
    assert page.status_code == 200
    assert "<td>42</td>" in page.text and "task-1" in page.text and "&lt;conv&gt;" in page.text
    assert "prefork" in page.text and ">7<" in page.text


def test_the_oldest_waiting_age_reads_each_priority_bands_tail(broker, redis_client):
    import random

    from actors import queue_browser
    from actors.envelope import encode

    rng = random.Random(7)
    now_ms = int(time.time() * 1000)
    for n in range(400):
        priority = rng.choice([0, 3, 5, 9])
        stamp = now_ms - 1_000_000 + n * 1000
        message = dramatiq.Message(queue_name="default", actor_name="process_message_task", args=(n,), kwargs={},
                                   options={}, message_timestamp=stamp)
        broker.scripts["enqueue"](keys=[keys.queue_key("default")], args=[encode(message, priority)])
    assert queue_browser.oldest_waiting_age_s(broker, "default", now_ms=now_ms) == pytest.approx(1000.0)
    # without the oldest, another band's tail holds the oldest of the rest
    for raw in redis_client.lrange(keys.queue_key("default"), 0, -1):
        if json.loads(raw)["message_timestamp"] == now_ms - 1_000_000:
            redis_client.lrem(keys.queue_key("default"), 0, raw)
    expected = min(json.loads(r)["message_timestamp"] for r in redis_client.lrange(keys.queue_key("default"), 0, -1))
    assert queue_browser.oldest_waiting_age_s(broker, "default", now_ms=now_ms) == pytest.approx(
        (now_ms - expected) / 1000)
    assert queue_browser.oldest_waiting_age_s(broker, "state", now_ms=now_ms) == 0.0


def test_the_tasks_page_and_api_say_how_many_queued_messages_they_leave_out(client, broker, monkeypatch):
    from facade.monitor import tasks

    monkeypatch.setattr(tasks, "QUEUED_SCAN_LIMIT", 2)
    for n in range(5):
        broker.get_actor("process_message_task").send(n)
    page = client.simulate_get("/tasks").text
    assert "3 more are not listed here" in page and 'href="/queue/default"' in page
    response = client.simulate_get("/api/tasks")
    assert len(response.json) == 2 and response.headers["X-Queued-Not-Listed"] == "default=3"
    assert response.headers["X-Total-Count"] == "2"


def test_task_info_of_a_queued_message_decodes_only_the_message_holding_its_id(client, broker, monkeypatch):
    from actors import queue_browser

    sent = [broker.get_actor("process_message_task").send(n) for n in range(30)]
    retry = broker.get_actor("process_message_task").message(99).copy(options={"retries": 2})
    broker.enqueue(retry, delay=60_000)
    decoded = []
    real = queue_browser._describe
    monkeypatch.setattr(queue_browser, "_describe", lambda raw, *a, **kw: decoded.append(raw) or real(raw, *a, **kw))
    assert client.simulate_get("/api/task/info/nope").status_code == 404 and decoded == []
    info = client.simulate_get(f"/api/task/info/{sent[3].message_id}").json
    assert info["state"] == "PENDING" and info["args"] == "[3]" and len(decoded) == 1
    info = client.simulate_get(f"/api/task/info/{retry.message_id}").json
    assert info["state"] == "RETRY" and info["eta"] is not None
