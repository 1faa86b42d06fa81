"""A running stack for end-to-end tests: ``gunicorn wsgi:app`` and ``dramatiq actors``
as subprocesses, on a Redis database of their own and the run's PostgreSQL
database, sending to a real WhatsApp stand-in (an HTTP server in the test
process), answering with the offline model.

Tests talk to it only as Meta, an operator and WhatsApp would: signed
POSTs to ``/webhook``, the operator API, and the stand-in's record.  The
database and Redis are read to check what was stored.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import redis

from actors.broker import RedisBroker
from app.devtools.whatsapp_standin import WhatsAppStandin
from tests.support.fixtures import APP_SECRET, sign
from tests.support.redis_server import free_port
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]

VERIFY_TOKEN = "e2e-verify-token"
OPERATOR_TOKEN = "e2e-operator-token"
#: The business number id of the fixtures' metadata.
PHONE_NUMBER_ID = "106540352242922"

#: Seconds a process may take to start answering on this (shared, busy) machine.
START_TIMEOUT_S = 60


def claim_redis_db(base_url: str) -> int:
    """An empty Redis database no other test run uses (the lock scheme of tests/conftest.py)."""
    admin = redis.Redis.from_url(base_url + "/0")
    for n in range(1, 16):
        if admin.set(f"tests:whatsapp-tasks:db-lock:{n}", os.getpid(), nx=True, ex=3 * 3600):
            if redis.Redis.from_url(f"{base_url}/{n}").dbsize() == 0:
                return n
            admin.delete(f"tests:whatsapp-tasks:db-lock:{n}")
    raise RuntimeError("no empty Redis database (1-15) is free for the end-to-end stack")


def release_redis_db(base_url: str, n: int) -> None:
    redis.Redis.from_url(f"{base_url}/{n}").flushdb()
    redis.Redis.from_url(base_url + "/0").delete(f"tests:whatsapp-tasks:db-lock:{n}")


#: The machine's Redis (tests/conftest.py claimed one database for the run; stacks claim their own).
REDIS_BASE = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")


@contextlib.contextmanager
def running_stack(log_dir: Path, env: dict[str, str] | None = None, **options: Any) -> Iterator[Stack]:
    """A :class:`Stack` on a Redis database of its own and the run's PostgreSQL database,
    stopped (and the Redis database freed) on exit; ``options`` go to :class:`Stack`."""
    n = claim_redis_db(REDIS_BASE)
    try:
        stack = Stack(redis_url=f"{REDIS_BASE}/{n}", db_url=os.environ["DB_URL"], env=env, log_dir=log_dir,
                      **options)
        try:
            yield stack
        finally:
            stack.stop()
    finally:
        release_redis_db(REDIS_BASE, n)


class Stack:
    """The web app and a worker as production runs them; see the module docstring.

    Parameters:
      redis_url: the stack's own Redis database.
      db_url: the (migrated) database.
      env: further environment of both processes (BUFFER_WINDOW_SECONDS...).
      worker_processes: ``dramatiq --processes``.
      worker: the worker's argv instead of ``python -m dramatiq actors ...``; ``[]``
        starts none (the test starts, kills and stops its workers itself, with :attr:`env`).
      whatsapp: a stand-in of the test's own (a subclass that holds or fails requests), started here.
    """

    def __init__(self, *, redis_url: str, db_url: str, env: dict[str, str] | None = None,
                 worker_processes: int = 1, log_dir: Path, worker: list[str] | None = None,
                 whatsapp: WhatsAppStandin | None = None) -> None:
        self.redis_url = redis_url
        self.redis = redis.Redis.from_url(redis_url)
        self.whatsapp = (WhatsAppStandin() if whatsapp is None else whatsapp).start()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        base = {k: v for k, v in os.environ.items() if k != "GOOGLE_API_KEY"}
        self.env = {
            **base,
            "REDIS_URI": redis_url,
            "DB_URL": db_url,
            "WHATSAPP_TOKEN": "e2e-whatsapp-token",
            "WHATSAPP_PHONE_NUMBER_ID": PHONE_NUMBER_ID,
            "WHATSAPP_APP_SECRET": APP_SECRET,
            "WHATSAPP_VERIFY_TOKEN": VERIFY_TOKEN,
            "WHATSAPP_API_BASE": f"{self.whatsapp.url}/v21.0",
            "OPERATOR_TOKEN": OPERATOR_TOKEN,
            "BUFFER_WINDOW_SECONDS": "0.3",
            "BUFFER_MAX_WAIT_SECONDS": "5",
            # (retries of transient failures after 0.5, 1 and 2 s instead of 5, 10 and 20)
            "RETRY_DELAYS_SECONDS": "0.5,1,2",
            "WEB_PORT": str(self.port),
            **(env or {}),
        }
        self.log_dir = log_dir
        self.http = httpx.Client(base_url=self.url, timeout=30)
        self.broker = RedisBroker(url=redis_url, middleware=[])
        self.procs: list[tuple[str, subprocess.Popen]] = []
        try:
            self._start("web", [sys.executable, "-m", "gunicorn", "wsgi:app", "--bind", f"127.0.0.1:{self.port}",
                                "--workers", "2", "--timeout", "60", "--access-logfile", "-"])
            if worker is None:
                worker = [sys.executable, "-m", "dramatiq", "actors", "--processes", str(worker_processes),
                          "--threads", "2"]
            if worker:
                self._start("worker", worker)
            wait_for(self._answers, timeout_s=START_TIMEOUT_S, interval_s=0.1)
        except BaseException:
            self.stop()
            raise

    def _start(self, name: str, argv: list[str]) -> None:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        log.close()
        self.procs.append((name, proc))

    def _answers(self) -> bool:
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.logs()}")
        try:
            return self.http.get("/").status_code == 200
        except httpx.TransportError:
            return False

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-6000:]}"
                         for p in sorted(self.log_dir.glob("*.log")))

    def stop(self) -> None:
        # The main processes only: Dramatiq's children take a second signal as "kill now".
        for _, proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc in self.procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.http.close()
        self.whatsapp.stop()
        self.broker.client.close()
        self.redis.close()

    def reset(self) -> None:
        """Forget the application's Redis state and the stand-in's record (between tests)."""
        self.wait_idle()
        keys = list(self.redis.scan_iter("app:*")) + list(self.redis.scan_iter("dramatiq:webhook.*"))
        if keys:
            self.redis.delete(*keys)
        self.whatsapp.clear()

    # -- As Meta -----------------------------------------------------------

    def post(self, body: bytes, *, signature: str | None = None, headers: dict[str, str] | None = None
             ) -> httpx.Response:
        """POST ``body`` (bytes, as they are) to /webhook, signed with the app secret unless told otherwise."""
        all_headers = {"Content-Type": "application/json",
                       "X-Hub-Signature-256": sign(body) if signature is None else signature, **(headers or {})}
        return self.http.post("/webhook", content=body, headers=all_headers)

    # -- As an operator ----------------------------------------------------

    def operator(self, method: str, path: str, body: Any = None, *, token: str | None = OPERATOR_TOKEN
                 ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.http.request(method, f"/operator/conversations/{path}", headers=headers,
                                 content=None if body is None else json.dumps(body).encode())

    def history(self, key: str) -> dict[str, Any]:
        response = self.operator("GET", key)
        assert response.status_code == 200, response.text
        return response.json()

    # -- What WhatsApp received --------------------------------------------

    def sends(self) -> list[dict[str, Any]]:
        """The text messages WhatsApp accepted, oldest first (their request bodies)."""
        return [dict(r["body"], wamid=r["response"]["body"]["messages"][0]["id"])
                for r in self.whatsapp.requests()
                if r["kind"] == "send" and r["response"]["status"] == 200]

    def reads(self) -> list[dict[str, Any]]:
        return [r["body"] for r in self.whatsapp.requests() if r["kind"] == "read"]

    def wait_for_sends(self, count: int, timeout_s: float = 60) -> list[dict[str, Any]]:
        return wait_for(lambda: len(self.sends()) >= count and self.sends(), timeout_s=timeout_s)

    def wait_idle(self, timeout_s: float = 60) -> None:
        """Until no task waits, runs or is delayed on either queue (a handback
        on ``state`` may send work to ``default``, so both are read at once)."""
        def idle() -> bool:
            for queue in ("default", "state"):
                sizes = self.broker.queue_sizes(queue)
                if sizes["waiting"] + sizes["inflight"] + sizes["delayed"]:
                    return False
            return True

        wait_for(idle, timeout_s=timeout_s, interval_s=0.05)

    def dead_letters(self) -> list[dict[str, Any]]:
        return self.broker.dead_letters("default") + self.broker.dead_letters("state")
