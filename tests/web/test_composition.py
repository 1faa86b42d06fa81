"""The web app with wsgi.py's enqueue: what it sends lands in the runbook's queues."""

from __future__ import annotations

import json

import falcon.testing

from app.db import Conversation, session_scope
from app.web import create_app
from tests.support.fixtures import raw, sign
from tests.web.conftest import OPERATOR_TOKEN


def test_webhook_and_operator_calls_reach_the_real_queues(global_broker, redis_client, db, web_config):
    import wsgi

    client = falcon.testing.TestClient(create_app(web_config, enqueue=wsgi.enqueue, redis_client=redis_client,
                                                  sessions=db))
    # A message: its buffer check waits in the delayed set (countdown = the buffer window)
    body = raw("text.json")
    assert client.simulate_post("/webhook", body=body, headers={"X-Hub-Signature-256": sign(body)}).status_code == 200
    [element] = redis_client.zrange("dramatiq:default.delayed", 0, -1)
    assert b"check_buffer_task" in element and b"16505551234" in element
    # A status: waiting in the default queue, the runbook's `celery` list
    body = raw("status_sent.json")
    client.simulate_post("/webhook", body=body, headers={"X-Hub-Signature-256": sign(body)})
    assert redis_client.llen("celery") == 1
    assert b"update_message_status_task" in redis_client.lindex("celery", 0)
    # An operator takeover and message (of a conversation the worker stored): the state queue
    with session_scope(db) as session:
        session.add(Conversation(customer_key="16505551234", wa_id="16505551234"))
    auth = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    assert client.simulate_post("/operator/conversations/16505551234/takeover", headers=auth).status_code == 202
    result = client.simulate_post("/operator/conversations/16505551234/messages", headers=auth,
                                  body=json.dumps({"text": "Ana here"}).encode())
    assert result.status_code == 202
    assert redis_client.llen("state") == 2
    texts = b"".join(redis_client.lrange("state", 0, -1))
    assert b"update_langgraph_state_task" in texts and result.json["message_id"].encode() in texts
