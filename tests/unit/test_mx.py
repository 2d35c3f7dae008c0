"""engine.mx: MX ordering, null MX, site keys and address classification, without DNS."""

from __future__ import annotations

import random

import pytest

from engine.mx import (
    MxHost,
    Route,
    build_route,
    ip_literal,
    is_null_mx,
    is_private_address,
    normalize_name,
    order_addresses,
    order_mx,
    reshuffled,
    site_key,
    without_private,
)


def test_order_mx_sorts_by_preference_and_normalizes_names() -> None:
    records = [(30, "C.example."), (10, "a.example"), (20, "B.Example.")]
    assert order_mx(records, random.Random(0)) == [
        (10, "a.example"),
        (20, "b.example"),
        (30, "c.example"),
    ]


def test_order_mx_shuffles_only_within_a_preference() -> None:
    records = [(10, f"mx{i}.example") for i in range(6)] + [
        (5, "first.example"),
        (50, "last.example"),
    ]
    orders = set()
    for seed in range(30):
        ordered = order_mx(records, random.Random(seed))
        assert ordered[0] == (5, "first.example")
        assert ordered[-1] == (50, "last.example")
        assert sorted(ordered[1:-1]) == [(10, f"mx{i}.example") for i in range(6)]
        orders.add(tuple(ordered))
    assert len(orders) > 1, "equal preferences must be randomized (RFC 5321 5.1)"


def test_order_mx_is_reproducible_with_a_seeded_rng_whatever_the_input_order() -> None:
    records = [(10, "x.example"), (10, "y.example"), (10, "z.example")]
    first = order_mx(records, random.Random(42))
    assert order_mx(list(reversed(records)), random.Random(42)) == first


def test_order_mx_drops_duplicates_keeping_the_best_preference_and_root_targets() -> None:
    records = [(20, "mx.example"), (10, "MX.example."), (0, "."), (30, "other.example")]
    assert order_mx(records, random.Random(0)) == [(10, "mx.example"), (30, "other.example")]


def test_null_mx() -> None:
    assert is_null_mx([(0, ".")])
    assert is_null_mx([(10, "")])  # any preference: the intent is clear
    assert is_null_mx([(0, "."), (0, ".")])
    assert not is_null_mx([])  # NODATA is the implicit MX, not a null MX
    assert not is_null_mx([(0, "."), (10, "mx.example")])


def test_site_key_is_the_same_for_the_same_mx_set_in_any_order_and_case() -> None:
    one = site_key(["mx2.example.", "MX1.example"])
    assert one == site_key(["mx1.example", "mx2.example"]) == "mx1.example,mx2.example"
    assert one == site_key(["mx2.example", "mx1.example", "mx1.example."])
    assert site_key(["mx1.example"]) != one


def test_site_key_of_a_large_mx_set_is_bounded_and_still_order_independent() -> None:
    names = [f"mx{i}.a-rather-long-provider-name.example" for i in range(40)]
    key = site_key(names)
    assert len(key) < 120
    assert key == site_key(reversed(names))
    assert key != site_key(names[:-1])


def test_order_addresses_puts_ipv4_first_and_removes_duplicates() -> None:
    assert order_addresses(["192.0.2.1", "192.0.2.1"], ["2001:db8::1", "192.0.2.1"]) == (
        "192.0.2.1",
        "2001:db8::1",
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("192.0.2.7.", "192.0.2.7"),
        ("[192.0.2.7]", "192.0.2.7"),
        ("[IPv6:2001:db8::1]", "2001:db8::1"),
        ("mx.example", None),
        ("1.2.3", None),
    ],
)
def test_ip_literal(name: str, expected: str | None) -> None:
    assert ip_literal(name) == expected


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.0.0.13",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.0.1",
        "100.64.0.1",  # carrier-grade NAT
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fd00::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "ff02::1",
        "not-an-address",
        "",
    ],
)
def test_private_addresses(address: str) -> None:
    assert is_private_address(address)


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "93.184.216.34", "2a00:1450:4001:80b::200e", "::ffff:8.8.8.8"]
)
def test_public_addresses(address: str) -> None:
    assert not is_private_address(address)


def test_build_route_keeps_order_and_skips_hosts_without_addresses() -> None:
    ordered = [(10, "a.example"), (10, "b.example"), (20, "c.example")]
    addresses = {
        "a.example": ("192.0.2.1",),
        "b.example": (),
        "c.example": ("192.0.2.3", "2001:db8::3"),
    }
    route = build_route("d.example", ordered, addresses, implicit=False, site="s", expires=5.0)
    assert route == Route(
        domain="d.example",
        hosts=(
            MxHost("a.example", 10, ("192.0.2.1",)),
            MxHost("c.example", 20, ("192.0.2.3", "2001:db8::3")),
        ),
        implicit=False,
        site="s",
        expires=5.0,
    )


def test_without_private_drops_private_addresses_and_empty_hosts() -> None:
    route = Route(
        domain="d.example",
        hosts=(
            MxHost("inside.example", 10, ("127.0.0.1", "10.0.0.1")),
            MxHost("mixed.example", 20, ("192.168.0.1", "93.184.216.34", "fd00::1")),
        ),
        implicit=False,
        site="inside.example,mixed.example",
        expires=1.0,
    )
    public = without_private(route)
    assert public.hosts == (MxHost("mixed.example", 20, ("93.184.216.34",)),)
    assert public.site == route.site


def test_normalize_name() -> None:
    assert normalize_name(" MX.Example.COM. ") == "mx.example.com"
    assert normalize_name(".") == ""


def test_a_shared_route_gets_its_equal_preferences_reshuffled_and_keeps_its_order_of_preferences() -> None:
    hosts = tuple(MxHost(f"mx{i}.a.test", 10 if i < 4 else 20, (f"192.0.2.{i}",)) for i in range(6))
    route = Route("a.test", hosts, implicit=False, site="s", expires=5.0)
    orders = {tuple(h.name for h in reshuffled(route, random.Random(seed)).hosts) for seed in range(30)}
    assert len(orders) > 1
    for order in orders:
        assert set(order[:4]) == {f"mx{i}.a.test" for i in range(4)} and set(order[4:]) == {"mx4.a.test", "mx5.a.test"}
    single = Route("b.test", (MxHost("mx.b.test", 10, ("192.0.2.9",)),), implicit=False, site="t", expires=1.0)
    assert reshuffled(single, random.Random(1)) is single
