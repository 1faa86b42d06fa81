"""REDIS_URI with a password, and rediss://, against a private server."""

from __future__ import annotations

import dramatiq
import pytest
from dramatiq.errors import ConnectionClosed

from actors.setup import build_broker
from app.config import Config, mask_url
from tests.support.redis_server import PrivateRedis


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory):
    server = PrivateRedis(tmp_path_factory.mktemp("redis"), password="s3cret-pass")
    yield server
    server.stop()


def roundtrip(url: str) -> tuple:
    broker = build_broker(Config(redis_uri=url))
    try:
        actor = dramatiq.actor(lambda x: None, actor_name="echo", broker=broker)
        actor.send("over the wire")
        consumer = broker.consume("default", prefetch=1, timeout=500)
        message = next(consumer) or next(consumer)
        consumer.ack(message)
        consumer.close()
        return message.args
    finally:
        broker.close()


def test_a_password_in_redis_uri_is_used(private_redis):
    assert roundtrip(private_redis.url) == ("over the wire",)


def test_rediss_uri_connects_over_tls(private_redis):
    assert roundtrip(private_redis.tls_url) == ("over the wire",)


def test_without_the_password_the_error_says_so(private_redis):
    with pytest.raises(ConnectionClosed, match="(?i)auth"):
        roundtrip(f"redis://127.0.0.1:{private_redis.port}/0")


def test_the_password_is_masked_when_the_url_is_shown(private_redis):
    assert mask_url(private_redis.url) == f"redis://:**@127.0.0.1:{private_redis.port}/0"
    assert "s3cret" not in repr(Config(redis_uri=private_redis.url))
