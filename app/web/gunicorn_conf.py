"""gunicorn's settings for ``wsgi:app``: port 5000 and an access log without secrets.

``gunicorn wsgi:app`` run from the project root reads ``gunicorn.conf.py``,
which takes these; ``assistant run``, the systemd unit and the image name
this module (``-c python:app.web.gunicorn_conf``) so an installed copy gets
them too.  Options on the command line still win (``--bind``, ``--workers``).

The access log writes the path without its query string: Meta's
verification handshake carries ``hub.verify_token`` there, a secret.
"""

from __future__ import annotations

from app.config import Config

#: The runbook curls localhost:5000/health; WEB_PORT moves it.
bind = [f"0.0.0.0:{Config.from_env().web_port}"]

#: gunicorn's default format with %(U)s (path) for %(r)s (the whole request line, query included).
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s "%(f)s" "%(a)s"'


# -- Metrics: prometheus_client's multiprocess mode over gunicorn's workers ----
#
# Each worker writes its counters to files in one directory, and a scrape
# of any worker sums them all (app.web.metrics).  prometheus_client reads
# the directory's variable when it is imported, so the master sets it
# before it forks the workers (they load the app after the fork; with
# --preload the app would be loaded before on_starting, which is why the
# project does not use it).

#: The directory this master made for its workers (it removes it when it exits).
_metrics_dir: str | None = None


def on_starting(server) -> None:
    """Give the workers an empty metrics directory of this master's own:
    ``WEB_METRICS_DIR/<master pid>``, or a fresh temporary directory.

    A subdirectory per master, because two masters may share
    WEB_METRICS_DIR (a USR2 upgrade runs the old and the new one side by
    side): emptying the whole directory would delete the live files of the
    other.  Subdirectories of masters that are gone are removed.
    PROMETHEUS_MULTIPROC_DIR is set for the workers whatever this process
    inherited, so the web's files never mix with a worker node's.
    """
    import os
    import sys
    import tempfile

    from app.config import METRICS_DIR_VARIABLE, set_environment

    global _metrics_dir
    shared = Config.from_env().web_metrics_dir
    if shared:
        os.makedirs(shared, exist_ok=True)
        for gone in _dead_masters(shared):
            server.log.info("Removing the web metrics of master %s, which is gone.", os.path.basename(gone))
            _remove(gone)
        path = os.path.join(shared, str(os.getpid()))
        _remove(path)  # a master that had this pid before is gone
        os.makedirs(path)
    else:
        path = tempfile.mkdtemp(prefix="assistant-web-metrics-")
    _metrics_dir = path
    set_environment(**{METRICS_DIR_VARIABLE: path})
    server.log.info("Web metrics of all workers are kept in %s.", path)
    if "prometheus_client" in sys.modules:
        server.log.error("prometheus_client was imported before the metrics directory was set: /metrics "
                         "will show only the counts of the worker that answers a scrape.")


def _dead_masters(shared: str) -> list[str]:
    """The subdirectories of ``shared`` named after a process that no longer runs."""
    import os

    gone = []
    for name in os.listdir(shared):
        path = os.path.join(shared, name)
        if not (name.isdigit() and os.path.isdir(path)) or int(name) == os.getpid():
            continue
        try:
            os.kill(int(name), 0)
        except ProcessLookupError:
            gone.append(path)
        except OSError:
            pass  # alive, someone else's (EPERM)
    return gone


def _remove(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def child_exit(server, worker) -> None:
    """A worker is gone: drop its live gauges (its counters keep counting in the sum)."""
    from prometheus_client import multiprocess

    if _metrics_dir:
        multiprocess.mark_process_dead(worker.pid, _metrics_dir)


def on_exit(server) -> None:
    """Remove this master's directory."""
    if _metrics_dir:
        _remove(_metrics_dir)
