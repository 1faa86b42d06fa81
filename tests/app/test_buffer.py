"""The conversation buffer in Redis: dedup, order, quiet window, maximum wait, one clock."""

from __future__ import annotations

import time

from app.buffer import append_to_buffer, claim_batch
from tests.support.buffers import backdate, redis_now_ms

HOUR_S = 3600


def msg(wamid, text):
    return {"wamid": wamid, "text": text}


def test_a_wamid_is_accepted_once(redis_client):
    assert append_to_buffer(redis_client, "c1", "w1", msg("w1", "a")) == 1
    assert append_to_buffer(redis_client, "c1", "w1", msg("w1", "a")) == 0
    assert 0 < redis_client.ttl("app:seen:w1") <= 7 * 86400


def test_the_latest_check_takes_the_whole_buffer_in_arrival_order(redis_client):
    for i, text in enumerate(["one", "two", "three"], start=1):
        seq = append_to_buffer(redis_client, "c1", f"w{i}", msg(f"w{i}", text))
    assert claim_batch(redis_client, "c1", 1, max_wait_ms=15_000) is None
    batch = claim_batch(redis_client, "c1", seq, max_wait_ms=15_000)
    assert [m["text"] for m in batch.messages] == ["one", "two", "three"]
    assert redis_client.llen("app:buffer:c1") == 0


def test_a_check_that_runs_again_gets_the_same_batch(redis_client):
    seq = append_to_buffer(redis_client, "c1", "w1", msg("w1", "hi"))
    first = claim_batch(redis_client, "c1", seq, max_wait_ms=15_000)
    again = claim_batch(redis_client, "c1", seq, max_wait_ms=15_000)
    assert again == first


def test_a_customer_who_keeps_typing_is_answered_after_the_maximum_wait(redis_client):
    # Given two messages, the first of which came 14 s ago by Redis's clock
    append_to_buffer(redis_client, "c1", "w1", msg("w1", "a"))
    append_to_buffer(redis_client, "c1", "w2", msg("w2", "b"))
    backdate(redis_client, "c1", first_ago_ms=14_000, last_ago_ms=0)
    # Then the first message's check gives way to the second's before the 60 s maximum wait
    assert claim_batch(redis_client, "c1", 1, max_wait_ms=60_000) is None
    # But once the first message has waited the maximum, it takes the whole buffer
    batch = claim_batch(redis_client, "c1", 1, max_wait_ms=14_000)
    assert [m["wamid"] for m in batch.messages] == ["w1", "w2"]


def test_batches_of_different_content_have_different_ids(redis_client):
    seq = append_to_buffer(redis_client, "c1", "w1", msg("w1", "a"))
    one = claim_batch(redis_client, "c1", seq, max_wait_ms=15_000)
    seq = append_to_buffer(redis_client, "c1", "w2", msg("w2", "a"))
    two = claim_batch(redis_client, "c1", seq, max_wait_ms=15_000)
    assert one.batch_id != two.batch_id


def test_a_buffer_quiet_for_longer_than_window_and_margin_has_lost_its_check(redis_client):
    from app.buffer_sweep import LostCheck, find_lost_checks

    # Given a conversation quiet for 13 s, one whose last message came 2 s ago, and one claimed
    append_to_buffer(redis_client, "lost", "w1", msg("w1", "a"))
    append_to_buffer(redis_client, "lost", "w2", msg("w2", "b"))
    append_to_buffer(redis_client, "typing", "w3", msg("w3", "c"))
    append_to_buffer(redis_client, "typing", "w4", msg("w4", "d"))
    seq = append_to_buffer(redis_client, "done", "w5", msg("w5", "e"))
    claim_batch(redis_client, "done", seq, max_wait_ms=15_000)
    now_ms = backdate(redis_client, "lost", first_ago_ms=14_000, last_ago_ms=13_000)
    backdate(redis_client, "typing", first_ago_ms=14_000, last_ago_ms=2_000)

    # Then only the quiet one is found, at its current sequence number
    assert find_lost_checks(redis_client, now_ms=now_ms, quiet_ms=12_000) == [LostCheck("lost", 2)]
    assert find_lost_checks(redis_client, now_ms=now_ms - 1_500, quiet_ms=12_000) == []


def test_a_check_sent_for_a_lost_buffer_claims_it_and_a_duplicate_gets_the_same_batch(redis_client):
    from app.buffer_sweep import find_lost_checks, note_resent

    append_to_buffer(redis_client, "c1", "w1", msg("w1", "a"))
    now_ms = backdate(redis_client, "c1", first_ago_ms=60_000)
    [lost] = find_lost_checks(redis_client, now_ms=now_ms, quiet_ms=13_000)
    assert note_resent(redis_client, lost, resend_after_s=60)
    assert not note_resent(redis_client, lost, resend_after_s=60)

    batch = claim_batch(redis_client, "c1", lost.seq, max_wait_ms=15_000)
    again = claim_batch(redis_client, "c1", lost.seq, max_wait_ms=15_000)

    assert [m["wamid"] for m in batch.messages] == ["w1"] and again == batch
    assert find_lost_checks(redis_client, now_ms=now_ms + 30_000, quiet_ms=13_000) == []


def test_a_conversations_buffer_keys_expire_with_the_dedup_ttl(redis_client):
    from app.buffer import DEDUP_TTL_S

    # Given two messages, the first one answered
    seq = append_to_buffer(redis_client, "c1", "w1", msg("w1", "a"))
    assert claim_batch(redis_client, "c1", seq, max_wait_ms=15_000) is not None
    append_to_buffer(redis_client, "c1", "w2", msg("w2", "b"))

    # Then every key of the conversation expires, within the dedup TTL
    for key in ("app:buffer:c1", "app:seq:c1", "app:first:c1", "app:last:c1", "app:claimed:c1"):
        assert 0 < redis_client.ttl(key) <= DEDUP_TTL_S, key

    # And when they have expired, the conversation starts again at 1 and is answered
    redis_client.delete("app:buffer:c1", "app:seq:c1", "app:first:c1", "app:last:c1", "app:claimed:c1")
    seq = append_to_buffer(redis_client, "c1", "w3", msg("w3", "back again"))
    assert seq == 1
    batch = claim_batch(redis_client, "c1", seq, max_wait_ms=15_000)
    assert [m["wamid"] for m in batch.messages] == ["w3"]


def test_arrivals_are_stamped_by_redis_clock_not_the_hosts(redis_client, monkeypatch):
    # Given a web host whose clock is an hour ahead
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + HOUR_S)

    # When it accepts two messages
    before = redis_now_ms(redis_client)
    append_to_buffer(redis_client, "c1", "w1", msg("w1", "a"))
    append_to_buffer(redis_client, "c1", "w2", msg("w2", "b"))
    after = redis_now_ms(redis_client)

    # Then their arrival is Redis's time, whatever the host said
    for kind in ("first", "last"):
        assert before <= int(redis_client.get(f"app:{kind}:c1")) <= after, kind


def test_the_maximum_wait_is_judged_by_redis_clock_not_the_workers(redis_client, monkeypatch):
    real_time = time.time
    # Given a customer still typing, whose first message came 1 s ago by Redis's clock
    for i in (1, 2):
        append_to_buffer(redis_client, "typing", f"t{i}", msg(f"t{i}", "a"))
    backdate(redis_client, "typing", first_ago_ms=1_000, last_ago_ms=0)
    # And one whose first message came 20 s ago, past the 15 s maximum wait
    for i in (1, 2):
        append_to_buffer(redis_client, "waited", f"w{i}", msg(f"w{i}", "a"))
    backdate(redis_client, "waited", first_ago_ms=20_000, last_ago_ms=0)

    # When the worker's clock is an hour ahead, the stale check still gives way
    monkeypatch.setattr(time, "time", lambda: real_time() + HOUR_S)
    assert claim_batch(redis_client, "typing", 1, max_wait_ms=15_000) is None
    assert redis_client.llen("app:buffer:typing") == 2

    # And when it is an hour behind, the stale check still takes the buffer that waited
    monkeypatch.setattr(time, "time", lambda: real_time() - HOUR_S)
    batch = claim_batch(redis_client, "waited", 1, max_wait_ms=15_000)
    assert batch is not None and [m["wamid"] for m in batch.messages] == ["w1", "w2"]
