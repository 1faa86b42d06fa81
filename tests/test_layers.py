"""Imports point down only: app never imports actors or facade; facade/api only dramatiq."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def top(name: str) -> str:
    return name.split(".", 1)[0]


@pytest.mark.parametrize("path", sorted((ROOT / "app").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_app_never_imports_upward(path):
    assert not {top(n) for n in imported_modules(path)} & {"actors", "facade", "tasks", "wsgi"}


def test_the_facade_api_is_a_leaf_over_dramatiq():
    project = {"app", "actors", "facade", "tasks", "wsgi"}
    for name in ("api.py", "exceptions.py"):
        assert not {top(n) for n in imported_modules(ROOT / "facade" / name)} & project


def test_only_the_config_reads_the_environment():
    offenders = [
        str(p.relative_to(ROOT))
        for folder in ("app", "actors", "facade")
        for p in (ROOT / folder).rglob("*.py")
        if "os.environ" in p.read_text() and p.name != "config.py"
    ]
    assert offenders == []
