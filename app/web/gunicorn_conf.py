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

#: The directory this master gave its workers, and whether it made it
#: (then it removes it when it exits).
_metrics_dir: str | None = None
_made_metrics_dir = False


def on_starting(server) -> None:
    """Give the workers an empty metrics directory of their own: WEB_METRICS_DIR,
    emptied of an earlier run's files, or a fresh temporary one.

    PROMETHEUS_MULTIPROC_DIR is set to it for the workers whatever this
    process inherited, so the web's files never mix with a worker node's.
    """
    import glob
    import os
    import sys
    import tempfile

    from app.config import METRICS_DIR_VARIABLE, set_environment

    global _metrics_dir, _made_metrics_dir
    path = Config.from_env().web_metrics_dir
    if path:
        os.makedirs(path, exist_ok=True)
        # Only prometheus_client's files: the directory may hold other things.
        for stale in glob.glob(os.path.join(path, "*.db")):
            os.remove(stale)
    else:
        path = tempfile.mkdtemp(prefix="assistant-web-metrics-")
        _made_metrics_dir = True
    _metrics_dir = path
    set_environment(**{METRICS_DIR_VARIABLE: path})
    server.log.info("Web metrics of all workers are kept in %s.", path)
    if "prometheus_client" in sys.modules:
        server.log.error("prometheus_client was imported before the metrics directory was set: /metrics "
                         "will show only the counts of the worker that answers a scrape.")


def child_exit(server, worker) -> None:
    """A worker is gone: drop its live gauges (its counters keep counting in the sum)."""
    from prometheus_client import multiprocess

    if _metrics_dir:
        multiprocess.mark_process_dead(worker.pid, _metrics_dir)


def on_exit(server) -> None:
    """Remove the directory this master made."""
    import shutil

    if _made_metrics_dir and _metrics_dir:
        shutil.rmtree(_metrics_dir, ignore_errors=True)
