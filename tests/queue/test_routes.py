"""route_claim and publishing of shared MX routes, against a real redis-server.

One worker at a time may look a domain up (its claim lapses if it dies); the others
wait for its answer; an answer lives as long as its DNS TTL; a corrupt answer is
looked up again instead of breaking the worker.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis

from engine.errors import DnsPermanent, DnsTemporary
from engine.mx import MxHost, Route
from engine.queue.keys import Keys
from engine.queue.routes import MINE, WAIT, Published, RouteStore
from tests.support.waiting import async_wait_until

ROUTE = Route("a.test", (MxHost("mx1.a.test", 10, ("192.0.2.1",)), MxHost("mx2.a.test", 20, ("192.0.2.2", "2001:db8::2"))),
              implicit=False, site="mx1.a.test,mx2.a.test", expires=0.0)  # fmt: skip


@asynccontextmanager
async def open_routes(url: str) -> AsyncIterator[tuple[RouteStore, Redis]]:
    redis = Redis.from_url(url)
    try:
        yield RouteStore(redis, Keys(f"rt{secrets.token_hex(4)}")), redis
    finally:
        await redis.aclose()


async def test_one_worker_claims_the_others_wait_then_read_its_answer(redis_url: str) -> None:
    async with open_routes(redis_url) as (store, _):
        assert await store.claim(["a.test", "b.test"], "w1", 10) == {"a.test": MINE, "b.test": MINE}
        assert await store.claim(["a.test", "b.test"], "w2", 10) == {"a.test": WAIT, "b.test": WAIT}
        assert await store.claim(["a.test"], "w1", 10) == {"a.test": MINE}  # its own claim again
        await store.publish([("a.test", ROUTE, 300.0)])
        claims = await store.claim(["a.test", "b.test"], "w2", 10)
        assert claims["b.test"] == WAIT
        published = claims["a.test"]
        assert isinstance(published, Published) and 299 < published.ttl <= 300
        assert published.outcome == ROUTE


async def test_failures_are_shared_with_their_kind_and_code(redis_url: str) -> None:
    async with open_routes(redis_url) as (store, _):
        await store.claim(["gone.test", "sf.test"], "w1", 10)
        await store.publish([
            ("gone.test", DnsPermanent("gone.test: no such domain (NXDOMAIN)", enhanced="5.1.2"), 60.0),
            ("sf.test", DnsTemporary("sf.test: MX lookup failed: SERVFAIL", enhanced="4.4.3"), 30.0),
        ])  # fmt: skip
        claims = await store.claim(["gone.test", "sf.test"], "w2", 10)
        gone, servfail = claims["gone.test"], claims["sf.test"]
        assert isinstance(gone, Published) and isinstance(servfail, Published)
        assert type(gone.outcome) is DnsPermanent and gone.outcome.enhanced == "5.1.2"
        assert str(gone.outcome) == "gone.test: no such domain (NXDOMAIN)" and gone.outcome.domain == "gone.test"
        assert type(servfail.outcome) is DnsTemporary and servfail.outcome.enhanced == "4.4.3"


async def test_a_dead_workers_claim_lapses_and_an_answer_expires_with_its_ttl(redis_url: str) -> None:
    async with open_routes(redis_url) as (store, _):
        assert await store.claim(["a.test"], "dead", 0.05) == {"a.test": MINE}

        async def claimable() -> bool:
            return (await store.claim(["a.test"], "w2", 10)) == {"a.test": MINE}

        await async_wait_until(claimable, 5, what="the dead worker's claim to lapse")
        await store.publish([("a.test", ROUTE, 0.05)])

        async def expired() -> bool:
            return (await store.claim(["a.test"], "w3", 10)) == {"a.test": MINE}

        await async_wait_until(expired, 5, what="the answer's TTL to run out")


async def test_a_corrupt_answer_is_looked_up_again_and_overwritten(redis_url: str) -> None:
    async with open_routes(redis_url) as (store, redis):
        await redis.set(store.keys.route("a.test"), b"\xc1 not msgpack", px=60_000)
        assert await store.claim(["a.test"], "w1", 10) == {"a.test": MINE}
        await store.publish([("a.test", ROUTE, 60.0)])
        claim = (await store.claim(["a.test"], "w2", 10))["a.test"]
        assert isinstance(claim, Published) and claim.outcome == ROUTE
        assert not await redis.exists(f"{store.keys.route('a.test')}:busy")  # publishing freed the claim
