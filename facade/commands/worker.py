"""Start a worker node: ``celery -A tasks worker -l info -P solo -Q default,state``.

Translates Celery's worker options into a :class:`actors.worker_spec.WorkerSpec`
and runs it: ``-P solo``/``-P threads`` in this process
(:mod:`actors.node_process`), ``-P prefork`` under the supervisor
(:mod:`actors.supervisor`).  Options of Celery's worker that this
project does not offer fail with one line naming them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from facade import nodenames
from facade.cli import APP_MODULE, LEVELS, CliError, project_version, refuse_options

__all__ = ["configure", "run"]

#: -P values: this project's pools, and Celery's others.
POOL_ALIASES = {"solo": "solo", "prefork": "prefork", "processes": "prefork", "threads": "threads"}
POOLS_NOT_OFFERED = ("gevent", "eventlet", "custom")

#: Celery worker options this project does not offer: (flags, takes a value, why).
NOT_OFFERED: list[tuple[tuple[str, ...], bool, str]] = [
    (("--autoscale",), True, "run a fixed -c/--concurrency"),
    (("-B", "--beat"), False, "run 'celery -A tasks beat' as its own service"),
    (("-D", "--detach"), False, "run the worker under systemd, NSSM or Docker"),
    (("--uid",), True, "set User= in the systemd unit"),
    (("--gid",), True, "set Group= in the systemd unit"),
    (("--umask",), True, "set UMask= in the systemd unit"),
    (("--executable",), True, "not offered"),
    (("--purge", "--discard"), False, "use 'celery -A tasks purge'"),
    (("-S", "--statedb"), True, "revoked ids are not kept"),
    (("-I", "--include"), True, "the app is 'tasks' and imports every task"),
    (("-X", "--exclude-queues"), True, "name the queues to consume with -Q"),
    (("-s", "--schedule-filename", "--schedule"), True, "run 'celery -A tasks beat'"),
    (("--scheduler",), True, "run 'celery -A tasks beat'"),
    (("--without-gossip",), False, "there is no gossip: nodes are found in the Redis registry"),
    (("--without-mingle",), False, "there is no mingle: nodes are found in the Redis registry"),
    (("--without-heartbeat",), False, "the node's heartbeat feeds status, inspect and /health"),
    (("--heartbeat-interval",), True, "the registry beats every 2 s"),
    (("--disable-prefetch",), False, "use --prefetch-multiplier=1"),
    (("--pool-restarts",), False, "not offered"),
    (("-K", "--soft-time-limit-kill"), False, "not offered"),
]


class _AppAfterCommand(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None) -> None:
        parser.error(
            f"You are using '{option_string}' as an option of the worker sub-command: "
            f"celery worker {option_string} {APP_MODULE}. The support for this usage was removed in Celery 5.0. "
            f"Instead you should use '-A' as a global option: celery -A {APP_MODULE} worker"
        )


def configure(parser: argparse.ArgumentParser) -> None:
    parser.allow_abbrev = False
    add = parser.add_argument
    add("-l", "--loglevel", default="WARNING", help="DEBUG, INFO, WARNING (default), ERROR, CRITICAL or FATAL")
    add("-P", "--pool", default="prefork", help="solo, prefork (default; 'processes' too) or threads")
    add("-c", "--concurrency", type=_whole("concurrency"), default=None,
        help="child processes (prefork) or threads (threads); default: the number of CPUs")
    add("-Q", "--queues", default=None, help="comma-separated queues: default (also 'celery') and state")
    add("-n", "--hostname", default=None, help="node name; %%h host, %%n its name, %%d its domain (default celery@%%h)")
    add("--max-tasks-per-child", type=_whole("max-tasks-per-child"), default=None,
        help="replace a prefork child after this many tasks")
    add("--max-memory-per-child", type=_whole("max-memory-per-child"), default=None,
        help="replace a prefork child, after its task, above this resident size in KiB")
    add("--time-limit", type=_seconds("time-limit"), default=None,
        help="hard time limit in seconds for every task of this node (instead of the tasks' own)")
    add("--soft-time-limit", type=_seconds("soft-time-limit"), default=None,
        help="soft time limit in seconds (SoftTimeLimitExceeded inside the task); below the hard one")
    add("--prefetch-multiplier", type=_whole("prefetch-multiplier"), default=4,
        help="messages held per process thread (default 4)")
    add("-f", "--logfile", default=None, help="log file; %%n %%h %%d %%p %%i %%I are expanded (default stderr)")
    add("--pidfile", default=None, help="write the main process's pid here; refuse to start if it names a live one")
    add("-E", "--task-events", action="store_true",
        help="accepted for the runbook; task events need no switch here: the node registry always shows the "
             "running tasks to status, inspect and /health")
    add("-O", dest="optimization", choices=("default", "fair"), default="default",
        help="accepted for the runbook: messages are always handed to free threads first (Celery's 'fair')")
    add("-A", "--app", nargs="?", action=_AppAfterCommand, dest="app_after_command", default=argparse.SUPPRESS,
        help=argparse.SUPPRESS)
    refuse_options(parser, "worker", NOT_OFFERED)


def _whole(name: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--{name} must be a whole number, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"--{name} must be at least 1, got {text!r}")
        return value

    return parse


def _seconds(name: str):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--{name} must be a number of seconds, got {text!r}") from None
        if not value > 0 or value == float("inf"):
            raise argparse.ArgumentTypeError(f"--{name} must be more than 0 seconds, got {text!r}")
        return value

    return parse


def run(args: argparse.Namespace) -> int:
    level = LEVELS.get(args.loglevel.upper())
    if level is None:
        raise CliError(f"Invalid value for '-l' / '--loglevel': {args.loglevel!r} is not one of "
                       "DEBUG, INFO, WARNING, ERROR, CRITICAL, FATAL.")
    pool = _pool(args.pool)
    if args.time_limit is not None and args.soft_time_limit is not None \
            and args.soft_time_limit >= args.time_limit:
        raise CliError(f"--soft-time-limit ({args.soft_time_limit:g}) must be below --time-limit "
                       f"({args.time_limit:g})")

    import importlib

    from actors.node_process import load_broker
    from app.config import mask_url
    from app.errors import ConfigError

    try:
        broker = load_broker()
        importlib.import_module(APP_MODULE)
    except ImportError as e:
        raise CliError(f"cannot import the worker's modules: {e}") from None
    except ConfigError as e:
        raise CliError(str(e)) from None
    import actors

    config = actors.config
    if args.soft_time_limit is not None and args.time_limit is None and args.soft_time_limit >= config.time_limit_s:
        raise CliError(f"--soft-time-limit ({args.soft_time_limit:g}) must be below the tasks' hard time limit "
                       f"({config.time_limit_s:g}); give --time-limit too")
    queue_names = _queues(args.queues, broker)
    host = nodenames.hostname()
    node = nodenames.node_name(args.hostname, host=host)
    logfile = None
    if args.logfile:
        logfile = nodenames.file_name(args.logfile, node)
    spec = _spec(args, pool=pool, level=level, node=node, host=host, logfile=logfile,
                 queues=queue_names, broker_shown=mask_url(config.redis_uri), config=config)
    return _start(args, spec, queue_names, broker)


def _pool(value: str) -> str:
    name = value.lower()
    if name in POOL_ALIASES:
        return POOL_ALIASES[name]
    if name in POOLS_NOT_OFFERED:
        raise CliError(f"the '{name}' pool is a Celery feature this project does not offer: "
                       "use -P solo, -P prefork or -P threads")
    raise CliError(f"Invalid value for '-P' / '--pool': {value!r} is not one of solo, prefork, processes, threads.")


def _queues(value: str | None, broker) -> list[str]:
    """The queue names as given (``default`` and ``celery`` both name ``default``)."""
    from actors import keys

    known = sorted(broker.get_declared_queues())
    if value is None:
        return known
    names = [part.strip() for part in value.split(",")]
    if any(not name for name in names):
        raise CliError(f"Invalid value for '-Q' / '--queues': {value!r} has an empty queue name")
    for name in names:
        if keys.canonical_queue(name) not in known:
            raise CliError(f"unknown queue {name!r} in -Q: the queues are {', '.join(known)} "
                           "('celery' is another name of 'default')")
    return list(dict.fromkeys(names))


def _spec(args, *, pool, level, node, host, logfile, queues, broker_shown, config):
    from actors import keys
    from actors.worker_spec import WorkerSpec, shutdown_timeout_s

    concurrency = args.concurrency or os.cpu_count() or 1
    limits = (args.max_tasks_per_child, args.max_memory_per_child)
    if pool != "prefork" and any(limits):
        logging.getLogger("celery.worker").warning(
            "--max-tasks-per-child and --max-memory-per-child apply to -P prefork only, as in Celery.")
    hard = args.time_limit if args.time_limit is not None else config.time_limit_s
    return WorkerSpec(
        node_name=node, hostname=host, pool=pool, concurrency=concurrency,
        queues=tuple(dict.fromkeys(keys.canonical_queue(q) for q in queues)), loglevel=level, logfile=logfile,
        log_format=config.log_format,
        prefetch_multiplier=args.prefetch_multiplier,
        max_tasks_per_child=args.max_tasks_per_child if pool == "prefork" else None,
        max_memory_per_child_kib=args.max_memory_per_child if pool == "prefork" else None,
        time_limit_s=args.time_limit, soft_time_limit_s=args.soft_time_limit,
        shutdown_timeout_s=shutdown_timeout_s(hard), task_events=args.task_events,
        extra_modules=tuple(config.worker_extra_modules), broker_shown=broker_shown, started_at=time.time(),
        main_pid=os.getpid(), sw_ver=project_version(), notify_socket=config.notify_socket,
    )


def _start(args, spec, queue_names, broker) -> int:
    import dramatiq

    from actors import early_signals, hard_exit
    from actors.names import celery_name
    from actors.node_process import wait_for_redis
    from actors.worker_logging import say_shutdown, setup_logging
    from facade import banner, pidfile

    if spec.logfile:
        _check_writable(spec.logfile)
    from actors.worker_logging import expand_process_index

    # Celery: node_format(pidfile, nodename); %i is the main process's index, 0.
    pid_path = expand_process_index(nodenames.file_name(args.pidfile, spec.node_name), 0) if args.pidfile else None
    # Once the pidfile names this process, a SIGTERM must be a warm shutdown, not the default death.
    early_signals.hold()
    # The node may leave with os._exit (cold shutdown, a task stuck in C): the pidfile goes first then too.
    with pidfile.held(pid_path), hard_exit.registered(lambda: pidfile.release(pid_path)):
        if not args.quiet:
            shown = spec.loglevel <= logging.INFO
            tasks = sorted(celery_name(a) for a in broker.get_declared_actors()) if shown else None
            app = f"{APP_MODULE}:0x{id(sys.modules[APP_MODULE]):x}" if APP_MODULE in sys.modules else APP_MODULE
            print(banner.banner(spec, app=app, queue_names=queue_names, task_names=tasks,
                                dramatiq_version=dramatiq.__version__), flush=True)
        setup_logging(spec.loglevel, spec.logfile, index=0, log_format=spec.log_format)
        from app.errors import ConfigError
        from facade.cli import EX_UNAVAILABLE

        try:
            connected = wait_for_redis(broker.client, spec.broker_shown, give_up=early_signals.pending)
        except ConfigError as e:
            # A refused password: one line and exit 69, as the other commands (waiting would not help).
            raise CliError(str(e), EX_UNAVAILABLE) from None
        if not connected:
            say_shutdown("Warm")
            return 0
        spec = _serve_metrics(spec)
        if spec.pool == "prefork":
            from actors.supervisor import Supervisor

            return Supervisor(spec).run()
        from actors.node_process import NodeProcess

        return NodeProcess(spec).run()


def _serve_metrics(spec):
    """Serve the node's metrics on WORKER_METRICS_PORT before any child starts (children inherit the
    metrics directory); the spec names the directory, or None when the port is 0 or taken."""
    import dataclasses

    import actors
    from actors.worker_metrics import open_exposition

    exposition = open_exposition(actors.config)
    return dataclasses.replace(spec, metrics_dir=None if exposition is None else str(exposition.path))


def _check_writable(pattern: str) -> None:
    from actors.worker_logging import expand_process_index

    path = expand_process_index(pattern, 0)
    try:
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as e:
        raise CliError(f"cannot write the log file {path!r}: {e.strerror}") from None
