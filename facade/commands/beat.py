"""Start the beat periodic task scheduler (``celery -A tasks beat``).

Runs the project's periodic jobs (:mod:`actors.periodic`): the buffer
sweep and the queue check.  Any number of beats may run; a Redis lease
makes only one of them send (:mod:`actors.beat`).  Celery's options:
``-l/--loglevel``, ``-f/--logfile``, ``--pidfile``, and ``-s/--schedule``,
which is accepted and said to be unused (the schedule is fixed in code
and its state lives in Redis).  Celery beat options we do not offer are
refused by name.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from datetime import datetime

from app.config import mask_url
from facade import connection, pidfile
from facade.cli import CliError, log_level, project_version, refuse_options

__all__ = ["configure", "run", "NOT_OFFERED"]

#: Celery beat options this project does not offer: (flags, takes a value, why).
NOT_OFFERED: list[tuple[tuple[str, ...], bool, str]] = [
    (("--detach",), True, "run beat under systemd (or NSSM, Docker) instead"),
    (("-S",), True, "the scheduler is fixed: APScheduler with a Redis lease"),
    (("--scheduler",), True, "the scheduler is fixed: APScheduler with a Redis lease"),
    (("--max-interval",), True, "jobs wake exactly when due; there is no polling interval"),
    (("--uid",), True, "let systemd drop privileges (User=)"),
    (("--gid",), True, "let systemd drop privileges (Group=)"),
    (("--umask",), True, "let systemd set it (UMask=)"),
    (("--executable",), True, "not offered"),
]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-l", "--loglevel", type=log_level, default=logging.WARNING,
                        help="DEBUG, INFO, WARNING, ERROR, CRITICAL or FATAL (default WARNING)")
    parser.add_argument("-f", "--logfile", help="log destination (default: stderr)")
    parser.add_argument("--pidfile", help="PID file path (default: none)")
    parser.add_argument("-s", "--schedule", help="accepted for the runbook; unused (the schedule's state is in Redis)")
    refuse_options(parser, "beat", NOT_OFFERED)


def _banner(redis_uri: str, jobs, level: int, logfile: str | None) -> str:
    ours = project_version()
    every = ", ".join(f"{job.name} every {job.interval_s:g}s" for job in jobs)
    return "\n".join([
        f"celery beat v{ours} is starting.",
        "__    -    ... __   -        _",
        f"LocalTime -> {datetime.now().replace(microsecond=0)}",
        "Configuration ->",
        f"    . broker -> {mask_url(redis_uri)}",
        "    . loader -> tasks",
        "    . scheduler -> actors.beat.Beat (APScheduler, one sender by Redis lease)",
        f"    . jobs -> {every}",
        f"    . logfile -> {logfile or '[stderr]'}@%{logging.getLevelName(level)}",
    ])


def run(args: argparse.Namespace) -> int:
    cfg = connection.config()
    connection.connect(cfg).close()  # fail now, as Celery does, if Redis is down
    from actors import early_signals

    # Once the pidfile names this process, a SIGTERM must stop it cleanly (the file removed).
    early_signals.hold()
    # Celery beat takes --pidfile as given (no %-codes), with the worker's lock.
    with pidfile.held(args.pidfile):
        return _run(args, cfg)


def _run(args: argparse.Namespace, cfg) -> int:
    # Importing the actors builds the broker the jobs send with.
    import actors
    from actors import early_signals, periodic
    from actors.beat import Beat

    client = actors.broker.client
    jobs = periodic.jobs(cfg, actors.broker)
    if not args.quiet:
        print(_banner(cfg.redis_uri, jobs, args.loglevel, args.logfile), flush=True)
    from actors.worker_logging import setup_logging

    try:
        setup_logging(args.loglevel, args.logfile, log_format=cfg.log_format)
    except OSError as e:
        raise CliError(f"cannot open the log file {args.logfile}: {e.strerror}") from None
    if args.schedule:
        logging.getLogger(__name__).warning(
            "beat: --schedule %s is not used: the jobs are fixed in code and their state lives in Redis "
            "(dramatiq:beat:*).", args.schedule)
    stop = threading.Event()
    for name in early_signals.NAMES:  # SIGBREAK too, on Windows (Ctrl-Break)
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), lambda *_: stop.set())
    early_signals.replay(lambda *_: stop.set())
    Beat(client, jobs, lease_s=cfg.beat_lease_s).run(stop)
    return 0
