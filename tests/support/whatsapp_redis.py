"""A WhatsApp client for worker subprocesses: records sends in the test's Redis."""

from __future__ import annotations

import json

import redis

#: The list a test reads what the workers sent from.
SENT_KEY = "test:whatsapp:sent"
READ_KEY = "test:whatsapp:read"


class RedisRecordingWhatsApp:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def send_text(self, *, to: str | None, recipient: str | None, text: str,
                  callback_data: str | None = None) -> str:
        wamid = f"wamid.out.{self.client.incr('test:whatsapp:ids')}"
        record = {"to": to, "recipient": recipient, "text": text, "callback_data": callback_data, "wamid": wamid}
        self.client.rpush(SENT_KEY, json.dumps(record))
        return wamid

    def mark_read(self, wamid: str, *, typing: bool = True) -> None:
        self.client.rpush(READ_KEY, json.dumps([wamid, typing]))


def sent(client: redis.Redis) -> list[dict]:
    return [json.loads(e) for e in client.lrange(SENT_KEY, 0, -1)]
