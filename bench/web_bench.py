"""The web path of this project: ``POST /webhook`` under a fixed rate with wrk, and
end to end, inbound message to the reply the WhatsApp stand-in receives.

Both run ``gunicorn wsgi:app --workers 2`` (the repository's gunicorn.conf.py,
access log included) on the system's Redis and a fresh PostgreSQL database
(migrated by ``assistant migrate``, dropped after), with the offline model.
The load test runs without a worker, so the worker's CPU does not weigh on
the web numbers (messages wait in Redis); end to end runs
``dramatiq actors -p 2 -t 8`` with a buffer window of 0.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis

from app.devtools.demo import sign
from app.devtools.whatsapp_standin import WhatsAppStandin
from bench.procs import BenchError, free_port, percentile, wait_until
from bench.queue_bench import Scale
from bench.systems import PY, ROOT
from bench.workers import Worker

APP_SECRET = "bench-app-secret"
PHONE_NUMBER_ID = "106540352242922"
FIXTURE = ROOT / "app" / "devtools" / "fixtures" / "text.json"
WRK_SCRIPT = Path(__file__).with_name("wrk") / "webhook.lua"
WRK_HELP = ("wrk is not installed: the web benchmark needs it (Debian/Ubuntu: sudo apt-get install wrk; "
            "elsewhere build https://github.com/wg/wrk), or skip the web path with --no-web")


def text_body(wamid: str, wa_id: str, text: str) -> bytes:
    """The text fixture from another customer with another wamid, as new bytes to sign."""
    body = json.loads(FIXTURE.read_bytes())
    value = body["entry"][0]["changes"][0]["value"]
    message = value["messages"][0]
    message["id"], message["from"], message["text"]["body"] = wamid, wa_id, text
    message["timestamp"] = str(int(time.time()))
    value["contacts"][0]["wa_id"] = wa_id
    value["contacts"][0]["user_id"] = f"US.{wa_id}"
    return json.dumps(body, separators=(",", ":")).encode()


class TimedStandin(WhatsAppStandin):
    """The WhatsApp stand-in, stamping when each request arrived (``received_at``, epoch s)."""

    def record(self, request: dict[str, Any]) -> None:
        request["received_at"] = time.time()
        super().record(request)


class PostgresDatabase:
    """A fresh database on the server of ``admin_url``, dropped by :meth:`drop`."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.name = f"bench_wa_{int(time.time())}_{uuid.uuid4().hex[:8]}"
        try:
            with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
                conn.execute(f'CREATE DATABASE "{self.name}"')
        except psycopg.Error as e:
            raise BenchError(f"cannot create a PostgreSQL database through {admin_url!r} ({e}); "
                             f"pass --pg-admin URL or --no-web") from None
        self.url = f"{admin_url.rsplit('/', 1)[0]}/{self.name}"

    def drop(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


class WebStack:
    """gunicorn (2 workers) and, on demand, a worker, for the web benchmarks."""

    def __init__(self, *, redis_url: str, db_url: str, log_dir: Path, whatsapp_url: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_dir = log_dir
        self.env = {k: v for k, v in os.environ.items() if k != "GOOGLE_API_KEY"}
        self.env.update({
            "REDIS_URI": redis_url, "DB_URL": db_url, "PYTHONPATH": str(ROOT),
            "WHATSAPP_TOKEN": "bench-whatsapp-token", "WHATSAPP_PHONE_NUMBER_ID": PHONE_NUMBER_ID,
            "WHATSAPP_APP_SECRET": APP_SECRET, "WHATSAPP_VERIFY_TOKEN": "bench-verify-token",
            "WHATSAPP_API_BASE": f"{whatsapp_url}/v21.0", "BUFFER_WINDOW_SECONDS": "0",
            "WEB_PORT": str(self.port), "LANGGRAPH_STRICT_MSGPACK": "true",
        })
        migrate = subprocess.run([str(Path(PY).parent / "assistant"), "migrate"], cwd=ROOT, env=self.env,
                                 capture_output=True, text=True, timeout=300)
        if migrate.returncode != 0:
            raise BenchError(f"assistant migrate failed:\n{migrate.stdout[-2000:]}{migrate.stderr[-2000:]}")
        self.web = Worker([PY, "-m", "gunicorn", "wsgi:app", "-c", "python:app.web.gunicorn_conf",
                           "--bind", f"127.0.0.1:{self.port}",
                           "--workers", "2"], self.env, log_dir / "gunicorn.log")
        self.http = httpx.Client(base_url=self.url, timeout=30)
        self.worker: Worker | None = None

        def answers() -> bool:
            self.web.check()
            try:
                return self.http.get("/").status_code < 500
            except httpx.TransportError:
                return False

        wait_until(answers, timeout_s=120, what="gunicorn to answer", interval_s=0.1)

    def start_worker(self) -> Worker:
        self.worker = Worker([PY, "-m", "dramatiq", "actors", "--processes", "2", "--threads", "8"],
                             self.env, self.log_dir / "app-worker.log")
        return self.worker

    def post(self, body: bytes) -> httpx.Response:
        return self.http.post("/webhook", content=body, headers={
            "Content-Type": "application/json", "X-Hub-Signature-256": sign(body, APP_SECRET)})

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        self.web.stop()
        self.http.close()


def webhook_load(stack: WebStack, scale: Scale, work_dir: Path) -> dict[str, float]:
    """wrk against ``POST /webhook`` at ``scale.web_rate`` requests/s for ``scale.web_seconds``."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise BenchError(WRK_HELP)
    count = int(scale.web_rate * scale.web_seconds * 1.5) + 100
    bodies = work_dir / "webhook-bodies.tsv"
    run_id = uuid.uuid4().hex[:8].upper()
    with open(bodies, "w") as out:
        for i in range(count):
            body = text_body(f"wamid.BENCH{run_id}{i:08d}", f"1555{i % 500:07d}", f"load message {i}")
            out.write(f"{sign(body, APP_SECRET)}\t{body.decode()}\n")
    threads, connections = 2, max(4, scale.web_rate // 5)
    env = {**os.environ, "BENCH_BODIES": str(bodies), "BENCH_THREADS": str(threads),
           # Each thread's connections share a schedule of web_rate / threads requests/s.
           "BENCH_INTERVAL_MS": str(1000 * threads / scale.web_rate)}
    done = subprocess.run([wrk, "-t", str(threads), "-c", str(connections), "-d", f"{scale.web_seconds}s",
                           "--timeout", "10s", "-s", str(WRK_SCRIPT), stack.url],
                          capture_output=True, text=True, env=env, timeout=scale.web_seconds + 120)
    stack.web.check()
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    errors = sum(v for k, v in raw.items() if k.startswith("errors_"))
    if raw["requests"] == 0:
        raise BenchError(f"wrk sent no request:\n{done.stdout[-2000:]}")
    return {"web_requests": raw["requests"], "web_rate": raw["requests"] / (raw["duration_us"] / 1e6),
            "web_errors": errors, "web_p50_ms": raw["p50_us"] / 1000, "web_p99_ms": raw["p99_us"] / 1000,
            "web_max_ms": raw["max_us"] / 1000}


def end_to_end(stack: WebStack, standin: TimedStandin, scale: Scale, *, seed: int) -> list[float]:
    """Milliseconds from posting an inbound text to the stand-in receiving its reply, one
    new customer per message, ``scale.e2e_messages`` of them 0.2-0.6 s apart (after one warm-up)."""
    rng = random.Random(seed)
    run_id = uuid.uuid4().hex[:8].upper()
    sent: dict[str, float] = {}
    for i in range(scale.e2e_messages + 1):
        wa_id = f"1666{rng.randrange(10**7):07d}{i:02d}"
        body = text_body(f"wamid.E2E{run_id}{i:06d}", wa_id, f"end to end {i}")
        started = time.time()
        response = stack.post(body)
        if response.status_code != 200:
            raise BenchError(f"POST /webhook answered {response.status_code}: {response.text[:300]}")
        if i == 0:  # the warm-up: graph, database and model clients come up on the first task
            _wait_replies(stack, standin, {wa_id: started})
            continue
        sent[wa_id] = started
        time.sleep(rng.uniform(0.2, 0.6))
    replies = _wait_replies(stack, standin, sent)
    return [1000 * (replies[w] - sent[w]) for w in sent]


def _wait_replies(stack: WebStack, standin: TimedStandin, sent: dict[str, float]) -> dict[str, float]:
    replies: dict[str, float] = {}

    def all_replied() -> bool:
        if stack.worker is not None:
            stack.worker.check()
        for request in standin.requests():
            body = request.get("body")
            if request.get("kind") == "send" and isinstance(body, dict) and body.get("to") in sent:
                replies.setdefault(body["to"], request["received_at"])
        return len(replies) == len(sent)

    wait_until(all_replied, timeout_s=180, what=f"{len(sent)} replies at the WhatsApp stand-in",
               interval_s=0.01)
    return replies


def run(*, redis_url: str, pg_admin_url: str, scale: Scale, log_dir: Path, seed: int) -> dict[str, Any]:
    """Both web benchmarks and the full application worker's memory, for this project."""
    database = PostgresDatabase(pg_admin_url)
    standin = TimedStandin()
    standin.start()
    stack: WebStack | None = None
    work_dir = Path(tempfile.mkdtemp(prefix="bench-web-"))
    try:
        stack = WebStack(redis_url=redis_url, db_url=database.url, log_dir=log_dir, whatsapp_url=standin.url)
        result: dict[str, Any] = webhook_load(stack, scale, work_dir)
        redis.Redis.from_url(redis_url).flushdb()  # the load's waiting messages are not end to end's
        worker = stack.start_worker()
        latencies = end_to_end(stack, standin, scale, seed=seed)
        result["e2e_p50_ms"] = percentile(latencies, 50)
        result["e2e_p99_ms"] = percentile(latencies, 99)
        result["e2e_latencies_ms"] = latencies
        memory = worker.memory()
        result["app_worker_rss_mib"] = memory["rss_mib"]
        result["app_worker_pss_mib"] = memory["pss_mib"]
        return result
    finally:
        if stack is not None:
            stack.stop()
        standin.stop()
        database.drop()
        shutil.rmtree(work_dir, ignore_errors=True)
