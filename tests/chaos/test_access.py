"""Scenario 7: access.  A private Redis with ``requirepass``; every process works
with the password in REDIS_URI and stops with one clear line without it (or
with a wrong one); the monitor and the operator API refuse callers without
credentials; and no secret shows in any log line, /health, /metrics (web and
worker ports) or the monitor's pages and API.

The secrets are distinctive and hold characters that URL-encoding changes,
so each is searched as written and in its encoded forms.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote, quote_plus

import httpx
import pytest
from sqlalchemy.engine import make_url

from app.devtools.whatsapp_standin import WhatsAppStandin
from tests.support.celery_worker import CELERY, ROOT, CeleryWorker
from tests.support.fixtures import sign, text_body, value_of
from tests.support.monitor import Monitor, http
from tests.support.redis_server import PrivateRedis, free_port
from tests.support.stack import PHONE_NUMBER_ID, Stack
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

APP_SECRET = "chaos/app+Secret=3K9"
VERIFY_TOKEN = "chaos/verify+Token=5M2"
OPERATOR_TOKEN = "chaos/operator+Token=8P4"
WHATSAPP_TOKEN = "EAAchaos/wa+Token=7Q1"
REDIS_PASSWORD = "chaos/redis+Pass=2W6"
WRONG_REDIS_PASSWORD = "chaos/wrong+Pass=9Z5"
DB_PASSWORD = "chaos/db+Pass=6R3"
FLOWER_USER, FLOWER_PASSWORD = "admin", "chaos/flower+Pass=4T8"

SECRETS = {"app secret": APP_SECRET, "verify token": VERIFY_TOKEN, "operator token": OPERATOR_TOKEN,
           "WhatsApp token": WHATSAPP_TOKEN, "Redis password": REDIS_PASSWORD,
           "wrong Redis password": WRONG_REDIS_PASSWORD, "database password": DB_PASSWORD,
           "monitor password": FLOWER_PASSWORD}


def secret_forms() -> dict[str, str]:
    """Each secret as written, URL-encoded (both ways), and the monitor's basic-auth header value."""
    forms = {}
    for name, value in SECRETS.items():
        for form in {value, quote(value), quote(value, safe=""), quote_plus(value)}:
            forms[form] = name
    forms[base64.b64encode(f"{FLOWER_USER}:{FLOWER_PASSWORD}".encode()).decode()] = "monitor credentials"
    return forms


def leaks(outputs: dict[str, str]) -> list[str]:
    """Where a secret shows: "<secret> in <output>"."""
    return [f"{name} ({form!r}) in {where}" for where, text in outputs.items()
            for form, name in secret_forms().items() if form in text]


def redis_url(server: PrivateRedis, password: str | None) -> str:
    auth = f":{quote(password, safe='')}@" if password else ""
    return f"redis://{auth}127.0.0.1:{server.port}/0"


def db_url() -> str:
    # The run's PostgreSQL trusts local connections: the password travels in the URL and is never asked for.
    return make_url(os.environ["DB_URL"]).set(password=DB_PASSWORD).render_as_string(hide_password=False)


def environment(redis_uri: str, **more: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k != "GOOGLE_API_KEY"},
            "REDIS_URI": redis_uri, "DB_URL": db_url(), "WHATSAPP_TOKEN": WHATSAPP_TOKEN,
            "WHATSAPP_APP_SECRET": APP_SECRET, "WHATSAPP_VERIFY_TOKEN": VERIFY_TOKEN, "OPERATOR_TOKEN": OPERATOR_TOKEN,
            "FLOWER_BASIC_AUTH": f"{FLOWER_USER}:{FLOWER_PASSWORD}", "WHATSAPP_PHONE_NUMBER_ID": PHONE_NUMBER_ID,
            "BUFFER_WINDOW_SECONDS": "0.3", "RETRY_DELAYS_SECONDS": "0.5,1,2", **more}


def message(n: int) -> bytes:
    """A signed-to-be text message from customer ``n`` (a conversation of its own)."""
    body = json.loads(text_body(f"wamid.CHAOS-ACCESS-{n}", f"access check {n}", wa_id=f"1888000000{n}"))
    value_of(body)["contacts"][0]["user_id"] = f"US.ACCESS{n}"
    return json.dumps(body).encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = PrivateRedis(tmp_path_factory.mktemp("redis"), password=REDIS_PASSWORD)
    yield server
    server.stop()


def test_with_the_password_everything_works_and_no_secret_shows_anywhere(server, db, tmp_path, figures):
    # Given the web app, both kinds of worker and the monitor on a Redis with a password
    (tmp_path / "stack").mkdir()
    url = redis_url(server, REDIS_PASSWORD)
    standin = WhatsAppStandin().start()
    env = environment(url, WHATSAPP_API_BASE=f"{standin.url}/v21.0")
    # (the worker and the monitor start first: they load while the stack starts)
    worker_env = env | {"WORKER_METRICS_PORT": str(free_port())}
    processes = [CeleryWorker(["worker", "-l", "info", "-P", "solo"], tmp_path / "celery-worker.log", worker_env),
                 CeleryWorker(["flower", "--port=0"], tmp_path / "monitor.log", env)]
    worker, monitor_process = processes
    stopped = False
    try:
        stack = Stack(redis_url=url, db_url=db_url(), log_dir=tmp_path / "stack",
                      env={k: env[k] for k in ("WHATSAPP_TOKEN", "WHATSAPP_APP_SECRET", "WHATSAPP_VERIFY_TOKEN",
                                               "OPERATOR_TOKEN", "FLOWER_BASIC_AUTH", "WHATSAPP_API_BASE")}
                      | {"WORKER_METRICS_PORT": str(free_port())})
    except BaseException:
        standin.stop()
        for process in processes:
            process.kill_all()
        raise
    # One stand-in for both workers (stopped with the stack)
    stack.whatsapp.stop()
    stack.whatsapp = standin
    try:
        monitor = Monitor(monitor_process)
        worker.wait_ready()
        health = wait_for(lambda: (lambda r: r if r.status_code == 200 and
                                   r.json()["celery"] == "2 worker(s) active" else None)(stack.http.get("/health")),
                          timeout_s=120, interval_s=0.2)
        answers: dict[str, str] = {"/health": health.text}

        # When Meta, an operator, an intruder and WhatsApp (refusing a send with 401) do their part
        def post(body: bytes, secret: str = APP_SECRET) -> httpx.Response:
            return stack.post(body, signature=sign(body, secret))

        handshake = {"hub.mode": "subscribe", "hub.challenge": "4242"}
        assert stack.http.get("/webhook", params=handshake | {"hub.verify_token": VERIFY_TOKEN}).text == "4242"
        assert stack.http.get("/webhook", params=handshake | {"hub.verify_token": "guess"}).status_code == 403
        assert post(message(1), secret="not-the-app-secret").status_code == 401
        assert post(message(1)).status_code == 200
        stack.wait_for_sends(1)
        stack.whatsapp.fail(code=190, http_status=401)
        assert post(message(2)).status_code == 200
        wait_for(lambda: any(r["response"]["status"] == 401 for r in stack.whatsapp.requests()), timeout_s=60)
        # (both workers take part: more customers write until each has run a task)
        written = [2]

        def both_ran() -> bool:
            logs = [worker.output(), (tmp_path / "stack" / "worker.log").read_text(errors="replace")]
            if all(" succeeded in " in log for log in logs):
                return True
            assert written[0] < 20, "a worker never ran a task"
            written[0] += 1
            assert post(message(written[0])).status_code == 200
            return False

        wait_for(both_ran, timeout_s=120, interval_s=1)
        stack.wait_idle()
        customer = "18880000001"
        assert stack.operator("GET", customer, token=OPERATOR_TOKEN).status_code == 200
        for token in (None, "guess", OPERATOR_TOKEN[:-1]):
            refused = stack.operator("GET", customer, token=token)
            assert refused.status_code == 401 and refused.json()["title"], refused.text
            answers[f"operator API without the token ({token!r})"] = refused.text

        # Then the monitor lets in its user only (its health and metrics are open, as Flower's)
        auth = (FLOWER_USER, FLOWER_PASSWORD)
        for wrong in (None, (FLOWER_USER, "guess"), ("guess", FLOWER_PASSWORD)):
            for path in ("/", "/tasks", "/api/workers", "/api/tasks"):
                assert monitor.get(path, auth=wrong).status == 401, (path, wrong)
        tasks = monitor.get("/api/tasks", auth=auth)
        workers = monitor.get("/api/workers", auth=auth)
        assert tasks.status == workers.status == 200
        task_id, node = next(iter(tasks.json)), next(iter(workers.json))
        for path in ("/", "/workers", f"/worker/{node}", "/tasks", f"/task/{task_id}", "/broker", "/queue/default",
                     "/dead", "/api/workers", "/api/tasks", f"/api/task/info/{task_id}", "/api/queues/length",
                     "/api/task/types", "/metrics", "/healthcheck"):
            page = monitor.get(path, auth=auth)
            assert page.status == 200, (path, page.text[:300])
            answers[f"monitor {path}"] = page.text + json.dumps(page.headers)

        # and no secret shows in any answer, metrics or log line
        answers["web /metrics"] = stack.http.get("/metrics").text
        for name, port in (("dramatiq", stack.env["WORKER_METRICS_PORT"]),
                           ("celery", worker_env["WORKER_METRICS_PORT"])):
            metrics = wait_for(lambda port=port: _get(f"http://127.0.0.1:{port}/metrics"), timeout_s=60)
            answers[f"{name} worker /metrics"] = metrics.text
        # (the search finds a secret where one belongs: the stand-in saw the token of each send)
        assert leaks({"stand-in": json.dumps(stack.whatsapp.requests())})
        replies = len(stack.sends())
        for process in processes:
            process.signal(signal.SIGTERM)
        stack.stop()
        stopped = True
        for process in processes:
            process.wait(60)
        outputs = answers | {f"log {p.name}": p.read_text(errors="replace") for p in tmp_path.rglob("*.log")}
        # (the logs saw the WhatsApp 401)
        assert "190" in outputs["log worker.log"] + outputs["log celery-worker.log"]
        figures(messages=written[0], replies=replies, secrets=len(SECRETS), forms_searched=len(secret_forms()),
                outputs_searched=len(outputs), bytes_searched=sum(len(t) for t in outputs.values()),
                leaks=len(leaks(outputs)))
        assert leaks(outputs) == []
    finally:
        if not stopped:
            stack.stop()
        for process in processes:
            process.kill_all()


def start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def test_without_the_password_or_with_a_wrong_one_each_process_says_so_in_one_line(server, tmp_path, figures):
    # Given each process started with REDIS_URI lacking the password, or holding a wrong one
    cases = {"missing": (None, "it requires a password and REDIS_URI has none"),
             "wrong": (WRONG_REDIS_PASSWORD, "it refused the password in REDIS_URI")}
    clis: dict[tuple[str, str], subprocess.Popen] = {}
    webs: dict[str, tuple[subprocess.Popen, httpx.Client]] = {}
    try:
        for case, (password, _) in cases.items():
            env = environment(redis_url(server, password), WORKER_METRICS_PORT="0")
            for name, argv in (("celery-worker", [CELERY, "-A", "tasks", "worker", "-l", "info", "-P", "solo"]),
                               ("dramatiq", [sys.executable, "-m", "dramatiq", "actors", "--processes", "1",
                                             "--threads", "1"]),
                               ("monitor", [CELERY, "-A", "tasks", "flower", "--port=0"])):
                clis[case, name] = start(argv, env, tmp_path / f"{case}-{name}.log")
            port = free_port()
            web = start([sys.executable, "-m", "gunicorn", "wsgi:app", "--bind", f"127.0.0.1:{port}",
                         "--workers", "1", "--access-logfile", "-"], env, tmp_path / f"{case}-web.log")
            webs[case] = (web, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30))

        # Then the web app answers, but /health names the refusal and the webhook says 503 (Meta retries)
        for case, (_web, client) in webs.items():
            wait_for(lambda client=client: _answers(client), timeout_s=120, interval_s=0.2)
            health = client.get("/health")
            assert health.status_code == 503 and health.json()["redis"] == "unavailable: authentication failed", \
                (case, health.text)
            body = message(3)
            hook = client.post("/webhook", content=body, headers={"X-Hub-Signature-256": sign(body, APP_SECRET),
                                                                   "Content-Type": "application/json"})
            assert hook.status_code == 503 and hook.json()["title"], (case, hook.text)
        # and the workers and the monitor stop at once, with one line saying why and no traceback
        codes = {}
        for (case, name), proc in clis.items():
            try:
                codes[case, name] = proc.wait(120)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"{name} still runs with a {case} password") from None
        for (case, name), code in codes.items():
            output = (tmp_path / f"{case}-{name}.log").read_text(errors="replace")
            said = [line for line in output.splitlines() if "Redis authentication failed at " in line]
            assert code != 0 and len(said) == 1 and cases[case][1] in said[0], (case, name, code, output)
            assert "Traceback" not in output, output
        assert {codes[c, "celery-worker"] for c in cases} == {codes[c, "monitor"] for c in cases} == {69}
        assert {codes[c, "dramatiq"] for c in cases} == {3}
    finally:
        for proc in clis.values():
            _end(proc)
        for web, client in webs.values():
            client.close()
            _end(web)
    # and none of them showed a secret, the wrong password included
    outputs = {p.name: p.read_text(errors="replace") for p in tmp_path.glob("*.log")}
    figures(processes=len(clis) + len(webs), exit_codes=sorted(set(codes.values())), leaks=len(leaks(outputs)))
    assert leaks(outputs) == []


def _get(url: str):
    """The answer of ``url`` when it is 200, else None (not serving yet)."""
    try:
        response = http(url, timeout_s=5)
    except OSError:
        return None
    return response if response.status == 200 else None


def _answers(client: httpx.Client) -> bool:
    try:
        return client.get("/").status_code == 200
    except httpx.TransportError:
        return False


def _end(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
