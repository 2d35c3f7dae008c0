"""A worker that claims again a chunk whose lease it lost: the two leases must not be confused.

The sequence behind a rare failure of test_redis_faults (Redis SIGKILLed mid-run and restarted
from its AOF; some recipients received twice with no event flagged possible_duplicate):

1. worker w1 claims chunk C (q -> f) and delivers its recipients while Redis is down; the
   outcomes wait in its reporter;
2. Redis is back after more than a lease: a reaper takes C back (f -> Q) before w1's heartbeat
   renews it, and w1 itself claims C again (Q -> F, flagged: it will send them again);
3. w1's report of the first lease arrives. The compare-and-set was on the worker token, which
   both leases share, and on the state, which is F: the first lease's unflagged deliveries were
   applied, and the second lease's flagged ones were refused (already final) when they came.

Now the owner value names the lease (claim.lua), and the reporter keeps its leases apart.
"""

from __future__ import annotations

from collections.abc import Callable

from engine.codec import StoredRecipient
from engine.config import QueueConfig
from engine.outcome import Outcome
from engine.queue.audit import audit_job
from engine.queue.store import ChunkReport, ClaimedChunk, QueueStore
from tests.support.builders import build, people
from tests.support.stores import open_store
from workers.reporter import Reporter
from workers.work import Held

CONFIG = QueueConfig(chunk_size=4, lease=15.0)


def delivered(rec: StoredRecipient, duplicate: bool = False) -> Outcome:
    return Outcome(rec.index, rec.to, "delivered", 250, "2.0.0", "ok", "mx.test", possible_duplicate=duplicate)


async def reclaimed(store: QueueStore, advance: Callable[[float], None]) -> tuple[str, ClaimedChunk, ClaimedChunk]:
    spec, rcpts = build(people(4))
    job = (await store.submit(spec, rcpts)).job_id
    (first,) = await store.claim("w1")
    advance(16)  # Redis was down past the lease
    assert await store.reap() == 1
    (again,) = await store.claim("w1")
    assert again.key == first.key and again.lease != first.lease
    assert again.duplicates == {r.index for r in first.records}
    return job, first, again


async def assert_flagged_once(store: QueueStore, job: str) -> None:
    events = await store.events(job)
    assert len(events) == 4 and all(e["possible_duplicate"] for e in events), events
    report = await audit_job(store, job)
    assert report.ok and report.counters["delivered"] == 4, report


async def test_the_lost_lease_of_a_chunk_claimed_again_by_its_worker_is_stale(redis_url: str) -> None:
    async with open_store(redis_url, CONFIG) as (store, clock):
        job, first, again = await reclaimed(store, clock.advance)
        late = ChunkReport(first, [delivered(r) for r in first.records], done=True)
        assert await store.report([late]) == (0, [first.key])
        assert await store.heartbeat("w1", [first, again]) == [first.key]
        assert await store.release([first]) == 0
        assert await store.quarantine(first, "test") == -1
        assert await store.state_bytes(job) == b"FFFF"
        sent_again = [delivered(r, duplicate=True) for r in again.records]
        assert await store.report([ChunkReport(again, sent_again, done=True)]) == (4, [])
        await assert_flagged_once(store, job)


async def test_the_reporter_drops_the_lost_lease_when_its_chunk_is_claimed_again(redis_url: str) -> None:
    async with open_store(redis_url, CONFIG) as (store, clock):
        reporter = Reporter(store, CONFIG, clock, lambda _: None)
        spec, rcpts = build(people(4))
        job = (await store.submit(spec, rcpts)).job_id
        (first,) = await store.claim("w1")
        old = Held(first, remaining=4)
        reporter.hold(old)
        for rec in first.records[:3]:  # delivered while Redis was down: not reported yet
            reporter.add(old, delivered(rec))
        clock.advance(16)
        assert await store.reap() == 1
        (again,) = await store.claim("w1")
        new = Held(again, remaining=4)
        reporter.hold(new)
        assert old.lost and reporter.held == {again.key: new} and reporter.unreported == 0
        reporter.add(old, delivered(first.records[3]))  # its last transaction ends: dropped
        for rec in again.records:
            reporter.add(new, delivered(rec, duplicate=True))
        assert await reporter.flush()
        assert reporter.held == {} and reporter.unreported == 0
        await assert_flagged_once(store, job)


async def test_a_report_of_the_lost_lease_on_its_way_during_the_new_claim_spares_the_new_lease(
    redis_url: str,
) -> None:
    """The claim reaches Redis before a report the reporter sent for the lost lease: the report is
    stale, and forgetting the lost lease must not forget the new one under the same key."""
    async with open_store(redis_url, CONFIG) as (store, clock):
        held: list[Held] = []

        class ClaimFirst:
            async def report(self, reports: list[ChunkReport]) -> tuple[int, list[str]]:
                clock.advance(16)
                assert await store.reap() == 1
                (again,) = await store.claim("w1")
                held.append(Held(again, remaining=4))
                reporter.hold(held[0])
                return await store.report(reports)

        reporter = Reporter(ClaimFirst(), CONFIG, clock, lambda _: None)  # type: ignore[arg-type]
        spec, rcpts = build(people(4))
        job = (await store.submit(spec, rcpts)).job_id
        (first,) = await store.claim("w1")
        old = Held(first, remaining=4)
        reporter.hold(old)
        for rec in first.records:
            reporter.add(old, delivered(rec))
        assert await reporter.flush()
        (new,) = held
        assert old.lost and not new.lost and reporter.held == {first.key: new}
        assert reporter.unreported == 0 and await store.state_bytes(job) == b"FFFF"
        reporter.store = store
        for rec in new.claimed.records:
            reporter.add(new, delivered(rec, duplicate=True))
        assert await reporter.flush()
        assert reporter.held == {} and reporter.unreported == 0
        await assert_flagged_once(store, job)
