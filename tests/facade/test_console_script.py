"""The ``celery`` on the virtualenv's PATH is ours, though the tests install real Celery too."""

from __future__ import annotations

import sys
from pathlib import Path


def test_the_celery_console_script_runs_the_facade():
    # Real Celery (a test-only dependency) ships a console script of the
    # same name; pip installs the project after its dependencies, so ours wins.
    script = Path(sys.executable).parent / "celery"
    assert "from facade.cli import main" in script.read_text()
