"""The beat lease on the real Redis: one holder, renewal, release by the holder only, fencing."""

from __future__ import annotations

import time

from actors.lease import Lease
from tests.support.waiting import wait_for


def test_only_one_of_two_processes_holds_the_lease(redis_client):
    first, second = Lease(redis_client, "lease", ttl_ms=10_000), Lease(redis_client, "lease", ttl_ms=10_000)

    assert first.acquire_or_renew()
    assert not second.acquire_or_renew()
    assert first.acquire_or_renew()  # a renewal
    assert first.holder() == first.token


def test_only_the_holder_releases_it(redis_client):
    first, second = Lease(redis_client, "lease", ttl_ms=10_000), Lease(redis_client, "lease", ttl_ms=10_000)
    first.acquire_or_renew()

    assert not second.release()
    assert first.holder() == first.token
    assert first.release()
    assert second.acquire_or_renew()


def test_a_lease_nobody_renews_runs_out_and_another_takes_it(redis_client):
    first, second = Lease(redis_client, "lease", ttl_ms=300), Lease(redis_client, "lease", ttl_ms=300)
    first.acquire_or_renew()

    wait_for(second.acquire_or_renew, timeout_s=10)

    # The old holder can neither renew nor release what is no longer its own.
    assert not first.acquire_or_renew()
    assert not first.release()
    assert second.holder() == second.token


def test_a_period_runs_once_and_only_for_the_holder(redis_client):
    holder, other = Lease(redis_client, "lease", ttl_ms=10_000), Lease(redis_client, "lease", ttl_ms=10_000)
    holder.acquire_or_renew()

    day_ms = 86_400_000
    period = holder.claim_run("ran:job", interval_ms=day_ms, remember_ms=60_000)
    # numbered by Redis's clock
    seconds, micros = redis_client.time()
    assert period == round((seconds * 1000 + micros // 1000) / day_ms)
    assert holder.claim_run("ran:job", interval_ms=day_ms, remember_ms=60_000) is None
    assert other.claim_run("ran:job", interval_ms=1, remember_ms=60_000) is None

    # The next period (by Redis's clock) runs once more
    assert holder.claim_run("ran:job", interval_ms=1, remember_ms=60_000) is not None


def test_a_beat_whose_clock_runs_ahead_cannot_fire_a_period_early_after_a_takeover(redis_client, monkeypatch):
    from actors.beat import Beat, Job

    runs = []
    job = Job("job", "tasks.job", 86_400, lambda: runs.append(1))
    first, second = Beat(redis_client, [job], lease_s=30), Beat(redis_client, [job], lease_s=30)
    assert first.tend_lease()
    assert first.fire(job)
    first.lease.release()
    assert second.tend_lease()

    # When the new holder's host clock is a whole period ahead
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 86_400)

    # Then it still sees the period that already ran
    assert not second.fire(job)
    assert runs == [1]
