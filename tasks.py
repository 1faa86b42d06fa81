"""What ``celery -A tasks`` names: the runbook's five tasks, re-exported."""

from actors import *  # noqa: F401,F403
from actors import __all__  # noqa: F401
