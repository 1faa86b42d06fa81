"""Inspect the workers (``celery -A tasks inspect COMMAND``).

The answers come from the node registry instead of a broadcast, in the
shape Celery's workers give them: ``ping``, ``active``, ``reserved``,
``stats``, ``registered`` and ``active_queues``.  Celery's other inspect
commands are refused by name, with what to use instead (exit 2).
"""

from __future__ import annotations

import argparse
import json

from facade import connection, output, replies
from facade.cli import CliError
from facade.nodes import add_remote_options, replying_nodes

__all__ = ["configure", "run", "NOT_OFFERED"]

#: Celery inspect commands this project does not offer, and why.
NOT_OFFERED = {
    "clock": "the workers keep no logical clock",
    "conf": "the configuration is the environment (REDIS_URI, DB_URL, ... see the README)",
    "memdump": "memory debugging of workers is not offered",
    "memsample": "memory debugging of workers is not offered",
    "objgraph": "memory debugging of workers is not offered",
    "query_task": "tasks are not tracked by id; 'inspect active' and 'inspect reserved' list what runs",
    "report": "not offered; 'inspect stats' shows each node's set-up",
    "revoked": "tasks cannot be revoked, so there is no revoked list",
    "scheduled": "delayed messages (eta, countdown, retries) wait in Redis, not in a worker "
                 "(sorted sets dramatiq:<queue>.delayed)",
}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inspect_command", metavar="COMMAND", nargs="?",
                        help=f"one of: {', '.join(replies.REPLIES)}")
    parser.add_argument("--list", action="store_true", help="list the available inspect commands and exit")
    add_remote_options(parser)


def run(args: argparse.Namespace) -> int:
    if args.list:
        print("\n".join(replies.REPLIES))
        return 0
    command = args.inspect_command
    if command is None:
        raise CliError("Missing argument 'COMMAND'.")
    if command in NOT_OFFERED:
        raise CliError(f"'inspect {command}' is a Celery inspect command this project does not offer: "
                       f"{NOT_OFFERED[command]}")
    if command not in replies.REPLIES:
        raise CliError(f"Command {command} not recognized. Available inspect commands: "
                       f"{', '.join(sorted(replies.REPLIES))}")
    build = replies.REPLIES[command]
    client = connection.connect()
    try:
        nodes = replying_nodes(client, timeout_s=args.timeout, destination=args.destination)
    finally:
        client.close()
    answers = {node.name: build(node) for node in nodes}
    if args.json:
        print(json.dumps(answers))
        return 0
    for name, reply in answers.items():
        print(output.say_reply(name, reply, show_reply=True, quiet=args.quiet))
    if not args.quiet:
        print(output.nodes_online(len(answers)))
    return 0
