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
