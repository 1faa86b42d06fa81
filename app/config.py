"""Configuration: one frozen dataclass, read from the environment once.

This is the only module that reads ``os.environ``.  Every other module
gets a :class:`Config` passed down explicitly, so tests build one and
override its fields with :func:`dataclasses.replace`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit

from app.errors import ConfigError
from app.llm import HISTORY_MESSAGES, SYSTEM_PROMPT

__all__ = ["Config", "DEFAULT_REDIS_URI", "METRICS_DIR_VARIABLE", "child_environment", "set_environment", "mask_url",
           "normalise_db_url", "url_passwords"]

#: Where Redis is looked for when REDIS_URI is not set.
DEFAULT_REDIS_URI = "redis://127.0.0.1:6379/0"

#: Where the embedded defaults keep their files (SQLite, private Redis).
DEFAULT_DATA_DIR = ".run"

#: prometheus_client reads its multiprocess directory from this variable
#: when it is imported, so gunicorn's master sets it (to the web app's
#: own directory) before the web app is loaded.
METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
#: The values of LOG_FORMAT.
LOG_FORMATS = ("text", "json")


def _number(env: Mapping[str, str], name: str, default: float, *, minimum: float, whole: bool) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw) if whole else float(raw)
    except ValueError:
        kind = "a whole number" if whole else "a number of seconds"
        raise ConfigError(f"{name} must be {kind}, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum:g}, got {raw!r}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, *, minimum: float = 0.0) -> float:
    return _number(env, name, default, minimum=minimum, whole=False)


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    return int(_number(env, name, default, minimum=minimum, whole=True))


def _delays(env: Mapping[str, str], name: str, default: tuple[float, ...]) -> tuple[float, ...]:
    raw = env.get(name)
    if not raw:
        return default
    try:
        delays = tuple(float(part) for part in raw.split(","))
    except ValueError:
        raise ConfigError(f"{name} must be a comma-separated list of seconds, got {raw!r}") from None
    if any(d < 0 for d in delays):
        raise ConfigError(f"{name} must not contain negative delays, got {raw!r}")
    return delays


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name} must be true or false, got {env.get(name)!r}")


def set_environment(**values: str) -> None:
    """Set environment variables before the config is read (``celery -b URL``
    becomes REDIS_URI for this process and the processes it starts)."""
    os.environ.update(values)


def _modules(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    raw = env.get(name) or ""
    modules = tuple(part.strip() for part in raw.split(",") if part.strip())
    for module in modules:
        if not all(piece.isidentifier() for piece in module.split(".")):
            raise ConfigError(f"{name} must be a comma-separated list of module names, got {raw!r}")
    return modules



def child_environment(**overrides: str) -> dict[str, str]:
    """This process's environment with ``overrides``, for the processes it starts."""
    return {**os.environ, **overrides}


def normalise_db_url(url: str) -> str:
    """Point ``postgresql://`` URLs at psycopg 3, the project's only driver.

    SQLAlchemy 2.0 maps a bare ``postgresql://`` to psycopg2, which is
    not installed; 2.1 maps it to psycopg 3.  Being explicit makes both
    behave the same.
    """
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def _is_password_field(field: str) -> bool:
    return unquote(field.partition("=")[0]).lower() == "password"


def mask_url(url: str) -> str:
    """Return ``url`` with its password replaced by ``**``, as Celery prints it.

    Also a ``password=`` query parameter, which redis-py accepts too.
    """
    parts = urlsplit(url)
    if parts.query:
        fields = parts.query.split("&")
        masked = [f"{f.partition('=')[0]}=**" if _is_password_field(f) else f for f in fields]
        if masked != fields:
            parts = parts._replace(query="&".join(masked))
    if parts.password is not None:
        user = parts.username or ""
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        parts = parts._replace(netloc=f"{user}:**@{host}")
    return parts.geturl()


def url_passwords(url: str) -> list[str]:
    """The passwords :func:`mask_url` hides in ``url``, as written and decoded.

    For scrubbing error texts that quote a password without its URL.  A
    URL that does not parse has none.
    """
    try:
        parts = urlsplit(url)
        found = [parts.password] if parts.password else []
    except ValueError:
        return []
    found += [f.partition("=")[2] for f in parts.query.split("&") if _is_password_field(f)]
    return [p for raw in found if raw for p in dict.fromkeys((raw, unquote(raw)))]


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything the web app, the actors and the CLI need to know.

    Secrets are excluded from ``repr`` so that a logged config never
    shows them.
    """

    #: Redis connection URL (``redis://`` or ``rediss://``, password allowed).
    redis_uri: str = dataclasses.field(default=DEFAULT_REDIS_URI, repr=False)
    #: True when REDIS_URI was not set and the default was used.
    redis_is_default: bool = True
    #: SQLAlchemy URL; SQLite under ``data_dir`` when DB_URL is not set.
    db_url: str = dataclasses.field(default="", repr=False)
    #: Directory of the embedded defaults' files.
    data_dir: str = DEFAULT_DATA_DIR
    #: Gemini key; None selects the offline model.
    google_api_key: str | None = dataclasses.field(default=None, repr=False)
    whatsapp_token: str | None = dataclasses.field(default=None, repr=False)
    whatsapp_phone_number_id: str | None = None
    whatsapp_app_secret: str | None = dataclasses.field(default=None, repr=False)
    whatsapp_verify_token: str | None = dataclasses.field(default=None, repr=False)
    whatsapp_api_base: str = "https://graph.facebook.com/v21.0"
    #: Seconds a WhatsApp Cloud API call may take before it counts as failed (transient).
    whatsapp_timeout_s: float = 10.0

    #: Bearer token of the operator API; None refuses every operator call.
    operator_token: str | None = dataclasses.field(default=None, repr=False)

    #: Gemini model the assistant answers with.
    gemini_model: str = "gemini-2.5-flash"
    #: Base URL of the Gemini REST API; None is Google's (set for a stand-in).
    gemini_api_base: str | None = None
    #: Seconds one Gemini call may take before it counts as failed (transient).
    gemini_timeout_s: float = 60.0
    #: What the model is told about its role, before every conversation.
    system_prompt: str = SYSTEM_PROMPT
    #: How many of a conversation's most recent messages the model is
    #: shown (the checkpoint keeps them all): bounds the prompt's size.
    model_history_messages: int = HISTORY_MESSAGES

    #: Inbound messages closer together than this are answered together.
    buffer_window_s: float = 3.0
    #: A customer who keeps typing is answered after this long anyway.
    buffer_max_wait_s: float = 15.0

    #: A worker process whose heartbeat is older than this is dead; its
    #: messages go back to their queue within this time.
    heartbeat_timeout_s: float = 60.0
    #: How long dead-lettered messages are kept.
    dead_letter_ttl_s: float = 7 * 86400.0
    #: Delays of the retries of a transient failure (3 retries, 4 runs).
    retry_delays_s: tuple[float, ...] = (5.0, 10.0, 20.0)
    #: Hard and soft time limits of every task.
    time_limit_s: float = 300.0
    soft_time_limit_s: float = 240.0

    #: ``celery beat``: a queue with more waiting messages than this is logged as a WARNING.
    queue_alert_threshold: int = 1000
    #: ``celery beat``: seconds between two queue-depth checks.
    queue_check_interval_s: float = 60.0
    #: ``celery beat``: seconds between two sweeps for buffers whose check was lost.
    buffer_sweep_interval_s: float = 10.0
    #: A buffer whose last message is older than the buffer window plus
    #: this margin has lost its check (a normal check claims it at the window).
    buffer_sweep_margin_s: float = 10.0
    #: ``celery beat``: the lease's lifetime; a standby beat takes over
    #: within this time (plus a third of it) after the holder died.
    beat_lease_s: float = 15.0

    #: Largest webhook body accepted (Meta batches up to ~3 MB).
    webhook_max_body_bytes: int = 4 * 1024 * 1024
    #: Port of the web app (the runbook curls localhost:5000/health).
    web_port: int = 5000
    #: Port of the monitor ``assistant run`` starts on loopback (0: none).
    monitor_port: int = 5555
    #: Extra modules a worker imports after the actors (tests and ops
    #: only: actors that are not part of the runbook).
    worker_extra_modules: tuple[str, ...] = ()
    #: The web app's prometheus_client multiprocess directory
    #: (WEB_METRICS_DIR), the web's alone; gunicorn's master makes a
    #: fresh one when it is not set (see app.web.gunicorn_conf).
    web_metrics_dir: str | None = None
    #: The multiprocess directory prometheus_client uses in this process
    #: (PROMETHEUS_MULTIPROC_DIR; gunicorn's master sets it for its workers).
    prometheus_multiproc_dir: str | None = None
    #: systemd's notification socket (``NOTIFY_SOCKET``, set for a ``Type=notify`` unit).
    notify_socket: str | None = None

    #: The monitor's task history (written by the workers): at most this many tasks ...
    monitor_max_tasks: int = 10_000
    #: ... and none older than this, in seconds.
    monitor_task_ttl_s: float = 7 * 86400.0
    #: Flower 2's switch: the monitor's /api answers without --basic-auth only when this is true.
    flower_unauthenticated_api: bool = False
    #: The monitor's ``user:password`` pairs (FLOWER_BASIC_AUTH, comma-separated), used when
    #: ``--basic-auth`` is not given, as Flower does: kept out of argv (visible in ps).
    flower_basic_auth: str | None = dataclasses.field(default=None, repr=False)
    #: Host names the monitor answers to besides loopback and its bind address
    #: (FLOWER_ALLOWED_HOSTS, comma-separated; ``*``: any), against DNS rebinding.
    flower_allowed_hosts: tuple[str, ...] = ()

    #: Port on which each worker node serves its Prometheus metrics (0: none).
    worker_metrics_port: int = 9191
    #: Address that port is bound to (all interfaces, for a Prometheus on another host).
    worker_metrics_host: str = "0.0.0.0"
    #: Where a node's processes keep their metric files (prometheus_client's
    #: multiprocess mode), one directory per node below it; "" is the system's temp dir.
    worker_metrics_dir: str = ""
    #: Log line format of worker and beat processes: ``text`` (Celery's) or ``json``.
    log_format: str = "text"

    def __post_init__(self) -> None:
        if not self.db_url:
            path = Path(self.data_dir) / "assistant.sqlite3"
            object.__setattr__(self, "db_url", f"sqlite:///{path}")
        object.__setattr__(self, "db_url", normalise_db_url(self.db_url))
        scheme = urlsplit(self.redis_uri).scheme
        if scheme not in ("redis", "rediss", "unix"):
            raise ConfigError(f"REDIS_URI must start with redis://, rediss:// or unix://, got scheme {scheme!r}")
        for name, url in (("WHATSAPP_API_BASE", self.whatsapp_api_base), ("GEMINI_API_BASE", self.gemini_api_base)):
            if url is not None and urlsplit(url).scheme not in ("http", "https"):
                raise ConfigError(f"{name} must be an http:// or https:// URL, got {url!r}")
        if not self.system_prompt.strip():
            raise ConfigError("SYSTEM_PROMPT must not be blank")
        history = self.model_history_messages
        if isinstance(history, bool) or not isinstance(history, int) or history < 1:
            raise ConfigError(f"MODEL_HISTORY_MESSAGES must be a whole number of at least 1, got {history!r}")
        if self.soft_time_limit_s > self.time_limit_s:
            raise ConfigError("the soft time limit must not exceed the hard time limit")
        if not 0 <= self.worker_metrics_port <= 65535:
            raise ConfigError(f"WORKER_METRICS_PORT must be a port number (0 turns the metrics off), "
                              f"got {self.worker_metrics_port!r}")
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, got {self.log_format!r}")

    @property
    def uses_offline_model(self) -> bool:
        return not self.google_api_key

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        """Build a config from environment variables (the runbook's names).

        Raises:
          ConfigError: when a variable holds a value that cannot be used.
        """
        env = os.environ if env is None else env
        redis_uri = env.get("REDIS_URI") or ""
        return cls(
            redis_uri=redis_uri or DEFAULT_REDIS_URI,
            redis_is_default=not redis_uri,
            db_url=env.get("DB_URL", ""),
            data_dir=env.get("DATA_DIR") or DEFAULT_DATA_DIR,
            google_api_key=env.get("GOOGLE_API_KEY") or None,
            whatsapp_token=env.get("WHATSAPP_TOKEN") or None,
            whatsapp_phone_number_id=env.get("WHATSAPP_PHONE_NUMBER_ID") or None,
            whatsapp_app_secret=env.get("WHATSAPP_APP_SECRET") or None,
            whatsapp_verify_token=env.get("WHATSAPP_VERIFY_TOKEN") or None,
            whatsapp_api_base=(env.get("WHATSAPP_API_BASE") or cls.whatsapp_api_base).rstrip("/"),
            whatsapp_timeout_s=_float(env, "WHATSAPP_TIMEOUT_SECONDS", cls.whatsapp_timeout_s, minimum=0.1),
            operator_token=env.get("OPERATOR_TOKEN") or None,
            gemini_model=env.get("GEMINI_MODEL") or cls.gemini_model,
            gemini_api_base=(env.get("GEMINI_API_BASE") or "").rstrip("/") or None,
            gemini_timeout_s=_float(env, "GEMINI_TIMEOUT_SECONDS", cls.gemini_timeout_s, minimum=1),
            system_prompt=env.get("SYSTEM_PROMPT") or SYSTEM_PROMPT,
            model_history_messages=_int(env, "MODEL_HISTORY_MESSAGES", cls.model_history_messages, minimum=1),
            buffer_window_s=_float(env, "BUFFER_WINDOW_SECONDS", cls.buffer_window_s),
            buffer_max_wait_s=_float(env, "BUFFER_MAX_WAIT_SECONDS", cls.buffer_max_wait_s),
            heartbeat_timeout_s=_float(env, "HEARTBEAT_TIMEOUT_SECONDS", cls.heartbeat_timeout_s, minimum=0.5),
            dead_letter_ttl_s=_float(env, "DEAD_LETTER_TTL_SECONDS", cls.dead_letter_ttl_s, minimum=1),
            retry_delays_s=_delays(env, "RETRY_DELAYS_SECONDS", cls.retry_delays_s),
            time_limit_s=_float(env, "TASK_TIME_LIMIT_SECONDS", cls.time_limit_s, minimum=0.001),
            soft_time_limit_s=_float(env, "TASK_SOFT_TIME_LIMIT_SECONDS", cls.soft_time_limit_s, minimum=0.001),
            queue_alert_threshold=_int(env, "QUEUE_ALERT_THRESHOLD", cls.queue_alert_threshold),
            queue_check_interval_s=_float(env, "QUEUE_CHECK_INTERVAL_SECONDS", cls.queue_check_interval_s,
                                          minimum=0.1),
            buffer_sweep_interval_s=_float(env, "BUFFER_SWEEP_INTERVAL_SECONDS", cls.buffer_sweep_interval_s,
                                           minimum=0.1),
            buffer_sweep_margin_s=_float(env, "BUFFER_SWEEP_MARGIN_SECONDS", cls.buffer_sweep_margin_s),
            beat_lease_s=_float(env, "BEAT_LEASE_SECONDS", cls.beat_lease_s, minimum=0.3),
            webhook_max_body_bytes=_int(env, "WEBHOOK_MAX_BODY_BYTES", cls.webhook_max_body_bytes, minimum=1024),
            web_port=_int(env, "WEB_PORT", cls.web_port, minimum=1),
            monitor_port=_int(env, "MONITOR_PORT", cls.monitor_port, minimum=0),
            worker_extra_modules=_modules(env, "WORKER_EXTRA_MODULES"),
            web_metrics_dir=env.get("WEB_METRICS_DIR") or None,
            prometheus_multiproc_dir=env.get(METRICS_DIR_VARIABLE) or None,
            notify_socket=env.get("NOTIFY_SOCKET") or None,
            monitor_max_tasks=_int(env, "MONITOR_MAX_TASKS", cls.monitor_max_tasks, minimum=1),
            monitor_task_ttl_s=_float(env, "MONITOR_TASK_TTL_SECONDS", cls.monitor_task_ttl_s, minimum=1),
            flower_unauthenticated_api=_flag(env, "FLOWER_UNAUTHENTICATED_API"),
            flower_basic_auth=env.get("FLOWER_BASIC_AUTH") or None,
            flower_allowed_hosts=tuple(h.strip().lower() for h in (env.get("FLOWER_ALLOWED_HOSTS") or "").split(",")
                                       if h.strip()),
            worker_metrics_port=_int(env, "WORKER_METRICS_PORT", cls.worker_metrics_port),
            worker_metrics_host=env.get("WORKER_METRICS_HOST") or cls.worker_metrics_host,
            worker_metrics_dir=env.get("WORKER_METRICS_DIR") or "",
            log_format=(env.get("LOG_FORMAT") or cls.log_format).strip().lower(),
        )
