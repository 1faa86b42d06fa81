"""A worker node's Prometheus exposition: one HTTP port per node, whatever its processes.

Every process of a node records its metrics in prometheus_client's
multiprocess mode (one memory-mapped file per process and kind) in one
directory per node; the node's main process serves them all, summed,
on ``WORKER_METRICS_PORT``.  prometheus_client chooses between its
in-memory and its file-backed values once, when it is imported, from
``PROMETHEUS_MULTIPROC_DIR``: so the directory is put in the environment
(:func:`app.config.set_environment`) before anything imports it, and the
processes a node starts inherit it.

- ``celery -A tasks worker``: the main process binds the port first, and
  only then wipes and uses ``<base>/<host>-<port>`` (the port's holder is
  the only node on this host that can use it); a prefork supervisor
  marks a child it reaped dead, so that live gauges drop its share.
- ``dramatiq actors``: its main process runs none of our code.  The
  worker processes share ``<base>/dramatiq-<main pid>``; the first to
  boot wipes what an earlier process of the same pid left there (under a
  file lock); the exposition runs in a process that the Dramatiq CLI
  forks for :meth:`actors.middleware.metrics.TaskMetrics.forks`.

A port that is taken is logged once at ERROR, naming the port and the
setting, and the node runs on without metrics.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socketserver
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from app.config import Config, set_environment

__all__ = ["Exposition", "open_exposition", "node_dir", "plain_cli_dir", "claim_plain_cli_dir", "prepare_dir",
           "mark_process_dead", "fold_dead_process", "plain_cli_exposition", "sweep_plain_cli_dirs",
           "MULTIPROC_ENV", "UNSERVED", "SERVED", "ARCHIVE"]

logger = logging.getLogger("celery.worker")

#: The variable prometheus_client reads, once, when it is imported.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: Name of the directory below the temp dir when WORKER_METRICS_DIR is not set.
_DEFAULT_BASE = "assistant-worker-metrics"


def _base(config: Config) -> Path:
    return Path(config.worker_metrics_dir or Path(tempfile.gettempdir()) / _DEFAULT_BASE)


def node_dir(config: Config) -> Path:
    """The metrics directory of the ``celery worker`` node that holds the configured port."""
    host = "".join(c if c.isalnum() else "_" for c in config.worker_metrics_host)
    return _base(config) / f"{host}-{config.worker_metrics_port}"


def plain_cli_dir(config: Config, main_pid: int) -> Path:
    """The metrics directory of one ``dramatiq`` invocation (named after its main process)."""
    return _base(config) / f"dramatiq-{main_pid}"


def _use_dir(path: Path) -> None:
    """Make ``path`` this process's (and its future children's) metrics directory."""
    set_environment(**{MULTIPROC_ENV: str(path)})
    values = sys.modules.get("prometheus_client.values")
    if values is not None and values.ValueClass is getattr(values, "MutexValue", None):
        # NOTE: something imported prometheus_client before the directory was
        # known, so it chose in-memory values, which the port would never show.
        # Metrics look ``values.ValueClass`` up when they are created, so the
        # ones created from now on (ours: in enable()) are file-backed.
        values.ValueClass = values.MultiProcessValue()  # type: ignore[attr-defined]
        logger.debug("prometheus_client was imported before the metrics directory was set; switched it to %s.",
                     path)


def prepare_dir(path: Path, owner: str) -> bool:
    """Wipe ``path`` unless ``owner`` already claimed it; True when it was wiped.

    Runs under a file lock beside it, so that of several processes
    booting at once only the first wipes, never a sibling's fresh files.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f"{path.name}.lock", "a+") as lock:
        try:
            import fcntl
        except ImportError:  # Windows: the CLI's processes boot one after the other there
            fcntl = None  # type: ignore[assignment]
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        marker = path / ".owner"
        try:
            current = marker.read_text()
        except OSError:
            current = None
        if current == owner:
            return False
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True, exist_ok=True)
        marker.write_text(owner)
        return True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # On Windows SO_REUSEADDR lets a second node bind a port in use (and wipe the first's directory).
    allow_reuse_address = sys.platform != "win32"
    #: Set once the directory is in use (the socket is bound before).
    path: Path | None = None

    def server_bind(self) -> None:
        # HTTPServer's would look the host up in DNS (socket.getfqdn) at every node start.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(self.path))
        with _files_lock:
            return generate_latest(registry), CONTENT_TYPE_LATEST


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    #: Seconds a client may take to send its request (a silent one must not hold a thread).
    timeout = 10

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path not in ("/metrics", "/"):
            self._reply(404, {"error": f"no page {path!r} here: the metrics are at /metrics"})
            return
        try:
            body, content_type = self.server.render()
        except Exception as e:
            logger.error("Could not render the worker metrics.", exc_info=True)
            self._reply(500, {"error": f"could not render the metrics: {e}"})
            return
        self._send(200, content_type, body)

    def do_POST(self) -> None:
        self._reply(405, {"error": "only GET is served here"})

    do_PUT = do_DELETE = do_PATCH = do_POST

    def _reply(self, status: int, document: dict[str, str]) -> None:
        self._send(status, "application/json", json.dumps(document).encode())

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:
        logging.getLogger(__name__).debug(format, *args)


class Exposition:
    """A bound metrics port served by a daemon thread of this process."""

    def __init__(self, server: _Server, path: Path) -> None:
        self.server = server
        self.path = path
        self.port = server.server_address[1]
        self.thread = threading.Thread(target=server.serve_forever, name="worker-metrics", daemon=True)

    def start(self) -> None:
        # A daemon thread: it ends with the node's main process, which closes the port.
        self.thread.start()


def _bind(config: Config) -> _Server | None:
    try:
        return _Server((config.worker_metrics_host, config.worker_metrics_port), _Handler)
    except OSError as e:
        logger.error("Cannot serve the worker metrics on port %d (WORKER_METRICS_PORT, host %s): %s. "
                     "This node runs without metrics; give each node on a host its own WORKER_METRICS_PORT, "
                     "or 0 to turn them off.", config.worker_metrics_port, config.worker_metrics_host,
                     e.strerror or e)
        return None


def open_exposition(config: Config) -> Exposition | None:
    """Serve this node's metrics (``celery worker``'s main process, before any child starts).

    Returns:
      The running exposition, whose ``path`` every process of the node
      records into; None when WORKER_METRICS_PORT is 0 or taken (logged).
    """
    if not config.worker_metrics_port:
        return None
    server = _bind(config)
    if server is None:
        return None
    path = node_dir(config)
    try:
        # This process holds the port, so no other node on the host uses the directory: always wiped.
        prepare_dir(path, _main_identity(os.getpid()))
    except OSError as e:
        server.server_close()
        logger.error("Cannot use the worker metrics directory %s (WORKER_METRICS_DIR): %s. This node runs "
                     "without metrics.", path, e.strerror or e)
        return None
    _use_dir(path)
    server.path = path
    exposition = Exposition(server, path)
    exposition.start()
    logger.debug("Serving the worker metrics on %s:%d from %s.", config.worker_metrics_host, exposition.port, path)
    return exposition


#: Held while a scrape reads the files, and while a dead process's files are folded into the
#: archive, so that a scrape sees them either before or after, never counted twice or not at all.
_files_lock = threading.Lock()

#: The kinds whose values add up across processes (a counter's, a histogram's buckets and sum).
_ADDITIVE = ("counter", "histogram")
#: Where the values of the reaped processes are kept (``<kind>_archived.db``).
ARCHIVE = "archived"


def fold_dead_process(path: str | Path | None, pid: int) -> None:
    """A reaped prefork child: drop its live gauges, and fold its counters and histograms into
    the node's archive files, then delete its files.

    Without this each replaced child would leave its files (64 KiB each) for good, and every
    scrape would parse all of them.  Runs in the process that serves the port (the supervisor).
    """
    if path is None:
        return
    mark_process_dead(path, pid)
    from prometheus_client.mmap_dict import MmapedDict

    with _files_lock:
        for kind in _ADDITIVE:
            dead = Path(path) / f"{kind}_{pid}.db"
            if not dead.exists():
                continue
            archive = Path(path) / f"{kind}_{ARCHIVE}.db"
            try:
                totals: dict[str, float] = {}
                for source in (archive, dead):
                    if source.exists():
                        for key, value, _timestamp, _pos in MmapedDict.read_all_values_from_file(str(source)):
                            totals[key] = totals.get(key, 0.0) + value
                # Written aside and renamed: a crash leaves the old archive and the dead file, not half of one.
                fresh = archive.with_name(archive.name + ".new")
                fresh.unlink(missing_ok=True)
                merged = MmapedDict(str(fresh))
                try:
                    for key, value in totals.items():
                        merged.write_value(key, value, 0.0)
                finally:
                    merged.close()
                os.replace(fresh, archive)
                dead.unlink()
            except OSError as e:
                logger.warning("Could not fold the metrics of process %d into %s: %s", pid, archive, e)


def mark_process_dead(path: str | Path | None, pid: int) -> None:
    """Drop a dead process's share of the live gauges (its counters stay)."""
    if path is None:
        return
    from prometheus_client import multiprocess

    try:
        multiprocess.mark_process_dead(pid, str(path))
    except OSError as e:
        logger.warning("Could not mark process %d dead in the worker metrics: %s", pid, e)


def _main_identity(main_pid: int) -> str:
    """The pid and start time of ``main_pid`` (the start time tells a reused pid apart; Linux only)."""
    try:
        with open(f"/proc/{main_pid}/stat") as f:
            started = f.read().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        started = ""
    return f"{main_pid} {started}"


def claim_plain_cli_dir(config: Config, main_pid: int) -> Path:
    """The directory of this ``dramatiq`` invocation, wiped of an earlier one's files.

    Every worker process calls this at boot; the first one wipes what an
    earlier invocation with the same main pid left (a container's pid 1
    is always the same) and writes the owner, under a file lock, so no
    process wipes a sibling's fresh files.  It also removes the
    directories of invocations that are gone (killed, or stopped before
    their exposition could clean up): see :func:`sweep_plain_cli_dirs`.
    """
    path = plain_cli_dir(config, main_pid)
    if prepare_dir(path, _main_identity(main_pid)):
        sweep_plain_cli_dirs(path.parent)
    _use_dir(path)
    return path


def sweep_plain_cli_dirs(base: Path) -> list[Path]:
    """Remove the ``dramatiq-<pid>`` directories whose invocation no longer runs.

    An invocation is gone when its main process is (``/proc/<pid>/stat``
    no longer names the pid and start time its ``.owner`` recorded).
    Each is removed under its own lock, taken without waiting: one busy
    is being claimed right now, so it is alive.  Does nothing where there
    is no ``/proc`` (the identity cannot be checked).

    Returns:
      The directories removed.
    """
    if not os.path.isdir("/proc/self"):
        return []
    import fcntl

    removed = []
    for path in base.glob("dramatiq-*"):
        pid = path.name.partition("-")[2]
        if not path.is_dir() or not pid.isdigit():
            continue
        lock_path = path.parent / f"{path.name}.lock"
        try:
            with open(lock_path, "a+") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue
                try:
                    owner = (path / ".owner").read_text()
                except OSError:
                    owner = None
                alive = owner == _main_identity(int(pid)) if owner is not None else os.path.exists(f"/proc/{pid}")
                if alive:
                    continue
                shutil.rmtree(path, ignore_errors=True)
                lock_path.unlink()
                removed.append(path)
        except OSError as e:
            logger.warning("Could not remove the stale worker metrics directory %s: %s", path, e)
    if removed:
        logger.info("Removed the metrics directories of dramatiq runs that are gone: %s",
                    ", ".join(p.name for p in removed))
    return removed


#: Written into a ``dramatiq`` invocation's directory when its exposition could not bind
#: the port: its worker processes then stop recording (nobody would read it).
UNSERVED = ".unserved"
#: Written there once the exposition serves: the worker processes stop looking.
SERVED = ".served"


def plain_cli_exposition() -> int:
    """Serve a ``dramatiq`` invocation's metrics (a process the Dramatiq CLI forks for it).

    Its first SIGTERM/SIGHUP stops it, and the ones after are ignored
    from that moment on, so that a second one (the main process's, after
    the service manager's) cannot cut the clean-up short.
    """
    from actors.worker_logging import adopt_handlers

    def stop(signum, frame) -> None:
        _ignore_stop_signals()
        raise SystemExit(0)

    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), stop)
    config = Config.from_env()
    adopt_handlers(config.log_format)
    path = plain_cli_dir(config, os.getppid())
    server = None
    try:
        server = _bind(config)
        # Claimed like the worker processes do: whichever comes first wipes, the others keep its files.
        claim_plain_cli_dir(config, os.getppid())
        if server is None:
            # The worker processes stop recording; the next run's sweep removes the directory.
            (path / UNSERVED).touch()
            return 0
        server.path = path
        (path / SERVED).touch()
        logger.info("Serving the worker metrics on %s:%d.", config.worker_metrics_host, server.server_address[1])
        server.serve_forever()
    finally:
        _ignore_stop_signals()
        if server is not None:
            # The invocation is over (SIGTERM); its files are of no further use.
            server.server_close()
            shutil.rmtree(path, ignore_errors=True)
            try:
                (path.parent / f"{path.name}.lock").unlink()
            except OSError:
                pass
    return 0


def _ignore_stop_signals() -> None:
    for name in ("SIGTERM", "SIGINT", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
