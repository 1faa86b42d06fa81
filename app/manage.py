"""``assistant``: run the whole system on one machine, or migrate the database.

``assistant run`` is the README's first command.  With no REDIS_URI it
starts a private redis-server (installing Debian's package if it is
missing and it may), with no DB_URL it uses SQLite, with no
GOOGLE_API_KEY the offline model, and with no WHATSAPP_TOKEN a local
WhatsApp stand-in (with fixed local app secret and verify token); then it
creates the tables and runs the web app (gunicorn), a worker (the
``dramatiq`` CLI) and the monitor (``celery -A tasks flower`` on loopback,
MONITOR_PORT) until stopped.  Production runs each of those under
systemd instead (deploy/).

``assistant demo [fixture]`` posts a signed fixture to the running web app
and prints the reply the stand-in received; ``assistant whatsapp-standin``
runs the stand-in alone.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import redis

from app.checkpoints import open_checkpoints
from app.config import Config, child_environment, mask_url
from app.db import create_schema, make_engine
from app.devtools import local
from app.devtools.demo import DemoError, find_fixture, run_demo, standin_url_file
from app.errors import ConfigError

__all__ = ["main"]

#: Seconds the private Redis may take to answer its first PING.
REDIS_START_TIMEOUT_S = 15


def _say(text: str) -> None:
    print(f"[assistant] {text}", flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _redis_server_binary() -> str:
    binary = shutil.which("redis-server")
    if binary:
        return binary
    if os.geteuid() == 0 and shutil.which("apt-get"):
        _say("redis-server is missing; installing Debian's package...")
        env = child_environment(DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "redis-server"], check=True, env=env)
        binary = shutil.which("redis-server")
        if binary:
            return binary
    raise SystemExit(
        "assistant: REDIS_URI is not set and redis-server is not installed; "
        "install it (apt-get install redis-server) or set REDIS_URI"
    )


def start_private_redis(data_dir: Path) -> tuple[subprocess.Popen, str]:
    """A redis-server on a free loopback port, keeping its data under ``data_dir``."""
    folder = data_dir / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    proc = subprocess.Popen(
        [
            _redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder.resolve()),
            "--appendonly", "yes", "--save", "", "--logfile", str((folder / "redis.log").resolve()),
        ],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + REDIS_START_TIMEOUT_S
    while True:
        try:
            client.ping()
            return proc, url
        except redis.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise SystemExit(
                    f"assistant: the private redis-server did not start (see {folder / 'redis.log'})"
                ) from None
            time.sleep(0.05)


def start_whatsapp_standin(data_dir: Path) -> tuple[subprocess.Popen, str]:
    """The WhatsApp stand-in on a free loopback port; its URL is written
    under ``data_dir`` for ``assistant demo``."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.manage", "whatsapp-standin", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + REDIS_START_TIMEOUT_S
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_standin/requests", timeout=2):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise SystemExit("assistant: the WhatsApp stand-in did not start") from None
            time.sleep(0.05)
    data_dir.mkdir(parents=True, exist_ok=True)
    standin_url_file(data_dir).write_text(url + "\n")
    return proc, url


def migrate(config: Config) -> None:
    """Migrate the tables to the newest schema (Alembic) and set up
    LangGraph's checkpoint tables (the checkpointer's own migrations)."""
    engine = make_engine(config.db_url)
    try:
        create_schema(engine)
    finally:
        engine.dispose()
    checkpoints = open_checkpoints(config.db_url)
    try:
        checkpoints.setup()
    finally:
        checkpoints.close()


def _stop(procs: list[tuple[str, subprocess.Popen, float]]) -> None:
    # Web first (no new work), then the worker (finishes what it runs), Redis last.
    for name, proc, timeout_s in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                _say(f"{name} did not stop in {timeout_s:g}s; killing it")
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def run(config: Config, *, worker_threads: int) -> int:
    """Run Redis (if private), the web app and one worker until a signal or a crash."""
    env = child_environment()
    redis_proc = None
    if config.redis_is_default:
        redis_proc, url = start_private_redis(Path(config.data_dir))
        env["REDIS_URI"] = url
        _say(f"Redis: {url} (private, data in {Path(config.data_dir) / 'redis'})")
    else:
        _say(f"Redis: {mask_url(config.redis_uri)}")
    standin_proc = None
    if not config.whatsapp_token:
        standin_proc, standin_url = start_whatsapp_standin(Path(config.data_dir))
        env.update(
            WHATSAPP_TOKEN=local.LOCAL_WHATSAPP_TOKEN,
            WHATSAPP_API_BASE=f"{standin_url}/{local.STANDIN_API_VERSION}",
            WHATSAPP_PHONE_NUMBER_ID=config.whatsapp_phone_number_id or local.LOCAL_PHONE_NUMBER_ID,
            WHATSAPP_APP_SECRET=config.whatsapp_app_secret or local.LOCAL_APP_SECRET,
            WHATSAPP_VERIFY_TOKEN=config.whatsapp_verify_token or local.LOCAL_VERIFY_TOKEN,
        )
        _say(f"WhatsApp: local stand-in at {standin_url} (no WHATSAPP_TOKEN); `assistant demo` posts to it")
    else:
        _say(f"WhatsApp: {config.whatsapp_api_base}")
    _say(f"Database: {mask_url(config.db_url)}")
    if config.uses_offline_model:
        _say("Model: offline (no GOOGLE_API_KEY)")
    else:
        where = f" at {config.gemini_api_base}" if config.gemini_api_base else ""
        _say(f"Model: Gemini {config.gemini_model}{where}")
    migrate(config)

    python = sys.executable
    # Each child gets its own session: a Ctrl-C reaches only this process,
    # which then stops the children in order (Dramatiq's worker takes a
    # second signal as "kill now").
    web = subprocess.Popen(
        [python, "-m", "gunicorn", "wsgi:app", "-c", "python:app.web.gunicorn_conf",
         "--bind", f"127.0.0.1:{config.web_port}", "--workers", "2", "--access-logfile", "-"],
        env=env,
        start_new_session=True,
    )
    worker = subprocess.Popen(
        [python, "-m", "dramatiq", "actors", "--processes", "1", "--threads", str(worker_threads)],
        env=env,
        start_new_session=True,
    )
    # How long each may take to stop: the worker lets running tasks finish,
    # up to the hard time limit.
    procs = [("web", web, 30.0)]
    monitor = None
    if config.monitor_port:
        # Loopback only and without credentials, its API and dead-letter buttons
        # included: this is one person's machine.
        monitor = subprocess.Popen(
            [python, "-m", "facade", "-A", "tasks", "flower", f"--port={config.monitor_port}",
             "--address=127.0.0.1", "-l", "info"],
            env={**env, "FLOWER_UNAUTHENTICATED_API": "true"},
            start_new_session=True,
        )
        procs.append(("monitor", monitor, 30.0))
    procs.append(("worker", worker, config.time_limit_s + 30))
    if standin_proc is not None:
        procs.append(("whatsapp-standin", standin_proc, 10.0))
    if redis_proc is not None:
        procs.append(("redis", redis_proc, 30.0))
    _say(f"Web: http://127.0.0.1:{config.web_port}/ (pid {web.pid}); worker pid {worker.pid}. Ctrl-C stops.")
    if monitor is not None:
        _say(f"Monitor: http://127.0.0.1:{config.monitor_port}/ (pid {monitor.pid})")

    stopping = False

    def on_signal(signum, _frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    code = 0
    while not stopping:
        for entry in procs:
            name, proc, _ = entry
            if proc.poll() is None:
                continue
            if name == "monitor":
                # Only a view (its port may be taken): the system runs on without it.
                _say(f"monitor exited with code {proc.returncode}; the rest runs on "
                     "(MONITOR_PORT picks another port, 0 starts none)")
                procs.remove(entry)
                break
            _say(f"{name} exited with code {proc.returncode}; stopping everything")
            code = proc.returncode or 1
            stopping = True
            break
        time.sleep(0.2)
    _stop(procs)
    if standin_proc is not None:
        standin_url_file(Path(config.data_dir)).unlink(missing_ok=True)
    return code


def demo(config: Config, fixture: str, *, webhook_url: str | None, standin_url: str | None, timeout_s: float,
         fresh: bool) -> int:
    """Post a signed fixture and print the stand-in's replies; 1 when none came."""
    try:
        path = find_fixture(fixture)
        if standin_url is None:
            url_file = standin_url_file(Path(config.data_dir))
            if not url_file.is_file():
                raise DemoError(f"no WhatsApp stand-in is running ({url_file} is missing): start `assistant run` "
                                "without WHATSAPP_TOKEN, or pass --standin URL")
            standin_url = url_file.read_text().strip()
        webhook_url = webhook_url or f"http://127.0.0.1:{config.web_port}"
        _say(f"Posting {path.name} to {webhook_url}/webhook ...")
        result = run_demo(path, webhook_url=webhook_url, standin_url=standin_url,
                          secret=config.whatsapp_app_secret or local.LOCAL_APP_SECRET, timeout_s=timeout_s,
                          fresh=fresh)
    except DemoError as e:
        print(f"assistant demo: {e}", file=sys.stderr)
        return 1
    _say(f"Webhook answered {result.webhook_status}: {json.dumps(result.webhook_answer)}")
    if not result.replies:
        _say("No reply expected: this notification has no message to answer.")
    for reply in result.replies:
        body = reply["body"]
        _say(f"Reply to {body.get('to') or body.get('recipient')}: {body['text']['body']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="assistant", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="run Redis (if needed), the web app, a worker and the monitor")
    run_parser.add_argument("--threads", type=int, default=4, help="worker threads (default 4)")
    sub.add_parser("migrate", help="migrate the database tables and the checkpointer's")
    standin_parser = sub.add_parser("whatsapp-standin", help="run the local WhatsApp Cloud API stand-in")
    standin_parser.add_argument("--host", default="127.0.0.1")
    standin_parser.add_argument("--port", type=int, default=8081)
    demo_parser = sub.add_parser("demo", help="post a signed fixture to the running web app and print the reply")
    demo_parser.add_argument("fixture", nargs="?", default="text.json", help="fixture name or path (text.json)")
    demo_parser.add_argument("--url", help="the web app (default http://127.0.0.1:WEB_PORT)")
    demo_parser.add_argument("--standin", help="the WhatsApp stand-in (default: the one `assistant run` started)")
    demo_parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the reply (30)")
    demo_parser.add_argument("--fresh", action="store_true", help="give the messages new wamids (replayable)")
    args = parser.parse_args(argv)
    if args.command == "whatsapp-standin":
        from app.devtools.whatsapp_standin import main as standin_main

        return standin_main(["--host", args.host, "--port", str(args.port)])
    try:
        config = Config.from_env()
    except ConfigError as e:
        print(f"assistant: {e}", file=sys.stderr)
        return 2
    if args.command == "demo":
        return demo(config, args.fixture, webhook_url=args.url, standin_url=args.standin, timeout_s=args.timeout,
                    fresh=args.fresh)
    if args.command == "migrate":
        migrate(config)
        _say(f"Tables ready in {mask_url(config.db_url)}")
        return 0
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    return run(config, worker_threads=args.threads)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
