"""The ``celery`` on the virtualenv's PATH is ours, though the tests install real Celery too."""

from __future__ import annotations

import sys
from pathlib import Path


def test_the_celery_console_script_runs_the_facade():
    # Real Celery (a test-only dependency) ships a console script of the
    # same name; pip installs the project after its dependencies, so ours wins.
    script = Path(sys.executable).parent / "celery"
    assert "from facade.cli import main" in script.read_text()


def test_version_is_a_global_option_and_a_command_as_in_celery():
    from importlib import metadata

    import dramatiq

    from tests.support.cli import run_celery

    ours = metadata.version("whatsapp-assistant-tasks")
    line = f"{ours} (whatsapp-assistant-tasks on dramatiq {dramatiq.__version__})\n"
    for argv in (["--version"], ["version"], ["-A", "tasks", "version"]):
        result = run_celery(*argv)
        assert (result.returncode, result.stdout, result.stderr) == (0, line, ""), argv
