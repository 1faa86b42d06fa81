"""The checkpointer after a PostgreSQL outage: the first query on a database that is back succeeds."""

from __future__ import annotations

import os

from sqlalchemy.engine import make_url

from app.checkpoints import open_checkpoints
from tests.support.cuttable_proxy import CuttableProxy


def test_after_an_outage_the_checkpointer_does_not_hand_out_a_connection_the_outage_killed(checkpoints):
    # Given a checkpointer whose pool holds a connection (made through a proxy the test can cut)
    url = make_url(os.environ["DB_URL"])
    with CuttableProxy(url.port or 5432) as proxy:
        saved = open_checkpoints(url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False))
        try:
            config = {"configurable": {"thread_id": "outage-thread", "checkpoint_ns": ""}}
            assert saved.saver.get_tuple(config) is None
            assert proxy.connections >= 1

            # When PostgreSQL goes away (the pooled connection is dropped) and comes back
            proxy.cut()
            proxy.restore()

            # Then the next read succeeds at once: a task's last retry after an
            # outage must not fail on a live database
            assert saved.saver.get_tuple(config) is None
        finally:
            saved.close()
