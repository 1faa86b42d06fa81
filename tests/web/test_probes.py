"""``app.web.probes.Probe``: one attempt at a time, a short cache, hung attempts abandoned.

The checks here block on a ``threading.Event`` and the clock is injected, so
nothing depends on how fast the machine is.
"""

from __future__ import annotations

import threading
import time

import falcon
import falcon.testing
import pytest

from app.config import Config
from app.web.health import HealthResource
from app.web.probes import (
    ABANDON_AFTER_S,
    PROBE_TIMEOUT_S,
    RESULT_TTL_S,
    STILL_HUNG,
    TIMED_OUT,
    Probe,
    describe_error,
    secrets_of,
)
from tests.support.waiting import wait_for

#: A wait for a probe that must time out; short, since the check is known to block.
SHORT_S = 0.05


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class GatedCheck:
    """A check that counts its calls and blocks until its gate opens."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        number = self.calls
        assert self.gate.wait(30), "the test never opened the gate"
        return number


@pytest.fixture
def gated():
    check = GatedCheck()
    yield check
    check.gate.set()  # let every probe thread of the test end


def probe_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"probe-{name}"]


def test_calls_during_a_running_attempt_share_it_and_a_fresh_attempt_follows_its_end(gated):
    # Given a probe whose check blocks
    clock = Clock()
    probe = Probe(gated, name="shared", clock=clock)

    # When it is asked five times while the check blocks
    results = [probe(SHORT_S) for _ in range(5)]

    # Then each read "timed out", and the check ran once, in one thread
    assert {r.error for r in results} == {TIMED_OUT}
    assert gated.calls == 1
    assert len(probe_threads("shared")) == 1

    # When the check returns, the next call has its value; after the cache's time a new attempt runs
    gated.gate.set()
    assert wait_for(lambda: probe(SHORT_S).ok)
    assert probe(SHORT_S).value == 1
    clock.now += RESULT_TTL_S
    assert probe(1.0).value == 2
    assert gated.calls == 2


def test_a_finished_result_is_reused_for_the_cache_time_then_checked_again():
    calls = []
    clock = Clock()
    probe = Probe(lambda: calls.append(1) or len(calls), name="cached", clock=clock)

    assert [probe(1.0).value, probe(1.0).value] == [1, 1]
    clock.now += RESULT_TTL_S - 0.01
    assert probe(1.0).value == 1
    clock.now += 0.01
    assert probe(1.0).value == 2


def test_an_attempt_hung_past_the_abandon_age_is_replaced_and_the_probe_recovers():
    # Given a check whose first call hangs (a query the network swallowed) and whose later calls answer
    hung = threading.Event()
    calls = []

    def check() -> str:
        calls.append(1)
        if len(calls) == 1:
            hung.wait(30)
            return "late"
        return "ok"

    clock = Clock()
    probe = Probe(check, name="latched", clock=clock)
    try:
        assert probe(SHORT_S).error == TIMED_OUT
        # While the hung attempt is younger than the abandon age, it is joined
        clock.now += ABANDON_AFTER_S - 0.1
        assert probe(SHORT_S).error == TIMED_OUT
        assert len(calls) == 1

        # When it is older, a new attempt runs and the probe is well again
        clock.now += 0.1
        result = probe(1.0)
        assert (result.value, len(calls)) == ("ok", 2)
    finally:
        hung.set()
    # and the abandoned attempt's late answer does not replace the newer one
    wait_for(lambda: not probe_threads("latched"))
    assert probe(1.0).value == "ok"


def test_at_most_two_abandoned_attempts_then_still_hung_without_a_new_thread(gated):
    clock = Clock()
    probe = Probe(gated, name="capped", clock=clock)
    assert probe(SHORT_S).error == TIMED_OUT
    for _ in range(2):
        clock.now += ABANDON_AFTER_S
        assert probe(SHORT_S).error == TIMED_OUT
    assert (gated.calls, len(probe_threads("capped"))) == (3, 3)

    # When the third attempt is too old too, the probe starts none and says so at once
    clock.now += ABANDON_AFTER_S
    started = time.monotonic()
    result = probe(5.0)
    assert time.monotonic() - started < 2.5  # did not wait out the 5 s
    assert result.error == STILL_HUNG and "3 attempts unfinished" in result.detail
    assert (gated.calls, len(probe_threads("capped"))) == (3, 3)

    # When they all end, the probe checks again
    gated.gate.set()
    wait_for(lambda: not probe_threads("capped"))
    clock.now += RESULT_TTL_S
    assert probe(1.0).value == 4


def test_the_answer_deadline_is_below_a_second_and_health_keeps_to_its_own():
    assert PROBE_TIMEOUT_S < 1
    # Given both probes blocking, and /health told to wait 0.2 s for them together
    gate = threading.Event()
    blocked = Probe(lambda: gate.wait(30), name="blocked-db")
    broker = Probe(lambda: gate.wait(30), name="blocked-redis")
    app = falcon.App()
    app.add_route("/health", HealthResource(broker=broker, database=blocked, queues=("default",), timeout_s=0.2))
    try:
        started = time.monotonic()
        result = falcon.testing.TestClient(app).simulate_get("/health")
        took = time.monotonic() - started
    finally:
        gate.set()
    assert took < 0.2 + 0.5
    assert result.status_code == 503
    assert (result.json["redis"], result.json["database"]) == ("unavailable: timed out", "unavailable: timed out")
    assert result.json["queues"] == {"default": None}


def test_an_error_text_loses_url_passwords_in_both_forms_and_known_secrets_and_is_cut():
    error = ConnectionError("could not reach redis://user:hunter2@10.0.0.5:6379/0 nor rediss://h:6380/0?password=s3cr%21t"
                            " with token tok-123 " + "x" * 400)

    text = describe_error(error, secrets_of("tok-123", urls=["rediss://h:6380/0?password=s3cr%21t"]))

    assert "hunter2" not in text and "s3cr" not in text and "tok-123" not in text
    assert "redis://user:**@10.0.0.5:6379/0" in text and "rediss://h:6380/0?password=**" in text
    assert len(text) <= 300


def test_the_passwords_to_scrub_come_from_the_configs_url_parser():
    config = Config(redis_uri="redis://:p%40ss@127.0.0.1:6379/0?password=other")
    assert secrets_of(None, "", "tok", urls=[config.redis_uri, "sqlite:///x"]) == ["tok", "p%40ss", "p@ss", "other"]


def test_the_database_probes_connection_has_libpqs_keepalives_and_user_timeout(engine):
    # libpq accepted them on a real connection (an option it did not know would fail the connect)
    from app.web.probes import make_probe_engine

    probe_engine = make_probe_engine(engine.url.render_as_string(hide_password=False))
    try:
        with probe_engine.connect() as conn:
            parameters = conn.connection.dbapi_connection.info.get_parameters()
    finally:
        probe_engine.dispose()
    assert {k: parameters.get(k) for k in ("keepalives", "keepalives_idle", "keepalives_interval",
                                           "keepalives_count", "tcp_user_timeout", "connect_timeout")} == {
        "keepalives": "1", "keepalives_idle": "1", "keepalives_interval": "1", "keepalives_count": "2",
        "tcp_user_timeout": "2000", "connect_timeout": "2"}
