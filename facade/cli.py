"""``celery``: the runbook's command line, translated onto the project's workers.

Only the words of the Celery runbook are accepted; an unknown option or a
Celery feature this project does not offer exits non-zero with one line
naming it, as Celery's own CLI does for a bad option (exit 2).

Each sub-command lives in ``facade/commands/<name>.py`` and offers
``configure(parser)`` (its options) and ``run(args) -> int`` (its exit
code).  The global options come before the sub-command, as in Celery 5:
``celery -A tasks worker ...``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Iterable
from typing import NoReturn

from app.config import set_environment

__all__ = ["main", "CliError", "ArgumentParser", "EX_USAGE", "EX_UNAVAILABLE", "LEVELS", "log_level"]

#: Celery's exit codes (click's usage error, and sysexits' EX_UNAVAILABLE).
EX_USAGE = 2
EX_UNAVAILABLE = 69

#: Celery's log level names for ``-l`` (FATAL is CRITICAL, WARN is WARNING).
LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING, "WARN": logging.WARNING,
          "ERROR": logging.ERROR, "CRITICAL": logging.CRITICAL, "FATAL": logging.CRITICAL}


def log_level(value: str) -> int:
    """The argparse type of ``-l/--loglevel``: one of :data:`LEVELS`, in any case."""
    try:
        return LEVELS[value.upper()]
    except KeyError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL, FATAL") from None

#: The only app ``-A`` may name: the module that holds the five tasks.
APP_MODULE = "tasks"

#: Sub-command -> module offering ``configure(parser)`` and ``run(args)``.
COMMANDS: dict[str, str] = {
    "worker": "facade.commands.worker",
    "status": "facade.commands.status",
    "inspect": "facade.commands.inspect",
    "purge": "facade.commands.purge",
    "beat": "facade.commands.beat",
    "flower": "facade.commands.flower",
}

#: Celery sub-commands this project does not offer, and what to use instead.
NOT_OFFERED = {
    "events": "the monitor ('celery -A tasks flower') shows workers and tasks",
    "control": "workers are controlled with signals: SIGTERM for a warm shutdown",
    "multi": "run one 'celery -A tasks worker -n NAME' per node under systemd",
    "shell": "use 'python -c \"import tasks\"'",
    "call": "send tasks from Python: tasks.<name>.delay(...)",
    "result": "results are not kept (no result backend, as in the runbook)",
    "migrate": "messages of the old deployment are read from the same Redis lists",
    "amqp": "the broker is Redis",
    "graph": "not offered",
    "upgrade": "not offered",
    "report": "not offered",
    "logtool": "not offered",
}


class CliError(Exception):
    """A usage error: printed as ``Error: <message>`` (``prefix`` + message) with exit code 2."""

    def __init__(self, message: str, code: int = EX_USAGE, *, prefix: str = "Error: ") -> None:
        super().__init__(message)
        self.code = code
        self.prefix = prefix


class ArgumentParser(argparse.ArgumentParser):
    """argparse that fails like Celery: usage, then ``Error: ...`` on stderr, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EX_USAGE, f"Error: {message}\n")


class NotOffered(argparse.Action):
    """Refuses a Celery option this project does not offer: one line naming it and what to do instead."""

    def __init__(self, option_strings, dest, why: str = "", command: str = "", **kwargs) -> None:
        self.why, self.command = why, command
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        parser.error(f"'celery {self.command} {option_string}' is a Celery option this project does not offer: "
                     f"{self.why}")


def refuse_options(parser: argparse.ArgumentParser, command: str,
                   options: Iterable[tuple[tuple[str, ...], bool, str]]) -> None:
    """Add ``options`` ((flags, takes a value, why) each) to ``parser`` so that using one fails with exit 2."""
    for flags, takes_value, why in options:
        parser.add_argument(*flags, action=NotOffered, why=why, command=command, nargs="?" if takes_value else 0,
                            default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog="celery", description="The runbook's Celery commands on Dramatiq workers.")
    parser.add_argument("-A", "--app", help="the application module (only 'tasks')")
    parser.add_argument("-b", "--broker", help="Redis URL (default: REDIS_URI)")
    parser.add_argument("--workdir", help="change to this directory first")
    parser.add_argument("-q", "--quiet", action="store_true", help="no banner")
    parser.add_argument("--no-color", action="store_true", help="no colours (there are none)")
    parser.add_argument("--version", action=_Version, help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    for name, module in COMMANDS.items():
        command = importlib.import_module(module)
        command.configure(sub.add_parser(name, help=(command.__doc__ or "").strip().splitlines()[0]))
    return parser


def project_version() -> str:
    """This project's installed version ("unknown" when run from a bare checkout)."""
    from importlib import metadata

    try:
        return metadata.version("whatsapp-assistant-tasks")
    except metadata.PackageNotFoundError:
        return "unknown"


def version_line() -> str:
    """What ``celery --version`` and ``celery version`` print: this project's version and Dramatiq's."""
    import dramatiq

    return f"{project_version()} (whatsapp-assistant-tasks on dramatiq {dramatiq.__version__})"


class _Version(argparse.Action):
    """``--version``: the line is built only when asked (it imports dramatiq)."""

    def __init__(self, option_strings, dest, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(version_line())
        parser.exit()


def _check_app(args: argparse.Namespace) -> None:
    if args.app is None:
        raise CliError(f"the app is missing: run as 'celery -A {APP_MODULE} {args.command} ...'")
    if args.app.split(":")[0] != APP_MODULE:
        raise CliError(f"Invalid value for '-A' / '--app': Unable to load celery application. "
                       f"The module {args.app} was not found; this project's app is '{APP_MODULE}'.")


#: Global options that take a value (they come before the sub-command).
_VALUE_OPTIONS = ("-A", "--app", "-b", "--broker", "--workdir")


def _command_position(argv: list[str]) -> int | None:
    """Index of the sub-command: the first word that is not a global option or its value."""
    i = 0
    while i < len(argv):
        word = argv[i]
        if word in _VALUE_OPTIONS:
            i += 2
            continue
        if not word.startswith("-"):
            return i
        i += 1
    return None


def _early_globals(argv: list[str]) -> None:
    """Apply ``-b`` and ``--workdir`` before any command module is imported:
    importing the actors reads REDIS_URI, and ``-A tasks`` is found from the cwd."""
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("-b", "--broker")
    early.add_argument("--workdir")
    known, _ = early.parse_known_args(argv)
    if known.workdir:
        try:
            os.chdir(known.workdir)
        except OSError as e:
            raise CliError(f"--workdir {known.workdir}: {e.strerror}") from None
    if known.broker:
        set_environment(REDIS_URI=known.broker)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    position = _command_position(argv)
    if position is not None and argv[position] in NOT_OFFERED:
        name = argv[position]
        print(f"Error: 'celery {name}' is a Celery feature this project does not offer: {NOT_OFFERED[name]}",
              file=sys.stderr)
        return EX_USAGE
    if position is not None and argv[position] == "version":
        print(version_line())
        return 0
    try:
        _early_globals(argv[:position])
        parser = _parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return EX_USAGE
        _check_app(args)
        command = importlib.import_module(COMMANDS[args.command])
        return int(command.run(args) or 0)
    except CliError as exc:
        print(f"{exc.prefix}{exc}", file=sys.stderr)
        return exc.code


if __name__ == "__main__":
    # Run the imported module, not this __main__ copy: the commands raise
    # facade.cli.CliError, a different class from __main__.CliError.
    from facade.cli import main as _main

    sys.exit(_main())
