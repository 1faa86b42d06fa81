"""Which time limits a message runs under: its own, the node's, the actor's."""

from __future__ import annotations

from actors.middleware import TimeLimits
from tests.support import extra_actors as test_actors


def test_a_nodes_limits_replace_the_actors_but_not_the_messages_own(global_broker):
    limits = TimeLimits(override_time_limit_ms=20_000, override_soft_time_limit_ms=10_000)
    plain = test_actors.test_soft_limit.message()
    own = test_actors.test_soft_limit.message_with_options(time_limit=3_000, soft_time_limit=2_000)

    assert limits.limits_ms(global_broker, plain) == (10_000, 20_000)
    assert limits.limits_ms(global_broker, own) == (2_000, 3_000)
    assert TimeLimits().limits_ms(global_broker, plain) == (240_000, 300_000)


def test_a_limit_hit_is_reported_with_the_limits_lock_released(global_broker):
    import threading

    from facade.exceptions import SoftTimeLimitExceeded

    # Given a task whose soft limit fires, and a hook that looks at the limits' lock
    limits = TimeLimits(override_time_limit_ms=60_000, override_soft_time_limit_ms=200)
    seen: list[tuple[str, str, bool]] = []

    def on_limit(task: str, kind: str) -> None:
        free = limits._lock.acquire(blocking=False)
        if free:
            limits._lock.release()
        seen.append((task, kind, free))

    limits.on_limit = on_limit
    message = test_actors.test_gate.message("test:never-set", 30)
    raised: list[BaseException] = []

    def run() -> None:
        limits.before_process_message(global_broker, message)
        try:
            test_actors.test_gate("test:never-set", 30)
        except SoftTimeLimitExceeded as e:
            raised.append(e)
        finally:
            limits.after_process_message(global_broker, message)

    # When it runs past its soft limit
    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)

    # Then the hook was called once, for the soft limit, while the lock was free
    assert raised and seen == [("test_gate", "soft", True)]
