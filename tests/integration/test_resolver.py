"""MxResolver against the loopback DNS server, over the wire (RELIABILITY 3.6 and 4.1 row 21).

Nothing in the resolver is patched: every case is a real answer (or a real
silence) from tests.support.dns_server. Time is the ManualClock ``dns_clock``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Coroutine
from dataclasses import replace
from typing import Any, TypeVar

import pytest

from engine.config import DnsConfig
from engine.errors import DnsError, DnsPermanent, DnsTemporary
from engine.mx import MxHost, Route, without_private
from engine.net.resolver import MxResolver
from tests.support.clock import ManualClock
from tests.support.dns_server import DnsServer
from tests.support.waiting import async_wait_until

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def route(resolver: MxResolver, domain: str) -> Route:
    return run(resolver.route(domain))


def failure(resolver: MxResolver, domain: str, kind: type[DnsError]) -> DnsError:
    with pytest.raises(kind) as info:
        route(resolver, domain)
    return info.value


# ------------------------------------------------------------------ answers


def test_mx_hosts_come_in_preference_order_with_their_addresses(
    dns_server: DnsServer, resolver: MxResolver, dns_clock: ManualClock
) -> None:
    dns_server.negative_ttl = 3600  # "no AAAA" answers count as TTLs too
    dns_server.add_mx(
        "a.test",
        [(30, "mx4.a.test"), (10, "mx1.a.test"), (20, "MX3.a.test"), (10, "mx2.a.test")],
        ttl=600,
    )
    dns_server.add_a("mx1.a.test", ["127.0.0.11"], ttl=300)
    dns_server.add_a("mx2.a.test", ["127.0.0.12", "127.0.0.22"])
    dns_server.add_a("mx3.a.test", ["127.0.0.13"])
    dns_server.add_aaaa("mx3.a.test", ["::1"])
    dns_server.add_aaaa("mx4.a.test", ["::1"])

    result = route(resolver, "A.test.")

    assert result.domain == "a.test"
    assert not result.implicit
    assert [h.preference for h in result.hosts] == [10, 10, 20, 30]
    assert {h.name for h in result.hosts[:2]} == {"mx1.a.test", "mx2.a.test"}
    by_name = {h.name: h.addresses for h in result.hosts}
    assert sorted(by_name.pop("mx2.a.test")) == [
        "127.0.0.12",
        "127.0.0.22",
    ]  # servers rotate RRsets
    assert by_name == {
        "mx1.a.test": ("127.0.0.11",),
        "mx3.a.test": ("127.0.0.13", "::1"),  # IPv4 first
        "mx4.a.test": ("::1",),
    }
    assert result.site == "mx1.a.test,mx2.a.test,mx3.a.test,mx4.a.test"
    assert result.expires == dns_clock.monotonic() + 300  # the smallest TTL involved


def test_equal_preferences_are_shuffled_between_resolvers(
    dns_server: DnsServer, dns_config: DnsConfig, dns_clock: ManualClock
) -> None:
    dns_server.add_mx("eq.test", [(10, f"mx{i}.eq.test") for i in range(5)])
    for i in range(5):
        dns_server.add_a(f"mx{i}.eq.test", [f"127.0.0.{20 + i}"])
    orders = {
        tuple(
            h.name
            for h in route(MxResolver(dns_config, dns_clock, random.Random(seed)), "eq.test").hosts
        )
        for seed in range(8)
    }
    assert len(orders) > 1
    assert all(sorted(order) == [f"mx{i}.eq.test" for i in range(5)] for order in orders)


def test_domains_with_the_same_mx_set_share_a_site(
    dns_server: DnsServer, resolver: MxResolver
) -> None:
    dns_server.add_mx("one.test", [(10, "mx1.hoster.test"), (20, "mx2.hoster.test")])
    dns_server.add_mx("two.test", [(5, "MX2.hoster.test."), (5, "mx1.hoster.test")])
    dns_server.add_a("mx1.hoster.test", ["127.0.0.31"])
    dns_server.add_a("mx2.hoster.test", ["127.0.0.32"])
    assert route(resolver, "one.test").site == route(resolver, "two.test").site


def test_no_mx_means_implicit_mx_from_a_and_aaaa(
    dns_server: DnsServer, resolver: MxResolver
) -> None:
    dns_server.add_a("plain.test", ["127.0.0.40"])
    dns_server.add_aaaa("plain.test", ["::1"])
    result = route(resolver, "plain.test")
    assert result.implicit
    assert result.hosts == (MxHost("plain.test", 0, ("127.0.0.40", "::1")),)
    assert result.site == "plain.test"


def test_implicit_mx_with_only_aaaa(dns_server: DnsServer, resolver: MxResolver) -> None:
    dns_server.add_aaaa("six.test", ["::1"])
    assert route(resolver, "six.test").hosts == (MxHost("six.test", 0, ("::1",)),)


def test_nodata_for_mx_and_addresses_is_permanent(
    dns_server: DnsServer, resolver: MxResolver
) -> None:
    dns_server.add_record("txt-only.test", "TXT", ['"v=spf1 -all"'])
    error = failure(resolver, "txt-only.test", DnsPermanent)
    assert error.enhanced == "5.1.2"
    assert error.domain == "txt-only.test"


def test_cname_mx_target_is_followed(dns_server: DnsServer, resolver: MxResolver) -> None:
    dns_server.add_mx("cn.test", [(10, "alias.cn.test")])
    dns_server.add_cname("alias.cn.test", "real.cn.test")
    dns_server.add_a("real.cn.test", ["127.0.0.50"])
    assert route(resolver, "cn.test").hosts == (MxHost("alias.cn.test", 10, ("127.0.0.50",)),)


def test_domain_that_is_a_cname_uses_the_targets_mx(
    dns_server: DnsServer, resolver: MxResolver
) -> None:
    dns_server.add_cname("www.cn.test", "cn2.test")
    dns_server.add_mx("cn2.test", [(10, "mx.cn2.test")])
    dns_server.add_a("mx.cn2.test", ["127.0.0.51"])
    result = route(resolver, "www.cn.test")
    assert result.domain == "www.cn.test"
    assert [h.name for h in result.hosts] == ["mx.cn2.test"]


def test_ip_literal_mx_target_is_used_as_an_address_and_can_be_filtered(
    dns_server: DnsServer, resolver: MxResolver
) -> None:
    dns_server.add_mx("lit.test", [(10, "127.0.0.1"), (20, "mx.lit.test")])
    dns_server.add_a("mx.lit.test", ["127.0.0.1"])  # MX -> 127.0.0.1 through a name, too
    result = route(resolver, "lit.test")
    assert result.hosts[0] == MxHost("127.0.0.1", 10, ("127.0.0.1",))
    assert dns_server.query_count("127.0.0.1") == 0
    assert without_private(result).hosts == ()  # the worker's guard against relaying inward


def test_internationalized_domain_is_looked_up_as_its_a_label(
    dns_server: DnsServer, resolver: MxResolver
) -> None:
    dns_server.add_a("xn--bcher-kva.test", ["127.0.0.52"])
    result = route(resolver, "bücher.test")
    assert result.domain == "xn--bcher-kva.test"
    assert result.hosts[0].addresses == ("127.0.0.52",)


def test_mx_host_without_address_is_skipped(dns_server: DnsServer, resolver: MxResolver) -> None:
    dns_server.add_mx(
        "skip.test", [(10, "gone.skip.test"), (20, "v6less.skip.test"), (30, "ok.skip.test")]
    )
    dns_server.add_record("v6less.skip.test", "TXT", ['"no address here"'])
    dns_server.add_a("ok.skip.test", ["127.0.0.60"])
    assert route(resolver, "skip.test").hosts == (MxHost("ok.skip.test", 30, ("127.0.0.60",)),)


def test_mx_host_with_failing_lookup_is_skipped(
    dns_server: DnsServer, resolver: MxResolver
) -> None:
    dns_server.add_mx("half.test", [(10, "broken.half.test"), (20, "ok.half.test")])
    dns_server.servfail("broken.half.test")
    dns_server.add_a("ok.half.test", ["127.0.0.61"])
    assert [h.name for h in route(resolver, "half.test").hosts] == ["ok.half.test"]


def test_every_mx_host_nonexistent_is_permanent_5_4_4(
    dns_server: DnsServer, resolver: MxResolver
) -> None:
    dns_server.add_mx("dangling.test", [(10, "nope1.dangling.test"), (20, "nope2.dangling.test")])
    error = failure(resolver, "dangling.test", DnsPermanent)
    assert error.enhanced == "5.4.4"


def test_mx_hosts_failing_temporarily_is_temporary(
    dns_server: DnsServer, resolver: MxResolver
) -> None:
    dns_server.add_mx("flaky.test", [(10, "mx1.flaky.test"), (20, "mx2.flaky.test")])
    dns_server.servfail("mx1.flaky.test")  # mx2 does not exist: one temporary failure is enough
    error = failure(resolver, "flaky.test", DnsTemporary)
    assert error.enhanced == "4.4.3"


def test_mx_hosts_are_capped_before_any_address_lookup(
    dns_server: DnsServer, resolver: MxResolver, dns_config: DnsConfig
) -> None:
    dns_server.add_mx("many.test", [(i, f"mx{i}.many.test") for i in range(12)])
    for i in range(12):
        dns_server.add_a(f"mx{i}.many.test", [f"127.0.1.{i + 1}"])
    result = route(resolver, "many.test")
    assert [h.name for h in result.hosts] == [
        f"mx{i}.many.test" for i in range(dns_config.max_mx_hosts)
    ]
    assert dns_server.query_count(qtype="A") == dns_config.max_mx_hosts


# ------------------------------------------------------------------ failures


def test_null_mx_is_permanent_5_1_10_without_a_fallback(
    dns_server: DnsServer, resolver: MxResolver
) -> None:
    dns_server.null_mx("null.test")
    dns_server.add_a("null.test", ["127.0.0.70"])
    error = failure(resolver, "null.test", DnsPermanent)
    assert error.enhanced == "5.1.10"
    assert error.domain == "null.test"
    assert dns_server.query_count("null.test", "A") == 0


def test_nxdomain_is_permanent_5_1_2(dns_server: DnsServer, resolver: MxResolver) -> None:
    error = failure(resolver, "nowhere.test", DnsPermanent)
    assert error.enhanced == "5.1.2"
    assert error.domain == "nowhere.test"


def test_malformed_domain_is_permanent_without_a_query(
    dns_server: DnsServer, resolver: MxResolver
) -> None:
    for domain in ("a..b.test", "x" * 64 + ".test", ""):
        assert failure(resolver, domain, DnsPermanent).enhanced == "5.1.2"
    assert dns_server.queries == 0


@pytest.mark.parametrize("fault", ["servfail", "refuse"])
def test_servfail_and_refused_are_temporary_and_never_fall_back_to_a(
    dns_server: DnsServer, resolver: MxResolver, fault: str
) -> None:
    dns_server.set_action("sick.test", fault, "MX")
    dns_server.add_a("sick.test", ["127.0.0.71"])
    error = failure(resolver, "sick.test", DnsTemporary)
    assert error.enhanced == "4.4.3"
    assert dns_server.query_count("sick.test", "A") == 0


def test_timeout_is_temporary(dns_server: DnsServer, resolver: MxResolver) -> None:
    dns_server.no_answer("silent.test")
    dns_server.add_a("silent.test", ["127.0.0.72"])
    error = failure(resolver, "silent.test", DnsTemporary)
    assert error.enhanced == "4.4.3"
    assert "timed out" in str(error)
    assert dns_server.query_count("silent.test", "MX") >= 1
    assert dns_server.query_count("silent.test", "A") == 0


def test_truncated_udp_answer_is_retried_over_tcp(
    dns_server: DnsServer, resolver: MxResolver
) -> None:
    dns_server.add_mx("tc.test", [(10, "mx.tc.test")])
    dns_server.add_a("mx.tc.test", ["127.0.0.80"])
    dns_server.truncate("tc.test", "MX")
    assert route(resolver, "tc.test").hosts == (MxHost("mx.tc.test", 10, ("127.0.0.80",)),)
    assert dns_server.query_count("tc.test", "MX", transport="udp") == 1
    assert dns_server.query_count("tc.test", "MX", transport="tcp") == 1


def test_answer_too_big_for_udp_arrives_over_tcp(
    dns_server: DnsServer, dns_config: DnsConfig, dns_clock: ManualClock
) -> None:
    hosts = [(10, f"mail-exchanger-with-a-long-name-{i:03d}.big-provider.test") for i in range(60)]
    dns_server.add_mx("big.test", hosts)
    for _, host in hosts:
        dns_server.add_a(host, ["127.0.0.81"])
    # UDP, TCP, then A and AAAA for five hosts, served by a thread of this process: on a loaded
    # machine that outlasted the fixture's 0.5 s timeout (2 failures in ~23 runs). The subject
    # here is the TCP fallback, not the timeout, so this resolver waits longer.
    resolver = MxResolver(replace(dns_config, timeout=5.0), dns_clock, rng=random.Random(5321))
    result = route(resolver, "big.test")
    assert len(result.hosts) == 5
    assert dns_server.query_count("big.test", "MX", transport="tcp") == 1


def test_spoofed_answer_with_wrong_query_id_is_ignored(
    dns_server: DnsServer, resolver: MxResolver
) -> None:
    dns_server.add_mx("spoofed.test", [(10, "mx.spoofed.test")])
    dns_server.add_a("mx.spoofed.test", ["127.0.0.90"])
    dns_server.spoof("spoofed.test")
    dns_server.spoof("mx.spoofed.test")
    result = route(resolver, "spoofed.test")
    assert result.hosts == (MxHost("mx.spoofed.test", 10, ("127.0.0.90",)),)


# ------------------------------------------------------------------ caching


def test_positive_answers_are_cached_for_their_ttl(
    dns_server: DnsServer, resolver: MxResolver, dns_clock: ManualClock
) -> None:
    dns_server.negative_ttl = 3600  # the host's "no AAAA" must outlive the MX TTL
    dns_server.add_mx("ttl.test", [(10, "mx.ttl.test")], ttl=60)
    dns_server.add_a("mx.ttl.test", ["127.0.0.100"], ttl=600)
    first = route(resolver, "ttl.test")
    assert first.expires == dns_clock.monotonic() + 60
    asked = dns_server.queries

    dns_clock.advance(59)
    assert route(resolver, "ttl.test") == first
    assert dns_server.queries == asked

    dns_clock.advance(2)
    again = route(resolver, "ttl.test")
    assert again.hosts == first.hosts
    assert dns_server.query_count("ttl.test", "MX") == 2
    assert dns_server.query_count("mx.ttl.test", "A") == 1  # the host's own TTL has not run out


def test_negative_answers_are_cached_for_the_soa_ttl(
    dns_server: DnsServer, resolver: MxResolver, dns_clock: ManualClock
) -> None:
    dns_server.negative_ttl = 45
    failure(resolver, "gone.test", DnsPermanent)
    failure(resolver, "gone.test", DnsPermanent)
    assert dns_server.query_count("gone.test") == 1
    dns_clock.advance(46)
    failure(resolver, "gone.test", DnsPermanent)
    assert dns_server.query_count("gone.test") == 2


def test_negative_caching_is_capped_by_config(
    dns_server: DnsServer, dns_config: DnsConfig, dns_clock: ManualClock
) -> None:
    dns_server.negative_ttl = 86400
    resolver = MxResolver(replace(dns_config, negative_ttl=30), dns_clock)
    failure(resolver, "gone.test", DnsPermanent)
    dns_clock.advance(31)
    failure(resolver, "gone.test", DnsPermanent)
    assert dns_server.query_count("gone.test") == 2


def test_temporary_failures_are_remembered_briefly_then_retried(
    dns_server: DnsServer, resolver: MxResolver, dns_clock: ManualClock, dns_config: DnsConfig
) -> None:
    dns_server.servfail("later.test")
    failure(resolver, "later.test", DnsTemporary)
    failure(resolver, "later.test", DnsTemporary)
    assert dns_server.query_count("later.test") == 1

    dns_server.clear()  # the nameserver recovers
    dns_server.add_a("later.test", ["127.0.0.101"])
    dns_clock.advance(dns_config.temporary_ttl + 1)
    assert route(resolver, "later.test").implicit


def test_concurrent_lookups_of_one_domain_share_one_query(
    dns_server: DnsServer, resolver: MxResolver
) -> None:
    dns_server.add_mx("busy.test", [(10, "mx.busy.test")])
    dns_server.add_a("mx.busy.test", ["127.0.0.110"])

    async def many() -> list[Route]:
        return await asyncio.gather(*(resolver.route("busy.test") for _ in range(200)))

    routes = run(many())
    assert len({r.hosts for r in routes}) == 1
    assert dns_server.query_count("busy.test", "MX") == 1
    assert dns_server.query_count("mx.busy.test") == 2  # A and AAAA, once each


def test_domains_sharing_mx_hosts_look_the_hosts_up_once(
    dns_server: DnsServer, resolver: MxResolver
) -> None:
    dns_server.add_pattern("d{n}.shared.test", 100, mx="mx{n%5}.shared.test", a="127.0.2.{n%5+1}")

    async def all_domains() -> list[Route]:
        return await asyncio.gather(*(resolver.route(f"d{n}.shared.test") for n in range(100)))

    routes = run(all_domains())
    assert routes[17].hosts == (MxHost("mx2.shared.test", 10, ("127.0.2.3",)),)
    assert dns_server.query_count(qtype="MX") == 100
    assert dns_server.query_count(qtype="A") == 5
    assert len({r.site for r in routes}) == 5


def test_concurrent_timeouts_share_one_failed_lookup(
    dns_server: DnsServer, resolver: MxResolver
) -> None:
    dns_server.no_answer("hang.test")

    async def many() -> list[BaseException | Route]:
        return await asyncio.gather(
            *(resolver.route("hang.test") for _ in range(20)), return_exceptions=True
        )

    results = run(many())
    assert all(isinstance(r, DnsTemporary) for r in results)
    assert len({id(r) for r in results}) == 20  # each caller gets its own exception object


def test_lookups_in_flight_are_capped_so_a_burst_of_domains_cannot_flood_the_nameserver(
    dns_server: DnsServer, dns_config: DnsConfig, dns_clock: ManualClock
) -> None:
    dns_server.no_answer("hang1.test")
    dns_server.no_answer("hang2.test")
    dns_server.add_mx("next.test", [(10, "mx.next.test")])
    dns_server.add_a("mx.next.test", ["127.0.0.111"])
    resolver = MxResolver(replace(dns_config, max_inflight=2), dns_clock)

    async def burst() -> list[BaseException | Route]:
        tasks = [asyncio.ensure_future(resolver.route(d)) for d in ("hang1.test", "hang2.test", "next.test")]
        async def both_asked() -> bool:  # both gate places taken by silent names
            return dns_server.query_count("hang2.test", "MX") > 0

        await async_wait_until(both_asked, 10, what="the second silent lookup")
        asked_while_full = dns_server.query_count("next.test", "MX")
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert asked_while_full == 0
        return results

    hang1, hang2, nxt = run(burst())
    assert isinstance(hang1, DnsTemporary) and isinstance(hang2, DnsTemporary)
    # its wait for a place did not count against its own timeout: it was answered
    assert isinstance(nxt, Route) and nxt.hosts[0].addresses == ("127.0.0.111",)
