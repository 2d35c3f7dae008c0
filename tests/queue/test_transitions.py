"""Each Lua transition against a real redis-server, with the invariant audited after every step.

Time is a ManualClock: leases expire and retries fall due because the test
moves the clock, never because it waits.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

import pytest
from redis.exceptions import ResponseError

from engine.codec import StoredRecipient
from engine.config import QueueConfig
from engine.outcome import Outcome
from engine.queue.audit import audit_job
from engine.queue.store import ChunkReport, QueueStore, RetryGroup
from tests.support.builders import build, people
from tests.support.clock import ManualClock
from tests.support.stores import open_store as open_real_store


def open_store(url: str, **queue: object) -> AbstractAsyncContextManager[tuple[QueueStore, ManualClock]]:
    settings: dict[str, object] = {"chunk_size": 4, "submit_block": 10, "lease": 15.0, "max_claims": 3} | queue
    return open_real_store(url, QueueConfig(**settings))  # type: ignore[arg-type]


async def assert_audit(store: QueueStore, job: str) -> dict[str, int]:
    report = await audit_job(store, job)
    assert report.ok, report.problems
    return report.counters


def delivered(rec: StoredRecipient, status: str = "delivered") -> Outcome:
    return Outcome(rec.index, rec.to, status, 250 if status == "delivered" else 550, "2.0.0", "ok", "mx.test")


async def test_submit_stores_chunks_sorted_by_domain_and_counts(redis_url: str) -> None:
    async with open_store(redis_url) as (store, _):
        spec, rcpts = build(people(25, domains=3))
        result = await store.submit(spec, rcpts)
        assert result.created and result.total == 25
        counts = await assert_audit(store, result.job_id)
        assert counts["queued"] == 25
        status = await store.status(result.job_id)
        assert status is not None and status["done"] is False and status["state"] == "active"
        chunks = await store.claim("w1", max_chunks=100)
        assert sum(len(c.records) for c in chunks) == 25
        # blocks of 10 are sorted by domain, so most chunks hold one domain
        assert {r.index for c in chunks for r in c.records} == set(range(25))
        single = sum(1 for c in chunks if len({r.domain for r in c.records}) == 1)
        assert single >= len(chunks) // 2


async def test_same_job_id_twice_is_a_no_op(redis_url: str) -> None:
    async with open_store(redis_url) as (store, _):
        spec, rcpts = build(people(5), id="newsletter-1")
        first = await store.submit(spec, rcpts)
        spec2, rcpts2 = build(people(9), id="newsletter-1")
        second = await store.submit(spec2, rcpts2)
        assert first.created and not second.created
        assert second.job_id == "newsletter-1" and second.total == 5
        await assert_audit(store, "newsletter-1")


# 30: a small job (one pipelined round trip); 60: a large one, dying after some chunks were stored
@pytest.mark.parametrize(("count", "dies_at"), [(30, 25), (60, 50)])
async def test_submitter_dying_mid_job_leaves_nothing_accepted(redis_url: str, count: int, dies_at: int) -> None:
    async with open_store(redis_url) as (store, _):
        spec, rcpts = build(people(count), id="half")

        def dying():  # type: ignore[no-untyped-def]
            for i, r in enumerate(rcpts):
                if i == dies_at:
                    raise RuntimeError("submitter crashed")
                yield r

        with pytest.raises(RuntimeError):
            await store.submit(spec, dying())
        assert await store.status("half") is None
        assert await store.claim("w1") == []
        # a retry of the same submission works from scratch
        result = await store.submit(spec, rcpts)
        assert result.created and result.total == count


@pytest.mark.parametrize("count", [1, 32, 33, 90])  # chunk_size 4: up to 32 go in one pipelined round trip
async def test_small_jobs_in_one_round_trip_and_large_ones_in_steps_store_the_same(redis_url: str, count: int) -> None:
    async with open_store(redis_url) as (store, _):
        spec, rcpts = build(people(count), id=f"n{count}")
        result = await store.submit(spec, rcpts)
        assert result.created and result.total == count
        assert (await assert_audit(store, f"n{count}"))["queued"] == count
        again = await store.submit(spec, rcpts)
        assert not again.created and again.total == count
        claimed = []
        while chunks := await store.claim("w1", 100):
            claimed += [r.to for c in chunks for r in c.records]
        assert sorted(claimed) == sorted(r.to for r in rcpts)


async def test_commit_refuses_a_job_whose_chunks_were_not_all_stored(redis_url: str) -> None:
    async with open_store(redis_url) as (store, _):
        k = store.keys
        keys = [k.job("gap"), k.states("gap"), k.chunks("gap"), k.ready("gap"), k.events("gap")]
        await store.scripts.call("submit_begin", keys, ["tok", 1, "priority", "bulk"])
        # the pipelined submit's chunks were refused (OOM, ACL): its commit must not accept the job
        with pytest.raises(ResponseError, match="INCOMPLETE"):
            await store.scripts.call("submit_commit", [k.job("gap"), k.ready("gap"), k.jobs], [k.ns, "tok", "gap", 1, 5])
        assert await store.redis.hget(k.job("gap"), "state") == b"loading"
        assert await store.claim("w1") == []


async def test_loading_job_left_by_a_dead_submitter_is_replaced(redis_url: str) -> None:
    async with open_store(redis_url) as (store, _):
        spec, rcpts = build(people(12), id="stuck")
        k = store.keys
        # crash between submit_begin and submit_commit: a job in 'loading' state
        await store.scripts.call(
            "submit_begin", [k.job("stuck"), k.states("stuck"), k.chunks("stuck"), k.ready("stuck"), k.events("stuck")],
            ["deadbeef", 1, "priority", "bulk"],
        )
        assert await store.claim("w1") == []
        result = await store.submit(spec, rcpts)
        assert result.created and result.total == 12
        await assert_audit(store, "stuck")


async def test_claim_report_delivers_and_finishes(redis_url: str) -> None:
    async with open_store(redis_url) as (store, _):
        spec, rcpts = build(people(8))
        job = (await store.submit(spec, rcpts)).job_id
        chunks = await store.claim("w1", max_chunks=10)
        assert len(chunks) == 2
        counts = await assert_audit(store, job)
        assert counts["in_flight"] == 8 and counts["queued"] == 0
        reports = [
            ChunkReport(c, [delivered(r) for r in c.records], done=True) for c in chunks
        ]
        applied, stale = await store.report(reports)
        assert applied == 8 and stale == []
        counts = await assert_audit(store, job)
        assert counts["delivered"] == 8
        status = await store.status(job)
        assert status is not None and status["done"] is True
        events = await store.events(job)
        assert len(events) == 8 and {e["status"] for e in events} == {"delivered"}
        assert events[0]["code"] == 250 and events[0]["mx"] == "mx.test" and events[0]["attempt"] == 1
        # the chunks and leases are gone
        assert await store.redis.zcard(store.keys.lease) == 0
        assert await store.redis.hlen(store.keys.chunks(job)) == 0


async def test_replayed_report_changes_nothing(redis_url: str) -> None:
    async with open_store(redis_url) as (store, _):
        spec, rcpts = build(people(4))
        job = (await store.submit(spec, rcpts)).job_id
        (chunk,) = await store.claim("w1")
        report = ChunkReport(chunk, [delivered(r) for r in chunk.records], done=False)
        assert (await store.report([report]))[0] == 4
        assert (await store.report([report]))[0] == 0  # response lost, report sent again
        assert len(await store.events(job)) == 4
        await assert_audit(store, job)


async def test_replayed_report_with_deferred_recipients_makes_one_retry_chunk(redis_url: str) -> None:
    # redis-py sends a report again when the connection drops after Redis applied it: the
    # deferred recipients must not get a second retry chunk (they would be sent twice)
    async with open_store(redis_url) as (store, clock):
        spec, rcpts = build(people(4))
        job = (await store.submit(spec, rcpts)).job_id
        (chunk,) = await store.claim("w1")
        a, b = chunk.records[:2]
        outcomes = [delivered(a), Outcome(b.index, b.to, "deferred", 451, "4.3.0", "try later", "mx.test")]
        groups = [RetryGroup("mx.test", [StoredRecipient(b.index, b.to, b.vars, 1)], clock.wall() + 60)]
        report = ChunkReport(chunk, outcomes, done=False, retry=groups)
        assert (await store.report([report]))[0] == 2
        assert (await store.report([report]))[0] == 0
        assert await store.redis.zcard(store.keys.retry) == 1
        assert len(await store.events(job)) == 2
        clock.advance(61)
        assert (await store.promote())[0] == 1
        claimed = [r.index for c in await store.claim("w1", 10) for r in c.records]
        assert claimed.count(b.index) == 1
        await assert_audit(store, job)


async def test_deferred_recipients_get_a_retry_chunk_promoted_when_due(redis_url: str) -> None:
    async with open_store(redis_url) as (store, clock):
        spec, rcpts = build(people(4))
        job = (await store.submit(spec, rcpts)).job_id
        (chunk,) = await store.claim("w1")
        a, b, c, d = chunk.records
        outcomes = [delivered(a), Outcome(b.index, b.to, "deferred", 451, "4.3.0", "try later", "mx.test")]
        outcomes += [Outcome(c.index, c.to, "deferred", 421, "4.7.0", "slow down", "mx.test"), delivered(d, "bounced")]
        retry = [StoredRecipient(r.index, r.to, r.vars, r.attempts + 1) for r in (b, c)]
        groups = [RetryGroup("mx.test", retry, clock.wall() + 300)]
        report = ChunkReport(chunk, outcomes, done=True, retry=groups)
        await store.report([report])
        counts = await assert_audit(store, job)
        assert (counts["delivered"], counts["bounced"], counts["deferred"]) == (1, 1, 2)
        status = await store.status(job)
        assert status is not None and status["done"] is False
        assert await store.promote() == (0, pytest.approx(clock.wall() + 300, abs=0.01))
        assert await store.claim("w1") == []
        clock.advance(301)
        assert (await store.promote())[0] == 1
        assert (await assert_audit(store, job))["queued"] == 2
        (again,) = await store.claim("w1")
        assert [r.index for r in again.records] == [b.index, c.index]
        assert all(r.attempts == 1 for r in again.records)


async def test_lost_lease_is_reaped_and_flagged_as_possible_duplicate(redis_url: str) -> None:
    async with open_store(redis_url) as (store, clock):
        spec, rcpts = build(people(4))
        job = (await store.submit(spec, rcpts)).job_id
        (chunk,) = await store.claim("dead-worker")
        # the worker reported one recipient, then died
        first = chunk.records[0]
        await store.report([ChunkReport(chunk, [delivered(first)])])
        assert await store.reap() == 0  # lease still valid
        clock.advance(16)
        assert await store.reap() == 1
        counts = await assert_audit(store, job)
        assert counts["queued"] == 3 and counts["delivered"] == 1
        (again,) = await store.claim("w2")
        assert [r.index for r in again.records] == [r.index for r in chunk.records[1:]]
        assert again.duplicates == {r.index for r in chunk.records[1:]}
        # the dead worker comes back (SIGCONT) and reports: refused, the new owner's result stands
        late = ChunkReport(chunk, [Outcome(r.index, r.to, "bounced", 550) for r in chunk.records[1:]])
        applied, stale = await store.report([late])
        assert applied == 0 and stale == [again.key]
        await store.report([ChunkReport(again, [delivered(r) for r in again.records], done=True)])
        counts = await assert_audit(store, job)
        assert counts["delivered"] == 4


async def test_heartbeat_keeps_the_lease_and_reports_lost_ones(redis_url: str) -> None:
    async with open_store(redis_url) as (store, clock):
        spec, rcpts = build(people(8))
        await store.submit(spec, rcpts)
        c1, c2 = await store.claim("w1", max_chunks=2)
        clock.advance(10)
        assert await store.heartbeat("w1", [c1, c2]) == []
        clock.advance(10)  # 20 s after the claim, 10 s after the heartbeat
        assert await store.reap() == 0
        clock.advance(6)
        assert await store.reap() == 2
        await store.claim("w2", max_chunks=2)
        assert sorted(await store.heartbeat("w1", [c1, c2])) == sorted([c1.key, c2.key])


async def test_release_hands_back_unstarted_work_without_counting_a_claim(redis_url: str) -> None:
    async with open_store(redis_url) as (store, _):
        spec, rcpts = build(people(4))
        job = (await store.submit(spec, rcpts)).job_id
        for _ in range(5):  # more than max_claims: releases are not failures
            (chunk,) = await store.claim("w1")
            assert await store.release([chunk]) == 4
            assert (await assert_audit(store, job))["queued"] == 4
        (chunk,) = await store.claim("w1")
        assert chunk.duplicates == frozenset()


async def test_chunk_that_keeps_killing_workers_is_quarantined(redis_url: str) -> None:
    async with open_store(redis_url) as (store, clock):
        spec, rcpts = build(people(4), id="poison")
        spec_ok, rcpts_ok = build(people(4), id="fine")
        await store.submit(spec, rcpts)
        for _ in range(3):
            (chunk,) = await store.claim("w")
            clock.advance(16)
            await store.reap()
        await store.submit(spec_ok, rcpts_ok)
        chunks = await store.claim("w", max_chunks=5)
        assert [c.job_id for c in chunks] == ["fine"]
        reason = await store.redis.hget(store.keys.quarantine, "poison:1")
        assert reason is not None and b"leased 3 times" in reason
        await assert_audit(store, "poison")


async def test_transactional_lane_first_and_bulk_jobs_share_fairly(redis_url: str) -> None:
    async with open_store(redis_url) as (store, _):
        big_spec, big = build(people(40), id="big")
        small_spec, small = build(people(8), id="small")
        tx_spec, tx = build(people(1), id="reset", priority="transactional")
        await store.submit(big_spec, big)
        await store.submit(small_spec, small)
        await store.submit(tx_spec, tx)
        chunks = await store.claim("w", max_chunks=5)
        assert [c.job_id for c in chunks] == ["reset", "big", "small", "big", "small"]


async def test_paused_job_is_not_claimed_until_resumed(redis_url: str) -> None:
    async with open_store(redis_url) as (store, _):
        spec, rcpts = build(people(4), id="p")
        await store.submit(spec, rcpts)
        await store.redis.hset(store.keys.job("p"), "state", "paused")
        assert await store.claim("w") == []
        await store.redis.hset(store.keys.job("p"), "state", "active")
        await store.redis.rpush(store.keys.lane("bulk"), "p")
        assert len(await store.claim("w")) == 1


async def test_done_is_refused_while_recipients_are_still_in_flight(redis_url: str) -> None:
    async with open_store(redis_url) as (store, clock):
        spec, rcpts = build(people(4))
        job = (await store.submit(spec, rcpts)).job_id
        (chunk,) = await store.claim("w1")
        # a buggy worker says 'done' after reporting only two recipients
        two = [delivered(r) for r in chunk.records[:2]]
        await store.report([ChunkReport(chunk, two, done=True)])
        assert await store.redis.zcard(store.keys.lease) == 1  # the chunk is kept
        clock.advance(16)
        assert await store.reap() == 1
        (again,) = await store.claim("w2")
        assert len(again.records) == 2
        await assert_audit(store, job)


async def test_a_retry_chunk_between_recipients_of_another_lease_leaves_their_states_alone(redis_url: str) -> None:
    """claim and report read and write a chunk's states as one window: a retry chunk holding
    every other index must not write back stale states of the recipients in between."""
    async with open_store(redis_url, chunk_size=6) as (store, clock):
        spec, rcpts = build(people(6, domains=1))
        job = (await store.submit(spec, rcpts)).job_id
        (chunk,) = await store.claim("w1")
        evens, odds = chunk.records[0::2], chunk.records[1::2]
        deferred = [Outcome(r.index, r.to, "deferred", 451, "4.3.0", "later", "mx.test") for r in evens]
        retry = [RetryGroup("mx.test", [StoredRecipient(r.index, r.to, r.vars, 1) for r in evens], clock.wall() + 1)]
        await store.report([ChunkReport(chunk, deferred, done=False, retry=retry)])
        clock.advance(2)
        assert (await store.promote())[0] == 1
        (again,) = await store.claim("w2")  # the odd ones are still in flight under w1's lease
        assert [r.index for r in again.records] == [r.index for r in evens]
        await store.report([ChunkReport(again, [delivered(r) for r in again.records], done=True)])
        states = await store.redis.get(store.keys.states(job))
        assert states == b"DfDfDf"
        await store.report([ChunkReport(chunk, [delivered(r, "bounced") for r in odds], done=True)])
        assert await store.redis.get(store.keys.states(job)) == b"DbDbDb"
        counts = await assert_audit(store, job)
        assert (counts["delivered"], counts["bounced"], counts["in_flight"]) == (3, 3, 0)
        status = await store.status(job)
        assert status is not None and status["done"] is True
