"""The node registry on the real Redis: beats, expiry, readers."""

from __future__ import annotations

import time

from actors import registry
from tests.support.waiting import wait_for


def test_a_beating_node_is_listed_with_its_info_and_processes(redis_client):
    registry.beat(redis_client, "worker1@host", info={"pool": "prefork", "concurrency": 2},
                  processes={101: {"active": [{"id": "a"}], "processed": 3},
                             102: {"active": [], "reserved": [{"id": "b"}], "processed": 4}})

    [node] = registry.live_nodes(redis_client)

    assert node.name == "worker1@host"
    assert node.info == {"pool": "prefork", "concurrency": 2}
    assert sorted(node.processes) == ["101", "102"]
    assert [t["id"] for t in node.active] == ["a"]
    assert [t["id"] for t in node.reserved] == ["b"]
    assert node.total("processed") == 7
    assert all(p["beat_ms"] > 0 for p in node.processes.values())


def test_empty_lists_stay_lists(redis_client):
    registry.beat(redis_client, "worker1@host", info={}, processes={7: {"active": [], "reserved": []}, 8: {}})

    [node] = registry.live_nodes(redis_client)

    assert node.processes["7"]["active"] == [] and node.processes["7"]["reserved"] == []
    assert node.processes["8"]["beat_ms"] > 0


def test_two_nodes_count_as_two_and_processes_of_one_node_as_one(redis_client):
    registry.beat(redis_client, "worker1@h", info={}, processes={1: {}, 2: {}})
    registry.beat(redis_client, "worker2@h", info={}, processes={3: {}})

    assert [n.name for n in registry.live_nodes(redis_client)] == ["worker1@h", "worker2@h"]


def _redis_ms(redis_client) -> int:
    seconds, micros = redis_client.time()
    return seconds * 1000 + micros // 1000


def test_a_silent_node_is_listed_for_three_intervals_and_gone_after(redis_client):
    # Judged by Redis's clock (the registry's), not by the precision of sleeps
    interval = 0.5
    gone_at = registry.beat(redis_client, "quiet@h", info={}, processes={1: {}}, interval_s=interval) \
        + registry.MISSED_BEATS * int(interval * 1000)

    # Until three intervals have passed, it is listed
    checked_before = 0
    while True:
        names = [n.name for n in registry.live_nodes(redis_client, interval_s=interval)]
        if _redis_ms(redis_client) >= gone_at:  # the listing may have been read at or after the end
            break
        assert names == ["quiet@h"]
        checked_before += 1
        time.sleep(0.01)
    assert checked_before > 0

    # From then on it is gone
    assert registry.live_nodes(redis_client, interval_s=interval) == []
    # and its key too, once past its expiry (Redis expires a key only after its ms: one more)
    while _redis_ms(redis_client) <= gone_at + 1:
        pass
    assert not redis_client.exists(registry.node_key("quiet@h"))


def test_a_replaced_process_leaves_no_ghost(redis_client):
    interval = 0.2
    registry.beat(redis_client, "n@h", info={}, processes={1: {}, 2: {}}, interval_s=interval)

    def process_1_dropped():
        registry.beat(redis_client, "n@h", processes={2: {}}, interval_s=interval)
        [node] = registry.live_nodes(redis_client, interval_s=interval)
        return sorted(node.processes) == ["2"]

    wait_for(process_1_dropped, timeout_s=5, interval_s=interval / 2)


def test_a_childs_beat_never_keeps_its_node_alive(redis_client):
    # A prefork child beats its own state only: its supervisor alone stands for the node
    interval = 0.5
    gone_at = registry.beat(redis_client, "n@h", info={"pool": "prefork"}, interval_s=interval) \
        + registry.MISSED_BEATS * int(interval * 1000)
    ttl_ms = registry.MISSED_BEATS * int(interval * 1000)

    # When only a child beats after that (its supervisor was killed), however often
    while _redis_ms(redis_client) < gone_at:
        registry.beat_process(redis_client, "n@h", 7, {"active": [{"id": "a"}]}, interval_s=interval)
        # its beats never lengthen the node's entry (-2, 0: it expired at gone_at, between the two calls)
        pttl = redis_client.pttl(registry.node_key("n@h"))
        assert pttl <= ttl_ms
        assert pttl > 0 or _redis_ms(redis_client) >= gone_at - 50
        time.sleep(0.05)

    # Then the node is gone on time
    assert registry.live_nodes(redis_client, interval_s=interval) == []
    # and a child beating on into the gone node's hash gives it a ttl: nothing stays for good
    # (the hash expires a millisecond after gone_at: a beat in that millisecond writes into it)
    wait_for(lambda: not redis_client.exists(registry.node_key("n@h")), timeout_s=5, interval_s=0.01)
    registry.beat_process(redis_client, "n@h", 7, {}, interval_s=interval)
    assert 0 < redis_client.pttl(registry.node_key("n@h")) <= ttl_ms
    assert registry.live_nodes(redis_client, interval_s=interval) == []


def test_a_childs_state_shows_under_its_live_node_and_is_dropped_once_it_stops_beating(redis_client):
    interval = 0.2
    registry.beat(redis_client, "n@h", info={}, interval_s=interval)
    registry.beat_process(redis_client, "n@h", 7, {"active": [{"id": "a"}], "processed": 2}, interval_s=interval)
    [node] = registry.live_nodes(redis_client, interval_s=interval)
    assert [t["id"] for t in node.active] == ["a"] and node.total("processed") == 2
    assert node.processes["7"]["beat_ms"] > 0

    # When the child dies unseen (killed, no clean-up) while its node beats on
    def dropped():
        registry.beat(redis_client, "n@h", info={}, interval_s=interval)
        [node] = registry.live_nodes(redis_client, interval_s=interval)
        return node.processes == {}

    wait_for(dropped, timeout_s=5, interval_s=interval / 2)


def test_leave_forgets_a_process_or_the_node(redis_client):
    registry.beat(redis_client, "n@h", info={}, processes={1: {}, 2: {}})
    registry.leave(redis_client, "n@h", pid=1)
    [node] = registry.live_nodes(redis_client)
    assert sorted(node.processes) == ["2"]

    registry.leave(redis_client, "n@h")
    assert registry.live_nodes(redis_client) == []


def test_task_dicts_keep_their_key_order_and_empty_lists(redis_client):
    # inspect prints these dicts with repr(), in the order Celery's workers give.
    task = {"id": "t1", "name": "tasks.check_buffer_task", "args": [], "kwargs": {}, "type": "tasks.check_buffer_task",
            "hostname": "w@h", "time_start": None, "acknowledged": False,
            "delivery_info": {"exchange": "", "routing_key": "celery", "priority": 3, "redelivered": False},
            "worker_pid": None}
    registry.beat(redis_client, "w@h", info={}, processes={7: {"active": [], "reserved": [task]}})

    [node] = registry.live_nodes(redis_client)

    assert node.reserved == [task]
    assert list(node.reserved[0]) == list(task)
    assert node.processes["7"]["active"] == []


def test_a_task_dict_shows_the_actors_priority_when_its_message_has_none(make_broker):
    from actors.middleware.node_state import task_dict
    from tests.actors.test_broker import declare

    broker = make_broker()
    message = declare(broker, priority=-3).message("x")  # Dramatiq's -3 is the runbook's 3
    assert "priority" not in message.options

    entry = task_dict(message, hostname="w1@vm", started=None, pid=None, broker=broker)

    assert entry["delivery_info"]["priority"] == 3
