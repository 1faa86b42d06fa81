"""What the actors of one process share: database, Redis, model, clock.

Built on first use from the config the broker was built from, so that
importing the actors (the web app does, to send) opens nothing.  Tests
install their own with :func:`install`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis
from sqlalchemy.orm import Session, sessionmaker

from app.config import Config
from app.db import make_engine, make_session_factory
from app.llm import Model, OfflineModel

__all__ = ["Runtime", "get", "install", "build"]


@dataclass
class Runtime:
    config: Config
    sessions: sessionmaker[Session]
    redis: redis.Redis
    model: Model
    #: Milliseconds since the epoch; injected so tests control time.
    clock_ms: Callable[[], int] = field(default=lambda: int(time.time() * 1000))


_lock = threading.Lock()
_current: Runtime | None = None


def build(config: Config) -> Runtime:
    """A runtime with production resources for ``config``."""
    # NOTE: the Gemini client arrives with the conversation pipeline
    # (issue 5); until then a configured GOOGLE_API_KEY is not used yet.
    model: Model = OfflineModel()
    return Runtime(
        config=config,
        sessions=make_session_factory(make_engine(config.db_url)),
        redis=redis.Redis.from_url(config.redis_uri, socket_connect_timeout=5, socket_timeout=10),
        model=model,
    )


def get() -> Runtime:
    """The process's runtime, built from the actors' config on first use."""
    global _current
    if _current is None:
        with _lock:
            if _current is None:
                from actors import config

                _current = build(config)
    return _current


def install(runtime: Runtime | None) -> None:
    """Replace the process's runtime (tests); None rebuilds it on next use."""
    global _current
    _current = runtime
