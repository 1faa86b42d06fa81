"""Erase all messages from all known task queues (``celery -A tasks purge``).

Celery's prompt and messages.  Only waiting messages go (the lists
``celery`` and ``state``, and any priority side lists the old Celery
deployment left); messages a worker holds, delayed ones (retries,
countdown, eta) and dead letters stay.  Without ``-f`` the answer is read
from stdin: ``y``/``yes`` purges, ``n``/``no``/empty/end of input prints
``Aborted!`` and exits 1, anything else is asked again, as click does.
"""

from __future__ import annotations

import argparse
import sys

import redis

from actors import keys
from actors.backlog import purge_waiting
from facade import connection

__all__ = ["configure", "run", "KNOWN_QUEUES"]

#: The project's queues, as Celery's ``task_queues`` would name them.
KNOWN_QUEUES = ("default", "state")

#: Queue names accepted by -Q/-X (``celery`` is another name of ``default``).
_ACCEPTED = {"default", "celery", "state"}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--force", action="store_true", help="don't prompt for verification")
    parser.add_argument("-Q", "--queues", type=_comma_list,
                        help="comma-separated list of queue names to purge (default: default,state)")
    parser.add_argument("-X", "--exclude-queues", type=_comma_list,
                        help="comma-separated list of queue names not to purge")


def _comma_list(value: str) -> list[str]:
    names = [part.strip() for part in value.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError("no queue named")
    unknown = [n for n in names if n not in _ACCEPTED]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown queue {unknown[0]!r}: this project's queues are default (also called celery) and state")
    return names


def _plural(count: int, word: str) -> str:
    return word if count == 1 else word + "s"


def _confirm(question: str) -> bool:
    """click.confirm(question, default=False) on plain stdin/stdout."""
    while True:
        sys.stdout.write(f"{question} [y/N]: ")
        sys.stdout.flush()
        line = sys.stdin.readline()
        if not line:
            sys.stdout.write("\n")
            return False
        answer = line.strip().lower()
        if answer in ("y", "yes"):
            return True
        if answer in ("", "n", "no"):
            return False
        print("Error: invalid input")


def run(args: argparse.Namespace) -> int:
    excluded = {keys.canonical_queue(q) for q in args.exclude_queues or ()}
    # One name per queue (-Q default,celery names one list), as the operator first wrote it.
    chosen: dict[str, str] = {}
    for name in args.queues or KNOWN_QUEUES:
        if keys.canonical_queue(name) not in excluded:
            chosen.setdefault(keys.canonical_queue(name), name)
    names = sorted(chosen.values())
    count = len(names)
    if not names:
        return 0
    if not args.force:
        question = (f"WARNING:This will remove all tasks from {_plural(count, 'queue')}: {', '.join(names)}.\n"
                    "         There is no undo for this operation!\n\n"
                    "(to skip this prompt use the -f option)\n"
                    "Are you sure you want to delete all tasks?")
        if not _confirm(question):
            print("Aborted!", file=sys.stderr)
            return 1
    client = connection.connect()
    try:
        purged = sum(purge_waiting(client, q) for q in chosen)
    except redis.RedisError as e:
        raise connection.unavailable(e) from None
    finally:
        client.close()
    if purged:
        print(f"Purged {purged} {_plural(purged, 'message')} from {count} known task {_plural(count, 'queue')}.")
    else:
        print(f"No messages purged from {count} {_plural(count, 'queue')}.")
    return 0
