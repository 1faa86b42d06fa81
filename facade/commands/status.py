"""Show list of workers that are online (``celery -A tasks status``).

Prints ``->  NODE: OK`` per live node, a blank line and ``N node(s)
online.``; exits 69 with ``Error: No nodes replied within time
constraint`` when there is none, as Celery does.
"""

from __future__ import annotations

import argparse
import json

from facade import connection, output, replies
from facade.nodes import add_remote_options, replying_nodes

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    add_remote_options(parser)


def run(args: argparse.Namespace) -> int:
    client = connection.connect()
    try:
        nodes = replying_nodes(client, timeout_s=args.timeout, destination=args.destination)
    finally:
        client.close()
    answers = {node.name: replies.ping(node) for node in nodes}
    if args.json:
        print(json.dumps(answers))
    else:
        for name, reply in answers.items():
            print(output.say_reply(name, reply, show_reply=False, quiet=args.quiet))
    if not args.quiet:
        print(output.nodes_online(len(answers)))
    return 0
