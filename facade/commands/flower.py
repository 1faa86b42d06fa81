"""Start the monitor, a Flower look-alike (``celery -A tasks flower``).

Flower's options: ``--address`` (default 127.0.0.1: loopback, where
Flower listens on every interface), ``--port`` (default 5555; 0 picks a
free one), ``--basic-auth=user:pass`` (repeatable and comma-separated),
``--url-prefix``, ``-l/--loglevel``; without ``--basic-auth`` the pairs of
FLOWER_BASIC_AUTH are used, as Flower does; the Tornado spellings
``--basic_auth``/``--url_prefix`` work too.  Flower options this project
does not offer are refused by name.  Served by waitress (threads);
SIGTERM and SIGINT stop it cleanly.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
import threading
from typing import Any

import redis

from app.config import mask_url
from facade import connection
from facade.cli import CliError, log_level, refuse_options

__all__ = ["configure", "run", "NOT_OFFERED", "SAMPLE_INTERVAL_S", "THREADS", "allowed_host_names"]

#: Seconds between two samples of the queues' sizes (the broker page's chart).
SAMPLE_INTERVAL_S = 5.0

#: Threads serving requests.
THREADS = 8

#: Flower options this project does not offer: (flags, takes a value, why).
NOT_OFFERED: list[tuple[tuple[str, ...], bool, str]] = [
    (("--persistent",), True, "the task history always lives in Redis (MONITOR_MAX_TASKS, MONITOR_TASK_TTL_SECONDS)"),
    (("--db",), True, "the task history always lives in Redis"),
    (("--state_save_interval", "--state-save-interval"), True, "the task history always lives in Redis"),
    (("--max_tasks", "--max-tasks"), True, "set MONITOR_MAX_TASKS for the workers, which write the history"),
    (("--max_workers", "--max-workers"), True, "workers come from the node registry, which expires them"),
    (("--auth",), True, "OAuth is not offered: use --basic-auth, or a proxy in front"),
    (("--auth_provider", "--auth-provider"), True, "OAuth is not offered: use --basic-auth, or a proxy in front"),
    (("--oauth2_key", "--oauth2-key", "--oauth2_secret", "--oauth2-secret", "--oauth2_redirect_uri",
      "--oauth2-redirect-uri"), True, "OAuth is not offered: use --basic-auth, or a proxy in front"),
    (("--certfile", "--keyfile", "--ca_certs", "--ca-certs"), True, "terminate TLS in a proxy in front"),
    (("--unix_socket", "--unix-socket"), True, "not offered: use --address and --port"),
    (("--enable_events", "--enable-events"), True, "workers always record task history; no Celery events"),
    (("--inspect_timeout", "--inspect-timeout"), True, "no inspect broadcasts: workers beat into a registry"),
    (("--broker_api", "--broker-api"), True, "the broker is Redis; queues are read from its keys"),
]


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (0-65535)")
    return port


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; Flower's default is every interface)")
    parser.add_argument("--port", type=_port, default=5555, help="port to listen on (default 5555; 0: any free)")
    parser.add_argument("--basic-auth", "--basic_auth", dest="basic_auth", action="append", default=[],
                        metavar="USER:PASSWORD", help="require these credentials (repeatable, comma-separated)")
    parser.add_argument("--url-prefix", "--url_prefix", dest="url_prefix", default="",
                        help="serve everything under this path (behind a proxy)")
    parser.add_argument("-l", "--loglevel", "--logging", type=log_level, default=logging.INFO,
                        help="DEBUG, INFO, WARNING, ERROR, CRITICAL or FATAL (default INFO)")
    refuse_options(parser, "flower", NOT_OFFERED)


#: Bind addresses meaning every interface.
WILDCARD_ADDRESSES = ("0.0.0.0", "::", "")


def allowed_host_names(address: str, configured: tuple[str, ...]) -> tuple[str, ...]:
    """The host names requests may name: loopback, the bind address (or, on every interface, this
    machine's names) and ``FLOWER_ALLOWED_HOSTS``."""
    from facade.monitor.auth import LOOPBACK_HOSTS

    names = [*LOOPBACK_HOSTS, *configured]
    address = address.strip().strip("[]").lower()
    if address in WILDCARD_ADDRESSES:
        names += [socket.gethostname().lower(), socket.getfqdn().lower()]
    else:
        names.append(address)
    return tuple(dict.fromkeys(names))


class _Stop(SystemExit):
    """Raised in the main thread by SIGTERM/SIGINT: waitress shuts down on SystemExit."""


def _sample_forever(broker: Any, queues: tuple[str, ...], stop: threading.Event) -> None:
    from actors.queue_samples import take_sample

    log = logging.getLogger("flower.sampler")
    failing = False
    while True:
        try:
            take_sample(broker, queues)
            failing = False
        except redis.RedisError as e:
            if not failing:
                log.warning("Could not sample the queues: %s", e)
            failing = True
        except Exception:
            log.critical("Unexpected failure of the queue sampler.", exc_info=True)
        if stop.wait(SAMPLE_INTERVAL_S):
            return


def run(args: argparse.Namespace) -> int:
    from facade.monitor.app import normalise_prefix
    from facade.monitor.auth import parse_credentials

    cfg = connection.config()
    try:
        # Flower reads FLOWER_BASIC_AUTH when --basic-auth is not given: a unit keeps it out of argv.
        credentials = tuple(parse_credentials(args.basic_auth or ([cfg.flower_basic_auth]
                                                                   if cfg.flower_basic_auth else [])))
        prefix = normalise_prefix(args.url_prefix)
    except ValueError as e:
        raise CliError(str(e)) from None
    if args.address.strip() == "":
        raise CliError("--address must not be empty")
    allowed_hosts = allowed_host_names(args.address, cfg.flower_allowed_hosts)
    connection.connect(cfg).close()  # fail now, as Celery does, if Redis is down

    logging.basicConfig(level=args.loglevel, stream=sys.stderr,
                        format="[%(levelname).1s %(asctime)s %(module)s:%(lineno)d] %(message)s",
                        datefmt="%y%m%d %H:%M:%S")
    log = logging.getLogger("flower.command")

    import waitress

    import actors
    from actors.names import celery_name
    from facade import replies
    from facade.monitor import MonitorSettings, Sources, create_app

    sources = Sources(broker=actors.broker, queues=("default", "state"),
                      registered=lambda: sorted(celery_name(n) for n in actors.TASKS))
    settings = MonitorSettings(credentials=credentials, url_prefix=prefix,
                               unauthenticated_api=cfg.flower_unauthenticated_api, allowed_hosts=allowed_hosts)
    try:
        server: Any = waitress.create_server(create_app(sources, settings), host=args.address, port=args.port,
                                             threads=THREADS, ident="monitor", clear_untrusted_proxy_headers=True)
    except OSError as e:
        raise CliError(f"cannot listen on {args.address}:{args.port}: {e.strerror or e}", 1) from None
    except ValueError as e:
        raise CliError(f"cannot listen on {args.address}:{args.port}: {e}") from None

    port = getattr(server, "effective_port", args.port)
    host = args.address if ":" not in args.address else f"[{args.address}]"
    log.info("Visit me at http://%s:%s%s", host, port, prefix or "")
    log.info("Broker: %s", mask_url(cfg.redis_uri))
    log.info("Registered tasks: \n%s", replies.app_tasks())
    log.info("Connected to %s", mask_url(cfg.redis_uri))
    if not credentials and not cfg.flower_unauthenticated_api:
        log.warning("The API (/api/...) and the dead-letter actions answer 401 without --basic-auth; set "
                    "FLOWER_UNAUTHENTICATED_API=true to open them.")
    if "*" not in allowed_hosts:
        log.info("Answering to host names: %s (more with FLOWER_ALLOWED_HOSTS)", ", ".join(allowed_hosts))

    stop = threading.Event()
    sampler = threading.Thread(target=_sample_forever, args=(actors.broker, sources.queues, stop),
                               name="queue-sampler", daemon=True)
    sampler.start()

    def _on_signal(signum: int, frame: Any) -> None:
        raise _Stop(0)

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        stop.set()
        server.close()
        sampler.join(5)
        log.info("Monitor stopped.")
    return 0
