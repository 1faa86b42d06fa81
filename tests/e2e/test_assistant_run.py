"""The issue's "Done when": the README's first command (``./run.sh``, which runs
``assistant run``: private Redis, SQLite, offline model, WhatsApp stand-in)
answers ``assistant demo``, and every fixture posted to it ends as the
fixtures' README says.

Nothing is configured but DATA_DIR (a temporary directory) and WEB_PORT (a
free port): the stack uses its local-mode app secret and verify token, as
a newcomer's would, and its default 3 s buffer window.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from actors.broker import RedisBroker
from app.db import Message, make_engine, make_session_factory
from app.db.models import Conversation
from app.devtools.demo import sign
from app.devtools.local import LOCAL_APP_SECRET, LOCAL_VERIFY_TOKEN
from app.web.webhook import ERROR_COUNTS_KEY
from tests.support.fixtures import (
    ANSWERED,
    CUSTOMER,
    FAILED_WAMID,
    FIXTURES,
    OFFLINE,
    QUOTED,
    STATUS_WAMID,
    raw,
)
from tests.support.redis_server import free_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
#: The console script run.sh ends in (``exec .venv/bin/assistant run``).
ASSISTANT = str(Path(sys.executable).with_name("assistant"))


class LocalStack:
    """``assistant run`` as a process, and what its output says about it."""

    def __init__(self, tmp_path: Path, *, monitor_port: int | None = None) -> None:
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("REDIS_URI", "DB_URL", "GOOGLE_API_KEY", "OPERATOR_TOKEN")
                    and not k.startswith(("WHATSAPP_", "BUFFER_"))}
        self.port = free_port()
        self.monitor_port = monitor_port or free_port()
        self.worker_metrics_port = free_port()
        self.data_dir = tmp_path / "data"
        self.env.update(DATA_DIR=str(self.data_dir), WEB_PORT=str(self.port), MONITOR_PORT=str(self.monitor_port),
                        WORKER_METRICS_PORT=str(self.worker_metrics_port))
        self.url = f"http://127.0.0.1:{self.port}"
        self.monitor_url = f"http://127.0.0.1:{self.monitor_port}"
        self.lines: list[str] = []
        self.proc = subprocess.Popen([ASSISTANT, "run"], cwd=ROOT,
                                     env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=lambda: self.lines.extend(iter(self.proc.stdout.readline, "")), daemon=True).start()
        self.redis_url = self.find(r"Redis: (redis://127\.0\.0\.1:\d+/0) \(private")[1]
        self.standin_url = self.find(r"WhatsApp: local stand-in at (http://127\.0\.0\.1:\d+)")[1]
        self.find(r"Worker process is ready for action")
        self.find(rf"Listening at: http://127\.0\.0\.1:{self.port}")
        if monitor_port is None:
            self.find(rf"Visit me at http://127\.0\.0\.1:{self.monitor_port}")
        self.redis = redis.Redis.from_url(self.redis_url)
        self.broker = RedisBroker(client=self.redis, middleware=[])
        self.sessions = make_session_factory(make_engine(f"sqlite:///{self.data_dir / 'assistant.sqlite3'}"))

    def output(self) -> str:
        return "".join(self.lines)

    def find(self, pattern: str) -> re.Match:
        def found():
            return next((m for m in (re.search(pattern, line) for line in list(self.lines)) if m), None)

        try:
            return wait_for(found, timeout_s=90, interval_s=0.05)
        except AssertionError:
            raise AssertionError(f"{pattern!r} not in the output of assistant run:\n{self.output()}") from None

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(120)
        finally:
            self.redis.close()
            self.sessions.kw["bind"].dispose()

    def http(self, method: str, url: str, body: bytes | None = None, headers: dict | None = None):
        request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def post(self, fixture: str) -> dict:
        body = raw(fixture)
        status, answer = self.http("POST", f"{self.url}/webhook", body,
                                   {"Content-Type": "application/json",
                                    "X-Hub-Signature-256": sign(body, LOCAL_APP_SECRET)})
        assert status == 200, answer
        return json.loads(answer)

    def sends(self) -> list[dict]:
        _, data = self.http("GET", f"{self.standin_url}/_standin/requests")
        return [dict(r["body"], wamid=r["response"]["body"]["messages"][0]["id"]) for r in json.loads(data)
                if r["kind"] == "send" and r["response"]["status"] == 200]

    def next_wamids(self, *ids: str) -> None:
        status, _ = self.http("POST", f"{self.standin_url}/_standin/ids", json.dumps({"ids": list(ids)}).encode(),
                              {"Content-Type": "application/json"})
        assert status == 200

    def idle(self) -> bool:
        """No task waits, runs or is delayed on either queue."""
        return not any(sum(self.broker.queue_sizes(queue)[n] for n in ("waiting", "inflight", "delayed"))
                       for queue in ("default", "state"))

    def message(self, wamid: str) -> Message | None:
        with self.sessions() as session:
            return session.scalars(select(Message).where(Message.wamid == wamid)).first()

    def conversation(self, key: str) -> Conversation | None:
        with self.sessions() as session:
            return session.scalars(select(Conversation).where(Conversation.customer_key == key)).first()


@pytest.fixture
def local_stack(tmp_path):
    stack = LocalStack(tmp_path)
    # It writes down where its stand-in is, for the demo
    assert (stack.data_dir / "whatsapp-standin.url").read_text().strip() == stack.standin_url
    yield stack
    code = stack.stop()
    # A SIGTERM stops everything it started, in order and cleanly, and leaves no stale stand-in address
    assert code == 0, stack.output()
    assert "Killing worker process" not in stack.output()
    assert not (stack.data_dir / "whatsapp-standin.url").exists()


def _answered(stack: LocalStack, fixture: str, *, to: str = CUSTOMER, recipient: str | None = None) -> dict:
    """Post ``fixture`` and return the one reply it gets."""
    before = len(stack.sends())
    stack.post(fixture)
    reply = wait_for(lambda: stack.sends()[before:], timeout_s=60)[0]
    wait_for(stack.idle, timeout_s=60)
    assert len(stack.sends()) == before + 1, f"{fixture}: {stack.sends()[before:]}"
    if recipient is None:
        assert reply["to"] == to and "recipient" not in reply
    else:
        assert reply["recipient"] == recipient and "to" not in reply
    return reply


def _stored_unanswered(stack: LocalStack, fixture: str, wamid: str) -> Message:
    before = len(stack.sends())
    stack.post(fixture)
    message = wait_for(lambda: stack.message(wamid), timeout_s=60)
    wait_for(stack.idle, timeout_s=60)
    assert len(stack.sends()) == before, f"{fixture} was answered"
    return message


def test_assistant_run_answers_the_demo_and_every_fixture_as_the_readme_says(local_stack):
    stack = local_stack
    done: set[str] = set()

    # The newcomer's first demo: text.json, answered through the whole stack
    demo = subprocess.run([ASSISTANT, "demo", "text.json"], cwd=ROOT, env=stack.env,
                          capture_output=True, text=True, timeout=120)
    assert demo.returncode == 0, demo.stdout + demo.stderr + stack.output()
    assert demo.stdout.splitlines()[-1] == f"[assistant] Reply to {CUSTOMER}: {OFFLINE}Does it come in another color?"
    wait_for(stack.idle, timeout_s=60)
    done.add("text.json")
    # Run again, it is a Meta retry: the demo says so; --fresh sends the messages as new ones
    again = subprocess.run([ASSISTANT, "demo", "text.json"], cwd=ROOT, env=stack.env,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and "--fresh" in again.stderr, again.stdout + again.stderr
    fresh = subprocess.run([ASSISTANT, "demo", "text.json", "--fresh"], cwd=ROOT,
                           env=stack.env, capture_output=True, text=True, timeout=120)
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    assert fresh.stdout.splitlines()[-1] == demo.stdout.splitlines()[-1]
    wait_for(stack.idle, timeout_s=60)
    assert len(stack.sends()) == 2

    # verification.json: the challenge with the right token, 403 with a wrong one
    spec = json.loads((FIXTURES / "verification.json").read_text())
    query = "&".join(f"{k}={v}" for k, v in dict(spec["query"], **{"hub.verify_token": LOCAL_VERIFY_TOKEN}).items())
    assert stack.http("GET", f"{stack.url}{spec['path']}?{query}") == (200, spec["expect"]["body"].encode())
    wrong = query.replace(LOCAL_VERIFY_TOKEN, "wrong")
    assert stack.http("GET", f"{stack.url}{spec['path']}?{wrong}")[0] == spec["wrong_token_expect"]["status"]
    done.add("verification.json")

    # errors_system_level.json: 200, logged and counted
    assert stack.post("errors_system_level.json")["errors"] == 1
    assert stack.redis.hget(ERROR_COUNTS_KEY, "131000") == b"1"
    done.add("errors_system_level.json")

    # A status before its message (status_read.json), applied when the reply with that wamid is stored;
    # then sent, delivered and the out-of-order body leave it read
    assert stack.post("status_read.json")["statuses"] == 1
    wait_for(stack.idle, timeout_s=60)
    stack.next_wamids(STATUS_WAMID)
    reply = _answered(stack, "text_non_ascii.json")
    assert reply["text"]["body"] == OFFLINE + ANSWERED["text_non_ascii.json"][1]
    assert reply["wamid"] == STATUS_WAMID
    assert stack.message(STATUS_WAMID).status == "read"
    for fixture in ("status_sent.json", "status_delivered.json", "status_out_of_order.json"):
        assert stack.post(fixture)["statuses"] >= 1
        wait_for(stack.idle, timeout_s=60)
        assert stack.message(STATUS_WAMID).status == "read", fixture
    done |= {"status_read.json", "text_non_ascii.json", "status_sent.json", "status_delivered.json",
             "status_out_of_order.json"}

    # status_failed.json: failed, with Meta's code and title
    stack.next_wamids(FAILED_WAMID)
    _answered(stack, "unsupported.json")
    assert stack.post("status_failed.json")["statuses"] == 1
    failed = wait_for(lambda: (m := stack.message(FAILED_WAMID)) and m.status == "failed" and m, timeout_s=60)
    assert (failed.error_code, failed.error_title) == (131047, "Re-engagement message")
    done |= {"unsupported.json", "status_failed.json"}

    # Every other message type: one reply, written from its description
    for fixture, (_, seen) in sorted(ANSWERED.items()):
        if fixture in done:
            continue
        reply = _answered(stack, fixture)
        assert reply["text"]["body"] == OFFLINE + seen, fixture
        done.add(fixture)
    assert stack.message("wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBRSRVBMWVRPMDAwMDAwMDAwMDAwAA==").context_id == QUOTED
    unsupported = stack.message(json.loads(raw("unsupported.json"))["entry"][0]["changes"][0]["value"]
                                ["messages"][0]["id"])
    assert unsupported.kind == "unsupported"

    # username_only.json: keyed by user id, answered as recipient
    reply = _answered(stack, "username_only.json", recipient="BR.70021933458812006655")
    assert reply["text"]["body"] == OFFLINE + "hello, do you ship to Brazil?"
    done.add("username_only.json")

    # multi_message.json: two conversations, the first one's two messages in one call
    before = len(stack.sends())
    stack.post("multi_message.json")
    replies = wait_for(lambda: len(stack.sends()) >= before + 2 and stack.sends()[before:], timeout_s=60)
    wait_for(stack.idle, timeout_s=60)
    assert len(stack.sends()) == before + 2
    assert {r["to"]: r["text"]["body"] for r in replies} == {
        CUSTOMER: OFFLINE + "Hi! I ordered a lamp last week", "447700900123": OFFLINE + "Is the shop open on Sunday?"}
    done.add("multi_message.json")

    # Reactions: stored, not answered (after the customer's last answered message: a reaction
    # stays in the history the model reads, as the customer's turn)
    for fixture, emoji in (("reaction.json", "👍"), ("reaction_removed.json", "")):
        wamid = json.loads(raw(fixture))["entry"][0]["changes"][0]["value"]["messages"][0]["id"]
        message = _stored_unanswered(stack, fixture, wamid)
        assert (message.kind, message.emoji, message.reaction_to) == ("reaction", emoji, QUOTED)
        done.add(fixture)

    # system_user_changed_number.json (last: the customer's number changes): stored, not answered
    wamid = json.loads(raw("system_user_changed_number.json"))["entry"][0]["changes"][0]["value"]["messages"][0]["id"]
    _stored_unanswered(stack, "system_user_changed_number.json", wamid)
    assert stack.conversation(CUSTOMER).wa_id == "16505559876"
    done.add("system_user_changed_number.json")

    # Every fixture was checked, and nothing went to the dead-letter sets
    assert done == {p.name for p in FIXTURES.glob("*.json")}
    assert stack.broker.dead_letters("default") + stack.broker.dead_letters("state") == []


def _metric_families(text: str) -> dict[str, list]:
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def test_assistant_run_reports_itself_as_the_runbook_checks_it(local_stack):
    stack = local_stack
    # curl localhost:5000/health: the stack's one worker node, both stores, empty queues
    def healthy():
        status, body = stack.http("GET", f"{stack.url}/health")
        return status == 200 and json.loads(body)

    health = wait_for(healthy, timeout_s=60)
    assert {k: health[k] for k in ("status", "redis", "database", "celery", "queues")} == {
        "status": "healthy", "redis": "connected", "database": "connected", "celery": "1 worker(s) active",
        "queues": {"default": 0, "state": 0}}

    # A conversation moves the web's counters and the worker's, each read by Prometheus's own parser
    stack.post("text.json")
    wait_for(lambda: stack.sends(), timeout_s=60)
    wait_for(stack.idle, timeout_s=60)
    status, web = stack.http("GET", f"{stack.url}/metrics")
    assert status == 200
    web_samples = _metric_families(web.decode())
    assert any(s.labels == {"outcome": "accepted"} and s.value == 1
               for s in web_samples["assistant_webhook_requests"])
    status, worker = stack.http("GET", f"http://127.0.0.1:{stack.worker_metrics_port}/metrics")
    assert status == 200
    succeeded = {s.labels["task"]: s.value for s in _metric_families(worker.decode())["assistant_tasks_succeeded"]
                 if s.name.endswith("_total")}
    assert succeeded.get("process_message_task") == 1

    # The monitor on loopback: its health check, and the worker and queues on its first page
    assert stack.http("GET", f"{stack.monitor_url}/healthcheck") == (200, b"OK")
    status, page = stack.http("GET", f"{stack.monitor_url}/workers")
    assert status == 200
    assert re.search(rb"dramatiq\.\d+@", page) and b"Online" in page, page
    status, workers = stack.http("GET", f"{stack.monitor_url}/api/workers?status=1")
    assert status == 200 and list(json.loads(workers).values()) == [True]


def test_a_taken_monitor_port_costs_only_the_monitor(tmp_path):
    # Given something else on the monitor's port
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        stack = LocalStack(tmp_path, monitor_port=taken.getsockname()[1])
        try:
            # Then assistant run says so and runs on: the web app answers and the worker beats
            stack.find(r"monitor exited with code 1; the rest runs on")
            status, body = wait_for(lambda: (answer := stack.http("GET", f"{stack.url}/health"))[0] == 200
                                    and answer, timeout_s=60)
            assert json.loads(body)["celery"] == "1 worker(s) active"
        finally:
            code = stack.stop()
    assert code == 0, stack.output()
