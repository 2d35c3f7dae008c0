"""Workers share MX answers through Redis: a domain is looked up once for the fleet.

Two FleetRoutes with resolvers of their own (two workers) route the same 200
domains at once over the loopback DNS server; the server must see each MX
question once. Redis trouble only costs the sharing.
"""

from __future__ import annotations

import asyncio
import secrets

from redis.asyncio import Redis

from engine.config import DnsConfig
from engine.errors import DnsError, DnsPermanent
from engine.mx import Route
from engine.net.resolver import MxResolver
from engine.queue.keys import Keys
from engine.queue.routes import RouteStore
from tests.support.clock import ManualClock
from tests.support.dns_server import DnsServer
from workers.routing import FleetRoutes

DOMAINS = [f"d{n}.fleet.test" for n in range(200)]


def fleet(dns_server: DnsServer, store: RouteStore | None, token: str) -> FleetRoutes:
    config = DnsConfig(nameserver=dns_server.address, timeout=3.0)
    return FleetRoutes(MxResolver(config, ManualClock()), store, token, config.timeout)


async def route_all(routes: FleetRoutes, domains: list[str]) -> dict[str, Route | DnsError]:
    answers: dict[str, Route | DnsError] = {}

    def deliver(domain: str, outcome: Route | DnsError) -> None:
        assert domain not in answers, f"{domain} delivered twice"
        answers[domain] = outcome

    await routes.resolve(domains, deliver)
    await routes.flush()
    return answers


async def test_two_workers_routing_the_same_domains_ask_dns_once_per_domain(
    redis_url: str, dns_server: DnsServer
) -> None:
    dns_server.add_pattern("d{n}.fleet.test", count=200, mx="mx{n%10}.fleet.test", a="127.0.0.{10+n%10}")
    redis = Redis.from_url(redis_url)
    keys = Keys(f"fl{secrets.token_hex(4)}")
    try:
        one, two = fleet(dns_server, RouteStore(redis, keys), "w1"), fleet(dns_server, RouteStore(redis, keys), "w2")
        first, second = await asyncio.gather(route_all(one, DOMAINS), route_all(two, DOMAINS[::-1]))
    finally:
        await redis.aclose()
    assert set(first) == set(second) == set(DOMAINS)
    for domain in DOMAINS:
        a, b = first[domain], second[domain]
        assert isinstance(a, Route) and isinstance(b, Route)
        assert (a.site, a.hosts) == (b.site, b.hosts)
    assert [dns_server.query_count(d, "MX") for d in DOMAINS] == [1] * len(DOMAINS)
    assert one.looked_up + two.looked_up == len(DOMAINS)
    assert one.taken + two.taken == len(DOMAINS)
    # answered from the worker's own cache from now on: no Redis, no DNS
    assert one.cached("d7.fleet.test") == first["d7.fleet.test"]


async def test_failures_are_shared_and_literals_and_bad_names_stay_local(
    redis_url: str, dns_server: DnsServer
) -> None:
    redis = Redis.from_url(redis_url)
    keys = Keys(f"fl{secrets.token_hex(4)}")
    try:
        one, two = fleet(dns_server, RouteStore(redis, keys), "w1"), fleet(dns_server, RouteStore(redis, keys), "w2")
        first = await route_all(one, ["nowhere.fleet.test", "[127.0.0.5]", "bad..name.test"])
        second = await route_all(two, ["nowhere.fleet.test"])
    finally:
        await redis.aclose()
    assert isinstance(first["nowhere.fleet.test"], DnsPermanent) and first["nowhere.fleet.test"].enhanced == "5.1.2"
    assert isinstance(second["nowhere.fleet.test"], DnsPermanent) and two.taken == 1 and two.looked_up == 0
    assert dns_server.query_count("nowhere.fleet.test", "MX") == 1
    literal = first["[127.0.0.5]"]
    assert isinstance(literal, Route) and literal.hosts[0].addresses == ("127.0.0.5",)
    assert isinstance(first["bad..name.test"], DnsPermanent)


async def test_without_redis_every_worker_looks_up_for_itself(dns_server: DnsServer) -> None:
    dns_server.add_pattern("d{n}.fleet.test", count=20, mx="mx{n%10}.fleet.test", a="127.0.0.{10+n%10}")
    redis = Redis.from_url("redis://127.0.0.1:1/0")  # nothing listens on port 1
    try:
        routes = fleet(dns_server, RouteStore(redis, Keys()), "w1")
        answers = await route_all(routes, DOMAINS[:20])
    finally:
        await redis.aclose()
    assert all(isinstance(answers[d], Route) for d in DOMAINS[:20])
    assert routes.looked_up == 20 and routes.taken == 0
