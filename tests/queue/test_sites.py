"""The shaping-bucket scripts (site_connect, site_feedback, site_tokens) against a real redis-server.

Every worker on every host asks these scripts for connection slots and rate
tokens, so each rule is checked here with a ManualClock: slots up to the
adaptive limit, slot leases that lapse, new connections per minute, pause and
'down' marks, additive increase / multiplicative decrease with its cooldown,
and the 'wanted' mark that makes idle connections give their slots back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis

from engine.config import AdaptiveConfig, Limits
from engine.queue.keys import Keys
from engine.queue.sites import SLOT_TTL, SitesStore
from tests.support.clock import ManualClock

BUCKET = "mx.example.test"


@asynccontextmanager
async def open_sites(url: str) -> AsyncIterator[tuple[SitesStore, ManualClock]]:
    redis = Redis.from_url(url)
    clock = ManualClock()
    await redis.flushdb()
    try:
        yield SitesStore(redis, Keys(), clock, AdaptiveConfig(cooldown=10.0)), clock
    finally:
        await redis.aclose()


async def test_slots_up_to_the_limit_then_refused_until_one_is_released(redis_url: str) -> None:
    limits = Limits(max_connections=3, initial_connections=2)
    async with open_sites(redis_url) as (sites, _):
        assert (await sites.connect(BUCKET, limits, "w1#0"))[0]
        assert (await sites.connect(BUCKET, limits, "w1#1"))[0]
        granted, wait, reason = await sites.connect(BUCKET, limits, "w2#0")
        assert not granted and wait > 0 and reason == "connection limit 2"
        # a transactional worker may go beyond the limit by its reserve
        assert (await sites.connect(BUCKET, limits, "tx#0", reserve=1))[0]
        await sites.release(BUCKET, "w1#0")
        assert not (await sites.connect(BUCKET, limits, "w2#0"))[0]  # the transactional slot counts
        await sites.release(BUCKET, "tx#0")
        assert (await sites.connect(BUCKET, limits, "w2#0"))[0]


async def test_a_slot_not_renewed_lapses_and_a_renewed_one_stays(redis_url: str) -> None:
    limits = Limits(max_connections=1, initial_connections=1)
    async with open_sites(redis_url) as (sites, clock):
        assert (await sites.connect(BUCKET, limits, "w1#0"))[0]
        clock.advance(SLOT_TTL / 2)
        await sites.renew([(BUCKET, "w1#0")])
        clock.advance(SLOT_TTL / 2 + 1)
        assert not (await sites.connect(BUCKET, limits, "w2#0"))[0]  # renewed: still held
        clock.advance(SLOT_TTL)  # its worker died: nobody renews it
        assert (await sites.connect(BUCKET, limits, "w2#0"))[0]


async def test_new_connections_per_minute(redis_url: str) -> None:
    limits = Limits(max_connections=10, initial_connections=10, max_new_connections_per_minute=2)
    async with open_sites(redis_url) as (sites, clock):
        assert (await sites.connect(BUCKET, limits, "w1#0"))[0]
        clock.advance(1)
        assert (await sites.connect(BUCKET, limits, "w1#1"))[0]
        granted, wait, reason = await sites.connect(BUCKET, limits, "w1#2")
        assert not granted and reason == "new connections per minute" and 58 <= wait <= 60
        clock.advance(wait)
        assert (await sites.connect(BUCKET, limits, "w1#2"))[0]


async def test_paused_and_down_buckets_refuse_slots(redis_url: str) -> None:
    limits = Limits()
    async with open_sites(redis_url) as (sites, clock):
        assert (await sites.connect(BUCKET, limits, "w1#0"))[0]
        assert await sites.set_paused(BUCKET, True)
        assert (await sites.connect(BUCKET, limits, "w1#1"))[2] == "paused"
        state = await sites.feedback(BUCKET, limits, 0, "", "w1", 5)
        assert state.paused
        await sites.set_paused(BUCKET, False)
        await sites.mark_down(BUCKET, clock.wall() + 30, "every MX refused")
        granted, wait, reason = await sites.connect(BUCKET, limits, "w1#1")
        assert (granted, reason) == (False, "down") and 29 <= wait <= 30
        assert await sites.retry_now(BUCKET) == 0
        assert (await sites.connect(BUCKET, limits, "w1#1"))[0]
        assert not await sites.set_paused("never.seen.test", True)


async def test_slow_down_halves_once_per_cooldown_and_successes_add_back(redis_url: str) -> None:
    limits = Limits(max_connections=8, initial_connections=8)
    async with open_sites(redis_url) as (sites, clock):
        state = await sites.feedback(BUCKET, limits, 0, "421 4.7.0 too many connections", "w1", 0)
        assert (state.connections, state.rate_factor) == (4, 0.5)
        state = await sites.feedback(BUCKET, limits, 0, "421 again, same burst", "w2", 0)
        assert state.connections == 4  # within the cooldown: one burst counts once
        clock.advance(11)
        state = await sites.feedback(BUCKET, limits, 0, "421 later", "w1", 0)
        assert (state.connections, state.rate_factor) == (2, 0.25)
        state = await sites.feedback(BUCKET, limits, 1, "", "w1", 0)
        assert state.connections == 2  # one more connection per <limit> deliveries
        state = await sites.feedback(BUCKET, limits, 1, "", "w1", 0)
        assert (state.connections, state.rate_factor) == (3, 0.35)
        changes = await sites.changes(BUCKET)
        assert [c["change"] for c in changes] == ["decrease", "decrease", "increase"]
        assert changes[0]["reason"] == "421 4.7.0 too many connections"
        row = (await sites.describe())[0]
        assert row["site"] == BUCKET and row["connections_limit"] == 3
        assert row["last_reason"] == "421 later"


async def test_a_refusal_at_the_limit_is_seen_by_the_other_workers_only(redis_url: str) -> None:
    limits = Limits(max_connections=1, initial_connections=1)
    async with open_sites(redis_url) as (sites, clock):
        assert (await sites.connect(BUCKET, limits, "w1#0"))[0]
        assert (await sites.feedback(BUCKET, limits, 0, "", "w1", 0)).wanted == 0
        clock.advance(2)
        assert not (await sites.connect(BUCKET, limits, "w2#0"))[0]
        assert (await sites.feedback(BUCKET, limits, 0, "", "w1", 0)).wanted == clock.wall()
        # the worker that was refused does not read its own wish as another's
        assert (await sites.feedback(BUCKET, limits, 0, "", "w2", 3)).wanted == 0


async def test_rate_tokens_refill_with_time(redis_url: str) -> None:
    limits = Limits(messages_per_second=10)
    async with open_sites(redis_url) as (sites, clock):
        assert await sites.tokens(BUCKET, limits, 20) == (10, 0.0)
        granted, wait = await sites.tokens(BUCKET, limits, 5)
        assert granted == 0 and 0 < wait <= 0.1
        clock.advance(0.5)
        assert (await sites.tokens(BUCKET, limits, 20))[0] == 5
