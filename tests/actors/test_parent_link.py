"""What a prefork child tells its supervisor about the message it runs, and when."""

from __future__ import annotations

from actors.middleware import ParentLink, TimeLimits
from tests.actors.test_broker import declare
from tests.support.waiting import wait_for


def test_the_supervisor_hears_end_only_once_the_message_is_acknowledged(make_broker, redis_client, start_worker):
    broker = make_broker()
    events = []

    def send(event):
        # What is still in flight when each event leaves the child
        key = event[1]["inflight_key"] if event[0] == "start" else events[0][2]
        events.append((event[0], event[1], key, redis_client.llen(key)))

    time_limits = next(m for m in broker.middleware if isinstance(m, TimeLimits))
    broker.add_middleware(ParentLink(send, time_limits))
    declare(broker).send("x")
    start_worker(broker, worker_threads=1)

    wait_for(lambda: [e[0] for e in events] == ["start", "done", "end"])
    (_, _, _, held_at_start), (_, _, _, held_when_done), (_, _, _, held_at_end) = events
    # The message stays the child's until its ack: a death before then fails it by the retry policy
    assert held_at_start == 1 and held_when_done == 1
    assert held_at_end == 0
