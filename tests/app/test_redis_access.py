"""Telling a refused password from a Redis that is down (real errors of a private server)."""

from __future__ import annotations

import pytest
import redis

from app.redis_access import auth_failure
from tests.support.redis_server import PrivateRedis, free_port


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = PrivateRedis(tmp_path_factory.mktemp("redis"), password="right+pw")
    yield server
    server.stop()


def error_of(url: str, protocol: int = 2) -> redis.RedisError:
    client = redis.Redis.from_url(url, protocol=protocol, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as e:
        return e
    finally:
        client.close()
    raise AssertionError(f"{url} answered")


@pytest.mark.parametrize("protocol", [2, 3])
def test_a_missing_password_is_named_as_such(server, protocol):
    url = f"redis://127.0.0.1:{server.port}/0"
    assert auth_failure(error_of(url, protocol), url) == (
        f"Redis authentication failed at {url}: it requires a password and REDIS_URI has none "
        "(Authentication required). Put the right password in REDIS_URI (redis://:PASSWORD@host:port/db).")


def test_a_wrong_password_is_named_as_such_and_masked(server):
    url = f"redis://:wrong%2Bpw@127.0.0.1:{server.port}/0"
    reason = auth_failure(error_of(url), url)
    assert reason is not None and reason.startswith(
        f"Redis authentication failed at redis://:**@127.0.0.1:{server.port}/0: it refused the password in REDIS_URI")
    assert "wrong" not in reason


def test_a_redis_that_is_down_is_not_an_authentication_failure():
    url = f"redis://:pw@127.0.0.1:{free_port()}/0"
    assert auth_failure(error_of(url), url) is None


@pytest.mark.parametrize("error", [
    redis.BusyLoadingError("Redis is loading the dataset in memory"),
    redis.TimeoutError("Timeout connecting to server"),
    redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused."),
])
def test_a_redis_that_is_loading_or_slow_is_waited_for_not_refused(error):
    # (the errors redis-py raises for them, as words: a loading Redis cannot be held still for a test)
    assert auth_failure(error, "redis://:pw@127.0.0.1:6379/0") is None
