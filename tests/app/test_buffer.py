"""The conversation buffer in Redis: dedup, order, quiet window, maximum wait."""

from __future__ import annotations

from app.buffer import append_to_buffer, claim_batch


def msg(wamid, text):
    return {"wamid": wamid, "text": text}


def test_a_wamid_is_accepted_once(redis_client):
    assert append_to_buffer(redis_client, "c1", "w1", msg("w1", "a"), now_ms=0) == 1
    assert append_to_buffer(redis_client, "c1", "w1", msg("w1", "a"), now_ms=5) == 0
    assert 0 < redis_client.ttl("app:seen:w1") <= 7 * 86400


def test_the_latest_check_takes_the_whole_buffer_in_arrival_order(redis_client):
    for i, text in enumerate(["one", "two", "three"], start=1):
        seq = append_to_buffer(redis_client, "c1", f"w{i}", msg(f"w{i}", text), now_ms=i)
    assert claim_batch(redis_client, "c1", 1, now_ms=10, max_wait_ms=15_000) is None
    batch = claim_batch(redis_client, "c1", seq, now_ms=10, max_wait_ms=15_000)
    assert [m["text"] for m in batch.messages] == ["one", "two", "three"]
    assert redis_client.llen("app:buffer:c1") == 0


def test_a_check_that_runs_again_gets_the_same_batch(redis_client):
    seq = append_to_buffer(redis_client, "c1", "w1", msg("w1", "hi"), now_ms=0)
    first = claim_batch(redis_client, "c1", seq, now_ms=1, max_wait_ms=15_000)
    again = claim_batch(redis_client, "c1", seq, now_ms=2, max_wait_ms=15_000)
    assert again == first


def test_a_customer_who_keeps_typing_is_answered_after_the_maximum_wait(redis_client):
    append_to_buffer(redis_client, "c1", "w1", msg("w1", "a"), now_ms=0)
    append_to_buffer(redis_client, "c1", "w2", msg("w2", "b"), now_ms=14_000)
    assert claim_batch(redis_client, "c1", 1, now_ms=14_999, max_wait_ms=15_000) is None
    batch = claim_batch(redis_client, "c1", 1, now_ms=15_000, max_wait_ms=15_000)
    assert [m["wamid"] for m in batch.messages] == ["w1", "w2"]


def test_batches_of_different_content_have_different_ids(redis_client):
    seq = append_to_buffer(redis_client, "c1", "w1", msg("w1", "a"), now_ms=0)
    one = claim_batch(redis_client, "c1", seq, now_ms=1, max_wait_ms=15_000)
    seq = append_to_buffer(redis_client, "c1", "w2", msg("w2", "a"), now_ms=2)
    two = claim_batch(redis_client, "c1", seq, now_ms=3, max_wait_ms=15_000)
    assert one.batch_id != two.batch_id


def test_a_buffer_quiet_for_longer_than_window_and_margin_has_lost_its_check(redis_client):
    from app.buffer_sweep import LostCheck, find_lost_checks

    # Given a conversation that went quiet long ago, one still typing, and one claimed
    append_to_buffer(redis_client, "lost", "w1", msg("w1", "a"), now_ms=0)
    append_to_buffer(redis_client, "lost", "w2", msg("w2", "b"), now_ms=1_000)
    append_to_buffer(redis_client, "typing", "w3", msg("w3", "c"), now_ms=0)
    append_to_buffer(redis_client, "typing", "w4", msg("w4", "d"), now_ms=12_000)
    seq = append_to_buffer(redis_client, "done", "w5", msg("w5", "e"), now_ms=0)
    claim_batch(redis_client, "done", seq, now_ms=3_000, max_wait_ms=15_000)

    # Then only the quiet one is found, at its current sequence number
    assert find_lost_checks(redis_client, now_ms=14_000, quiet_ms=12_000) == [LostCheck("lost", 2)]
    assert find_lost_checks(redis_client, now_ms=12_500, quiet_ms=12_000) == []


def test_a_check_sent_for_a_lost_buffer_claims_it_and_a_duplicate_gets_the_same_batch(redis_client):
    from app.buffer_sweep import find_lost_checks, note_resent

    append_to_buffer(redis_client, "c1", "w1", msg("w1", "a"), now_ms=0)
    [lost] = find_lost_checks(redis_client, now_ms=60_000, quiet_ms=13_000)
    assert note_resent(redis_client, lost, resend_after_s=60)
    assert not note_resent(redis_client, lost, resend_after_s=60)

    batch = claim_batch(redis_client, "c1", lost.seq, now_ms=60_001, max_wait_ms=15_000)
    again = claim_batch(redis_client, "c1", lost.seq, now_ms=60_002, max_wait_ms=15_000)

    assert [m["wamid"] for m in batch.messages] == ["w1"] and again == batch
    assert find_lost_checks(redis_client, now_ms=90_000, quiet_ms=13_000) == []


def test_a_conversations_buffer_keys_expire_with_the_dedup_ttl(redis_client):
    from app.buffer import DEDUP_TTL_S

    # Given two messages, the first one answered
    seq = append_to_buffer(redis_client, "c1", "w1", msg("w1", "a"), now_ms=0)
    assert claim_batch(redis_client, "c1", seq, now_ms=1, max_wait_ms=15_000) is not None
    append_to_buffer(redis_client, "c1", "w2", msg("w2", "b"), now_ms=2)

    # Then every key of the conversation expires, within the dedup TTL
    for key in ("app:buffer:c1", "app:seq:c1", "app:first:c1", "app:last:c1", "app:claimed:c1"):
        assert 0 < redis_client.ttl(key) <= DEDUP_TTL_S, key

    # And when they have expired, the conversation starts again at 1 and is answered
    redis_client.delete("app:buffer:c1", "app:seq:c1", "app:first:c1", "app:last:c1", "app:claimed:c1")
    seq = append_to_buffer(redis_client, "c1", "w3", msg("w3", "back again"), now_ms=10)
    assert seq == 1
    batch = claim_batch(redis_client, "c1", seq, now_ms=11, max_wait_ms=15_000)
    assert [m["wamid"] for m in batch.messages] == ["w3"]
