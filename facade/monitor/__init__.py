"""The monitor: a Flower look-alike on the node registry and the broker's keys (``celery -A tasks flower``)."""

from facade.monitor.app import MonitorSettings, Sources, create_app

__all__ = ["MonitorSettings", "Sources", "create_app"]
