"""MX routing decisions as pure functions: no I/O, no clock reads, randomness injected.

``engine.net.resolver`` does the lookups and hands the raw answers to these
functions, so every rule of RFC 5321 section 5.1 and RFC 7505 can be tested
without a DNS server:

* MX records are tried in ascending preference; hosts that share a preference
  are shuffled (RFC 5321 5.1 "SHOULD be randomized") with the caller's RNG.
* A single MX ``0 .`` is a null MX (RFC 7505): the domain accepts no mail, and
  there is no fallback to its A/AAAA records.
* A domain without MX records is its own mail host (the "implicit MX").
* The site key names the set of MX host names, so domains hosted by the same
  provider share connections and throttles (KumoMTA's "site").
"""

from __future__ import annotations

import hashlib
import ipaddress
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

__all__ = [
    "MxHost",
    "Route",
    "normalize_name",
    "is_null_mx",
    "order_mx",
    "site_key",
    "order_addresses",
    "ip_literal",
    "build_route",
    "reshuffled",
    "is_private_address",
    "without_private",
]

# Longest site key kept readable; longer MX sets are hashed so Redis keys stay short.
MAX_READABLE_SITE = 200


@dataclass(frozen=True, slots=True)
class MxHost:
    name: str  # lower-case, no trailing dot
    preference: int
    addresses: tuple[str, ...]  # IPv4 then IPv6 text addresses, in the order to try


@dataclass(frozen=True, slots=True)
class Route:
    domain: str  # the ASCII (A-label) domain looked up
    hosts: tuple[MxHost, ...]  # preference order, shuffled among equals, capped
    implicit: bool  # no MX: the domain's own A/AAAA is used (RFC 5321 5.1)
    site: str  # same MX host set -> same site
    expires: float  # monotonic time when the cached answer expires (min TTL)


def normalize_name(name: str) -> str:
    """DNS names compare case-insensitively and with or without the final dot."""
    return name.strip().rstrip(".").lower()


def is_null_mx(records: Iterable[tuple[int, str]]) -> bool:
    """RFC 7505: the MX set is ``0 .``, the domain declares it accepts no mail.

    The RFC asks for a single record with preference 0; any preference, and
    repeats of ``.``, are accepted since the intent is unambiguous. A ``.`` mixed
    with real hosts is not a null MX (``order_mx`` drops the ``.``).
    """
    items = list(records)
    return bool(items) and all(normalize_name(host) == "" for _, host in items)


def order_mx(records: Iterable[tuple[int, str]], rng: random.Random) -> list[tuple[int, str]]:
    """Sort (preference, host) pairs for delivery attempts.

    Names are normalized, duplicates keep their lowest preference, and ``.``
    targets are dropped (a null MX mixed with real records is a misconfiguration;
    the real records still work). Equal preferences are shuffled with ``rng``.
    """
    best: dict[str, int] = {}
    for preference, host in records:
        name = normalize_name(host)
        if not name:
            continue
        if name not in best or preference < best[name]:
            best[name] = preference
    groups: dict[int, list[str]] = {}
    for name in sorted(best):  # sorted first so a seeded rng gives a stable order
        groups.setdefault(best[name], []).append(name)
    ordered: list[tuple[int, str]] = []
    for preference in sorted(groups):
        names = groups[preference]
        rng.shuffle(names)
        ordered.extend((preference, name) for name in names)
    return ordered


def site_key(host_names: Iterable[str]) -> str:
    """A key for the set of MX host names, independent of order and case.

    Readable (``mx1.example,mx2.example``) when short, a hash when the set is large.
    """
    names = sorted({normalize_name(n) for n in host_names} - {""})
    key = ",".join(names)
    if len(key) <= MAX_READABLE_SITE:
        return key
    digest = hashlib.sha256(key.encode("ascii", "backslashreplace")).hexdigest()[:32]
    return f"{names[0]}+{len(names) - 1}#{digest}"


def order_addresses(ipv4: Iterable[str], ipv6: Iterable[str]) -> tuple[str, ...]:
    """IPv4 first (IPv6 delivery is more often refused by bulk receivers), duplicates removed."""
    seen: dict[str, None] = {}
    for address in (*ipv4, *ipv6):
        seen.setdefault(address, None)
    return tuple(seen)


def ip_literal(name: str) -> str | None:
    """The address if ``name`` is an IP literal (``1.2.3.4`` or ``[1.2.3.4]``), else None.

    MX targets that are IP literals violate RFC 5321 but exist in the wild; the
    resolver uses the address directly instead of looking the "name" up.
    """
    text = normalize_name(name)
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
        if text.startswith("ipv6:"):
            text = text[5:]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def build_route(
    domain: str,
    ordered: Sequence[tuple[int, str]],
    addresses: Mapping[str, tuple[str, ...]],
    *,
    implicit: bool,
    site: str,
    expires: float,
) -> Route:
    """Assemble a Route from ordered MX pairs, keeping only hosts that have addresses."""
    hosts = tuple(
        MxHost(name=name, preference=preference, addresses=addresses[name])
        for preference, name in ordered
        if addresses.get(name)
    )
    return Route(domain=domain, hosts=hosts, implicit=implicit, site=site, expires=expires)


def reshuffled(route: Route, rng: random.Random) -> Route:
    """The route with hosts of equal preference in a fresh random order: a route resolved by
    another worker must not send the whole fleet to the same one of them (RFC 5321 5.1)."""
    groups: dict[int, list[MxHost]] = {}
    for host in route.hosts:
        groups.setdefault(host.preference, []).append(host)
    if all(len(group) == 1 for group in groups.values()):
        return route
    hosts: list[MxHost] = []
    for preference in sorted(groups):
        group = groups[preference]
        rng.shuffle(group)
        hosts.extend(group)
    return replace(route, hosts=tuple(hosts))


def is_private_address(address: str) -> bool:
    """True for addresses the engine must not connect to unless configured to.

    Loopback, RFC 1918, link-local, ULA, CGNAT, unspecified, multicast, reserved and
    documentation ranges, including IPv4-mapped IPv6 forms of them. Text that is
    not an address counts as private: refusing is the safe answer.
    """
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return True
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast or ip.is_reserved or ip.is_unspecified


def without_private(route: Route) -> Route:
    """The route with private addresses removed and hosts left without addresses dropped.

    The worker applies this unless ``SmtpConfig.allow_private_mx`` is set (RELIABILITY
    3.6: an MX must not turn the engine into a relay into internal networks).
    """
    hosts: list[MxHost] = []
    for host in route.hosts:
        public = tuple(a for a in host.addresses if not is_private_address(a))
        if public:
            hosts.append(replace(host, addresses=public))
    return replace(route, hosts=tuple(hosts))
