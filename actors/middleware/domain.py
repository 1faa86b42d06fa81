"""Loads the domain's libraries before a task's time limits start, not inside them."""

from __future__ import annotations

from dramatiq import Middleware
from dramatiq.errors import ActorNotFound

__all__ = ["DomainLoader"]


class DomainLoader(Middleware):
    """Import the domain (:func:`actors.runtime.load_domain`) before the first task that needs it.

    The domain (SQLAlchemy, LangGraph, httpx) is not imported with the
    actors, so that a process whose tasks never need it does not carry it.
    Importing it takes a second or more; done here, in ``before_process_message``
    ahead of :class:`actors.middleware.TimeLimits`, that second is not
    counted against the first task's limits (a 2 s limit would kill it).

    Actors that never touch the domain say so with ``loads_domain=False``
    (the benchmarks' no-op tasks); every other actor loads it.
    """

    @property
    def actor_options(self) -> set[str]:
        return {"loads_domain"}

    def before_process_message(self, broker, message):
        try:
            needs = broker.get_actor(message.actor_name).options.get("loads_domain", True)
        except ActorNotFound:
            return
        if needs:
            from actors.runtime import load_domain  # here: the runtime imports the broker's modules

            load_domain()
