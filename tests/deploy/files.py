"""Readers of the deployment files, for the tests: units, compose, Dockerfile, README."""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SYSTEMD = DEPLOY / "systemd"
COMPOSE = DEPLOY / "docker" / "compose.yml"
PROMETHEUS = DEPLOY / "prometheus"
INSTALL_WORKER_PS1 = DEPLOY / "windows" / "install-worker.ps1"

#: Where the units expect the virtualenv's scripts (the README's install layout).
UNIT_VENV_BIN = "/srv/assistant/.venv/bin/"
#: This test run's virtualenv, whose scripts stand in for the installed ones.
TEST_VENV_BIN = str(Path(sys.executable).parent) + "/"

#: The units that run a long-lived process (not the restart timer's oneshot).
SERVICES = sorted(p.name for p in SYSTEMD.glob("*.service") if p.name != "whatsapp-worker-restart.service")


def unit(name: str) -> dict[str, dict[str, list[str]]]:
    """A unit file as {section: {key: [values, in order]}} (systemd's repeated keys kept)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in (SYSTEMD / name).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def service_value(name: str, key: str) -> str:
    """The one value of ``key`` in the [Service] section."""
    values = unit(name)["Service"][key]
    assert len(values) == 1, f"{name}: {key} given {len(values)} times"
    return values[0]


def exec_start(name: str) -> list[str]:
    """ExecStart as argv, the virtualenv's directory taken off the program."""
    argv = shlex.split(service_value(name, "ExecStart"))
    assert argv[0].startswith(UNIT_VENV_BIN), f"{name}: {argv[0]} is not in {UNIT_VENV_BIN}"
    return [argv[0][len(UNIT_VENV_BIN):], *argv[1:]]


def runs_a_worker(argv: list[str]) -> bool:
    return argv[:2] == ["dramatiq", "actors"] or (argv[0] == "celery" and "worker" in argv)


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def compose_command(service: str) -> list[str]:
    command = compose()["services"][service]["command"]
    return shlex.split(command) if isinstance(command, str) else list(command)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, rest = line.partition(" ")
            pairs.append((instruction.upper(), rest.strip()))
    return pairs


def dockerfile_exec_form(instruction: str) -> list[str]:
    """The JSON (exec) form of the last ``instruction`` (CMD, ENTRYPOINT)."""
    rest = [r for i, r in dockerfile_instructions() if i == instruction][-1]
    return json.loads(rest)


def readme() -> str:
    return (ROOT / "README.md").read_text()
