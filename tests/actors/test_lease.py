"""The beat lease on the real Redis: one holder, renewal, release by the holder only, fencing."""

from __future__ import annotations

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

    assert holder.claim_run("ran:job", 7, remember_ms=60_000)
    assert not holder.claim_run("ran:job", 7, remember_ms=60_000)
    assert not holder.claim_run("ran:job", 6, remember_ms=60_000)
    assert not other.claim_run("ran:job", 8, remember_ms=60_000)
    assert holder.claim_run("ran:job", 8, remember_ms=60_000)
