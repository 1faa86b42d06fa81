"""What the actors of one process share: database, Redis, model, WhatsApp,
the conversation graph.

Built on first use from the config the broker was built from, so that
importing the actors (the web app does, to send) opens nothing.  Tests
install their own with :func:`install`.

The domain's heavy libraries (SQLAlchemy, LangGraph, httpx) are imported
here on first use too, not when the actor modules are: a worker process
loads them at its first task that needs them, and a worker or producer
that never runs one (a state-only node, the web app, a benchmark's
no-op worker) does not carry them (about 80 MiB per process).
:func:`load_domain` imports them in a thread of its own, never in the
task's: a time limit raised into a task's thread in the middle of an
import would leave a half-run module behind, broken for every later task
of the process.
"""

from __future__ import annotations

import importlib
import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis

from actors import conversation_locks
from app.config import Config
from app.errors import ConfigError
from app.llm import Model, build_model

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from app.checkpoints import Checkpoints
    from app.replies import Services

__all__ = ["Runtime", "get", "install", "build", "services", "load_domain", "DOMAIN_MODULES"]

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    config: Config
    sessions: sessionmaker[Session]
    redis: redis.Redis
    model: Model
    #: The WhatsApp client (``send_text``, ``mark_read``); None: built on first use.
    whatsapp: Any = None
    #: LangGraph's checkpointer for the conversation threads.
    checkpoints: Checkpoints | None = None
    # Not an init field: dataclasses.replace() gives a copy its own.
    _services: Services | None = field(default=None, init=False, repr=False)


class _UnavailableWhatsApp:
    """Stands in when no WhatsApp client can be built: every send is refused,
    and recorded as failed with the reason."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def send_text(self, *, to: str | None, recipient: str | None, text: str,
                  callback_data: str | None = None) -> str:
        raise ConfigError(f"WhatsApp is not available: {self.reason}")

    def mark_read(self, wamid: str, *, typing: bool = True) -> None:
        return None


def _build_whatsapp(config: Config) -> Any:
    from app.whatsapp import WhatsAppClient

    try:
        return WhatsAppClient.from_config(config)
    except ConfigError as e:
        reason = str(e)
    logger.warning("No WhatsApp client (%s): replies are recorded as failed, not sent.", reason)
    return _UnavailableWhatsApp(reason)


#: The domain modules the actors import on first use (and, through them, SQLAlchemy, LangGraph, httpx).
DOMAIN_MODULES = ("app.db", "app.status", "app.conversation", "app.checkpoints", "app.graph", "app.whatsapp",
                  "app.replies", "app.operator")

_domain_lock = threading.Lock()
_domain_loaded = threading.Event()
_domain_thread: threading.Thread | None = None
_domain_error: BaseException | None = None


def _import_domain() -> None:
    global _domain_error
    try:
        for name in DOMAIN_MODULES:
            importlib.import_module(name)
    except BaseException as e:
        _domain_error = e
    else:
        _domain_loaded.set()


def load_domain() -> None:
    """Import :data:`DOMAIN_MODULES` once per process, in a thread of its own.

    The caller (a task's thread) only waits for that thread: a soft or
    hard time limit raised into it lands once the wait is over, never
    inside a module being imported (Python would keep the half-run module,
    and every later import of it in this process would find it broken).

    Raises:
      ImportError: a domain module could not be imported (the next call tries again).
    """
    global _domain_thread, _domain_error
    if _domain_loaded.is_set():
        return
    with _domain_lock:
        if _domain_thread is None:
            _domain_error = None
            _domain_thread = threading.Thread(target=_import_domain, name="domain-import", daemon=True)
            _domain_thread.start()
        thread = _domain_thread
    thread.join()
    if not _domain_loaded.is_set():
        with _domain_lock:
            error, _domain_thread = _domain_error, None
        raise ImportError(f"could not import the domain: {error!r}") from error


def build(config: Config) -> Runtime:
    """A runtime with production resources for ``config``."""
    load_domain()
    from app.db import make_engine, make_session_factory

    return Runtime(
        config=config,
        sessions=make_session_factory(make_engine(config.db_url)),
        redis=redis.Redis.from_url(config.redis_uri, socket_connect_timeout=5, socket_timeout=10),
        model=build_model(config),
    )


_lock = threading.Lock()
_current: Runtime | None = None


def services(rt: Runtime) -> Services:
    """The conversation domain's collaborators, built once per runtime."""
    if rt._services is None:
        load_domain()
        with _lock:
            if rt._services is None:
                import actors  # here: importing actors imports the actor modules, which import this one
                from app.checkpoints import open_checkpoints
                from app.graph import ConversationGraph
                from app.replies import Services

                if rt.checkpoints is None:
                    rt.checkpoints = open_checkpoints(rt.config.db_url)
                rt._services = Services(
                    sessions=rt.sessions,
                    redis=rt.redis,
                    graph=ConversationGraph(rt.checkpoints.saver, rt.model,
                                            system_prompt=rt.config.system_prompt,
                                            history_messages=rt.config.model_history_messages),
                    whatsapp=rt.whatsapp if rt.whatsapp is not None else _build_whatsapp(rt.config),
                    # The running message's limit and this process's id, read
                    # when a lock is taken (--time-limit, apply_async(time_limit=)).
                    lock_terms=conversation_locks.terms_for(actors.broker),
                )
    return rt._services


def get() -> Runtime:
    """The process's runtime, built from the actors' config on first use."""
    global _current
    if _current is None:
        load_domain()
        with _lock:
            if _current is None:
                from actors import config

                _current = build(config)
    return _current


def install(runtime: Runtime | None) -> None:
    """Replace the process's runtime (tests); None rebuilds it on next use."""
    global _current
    _current = runtime
