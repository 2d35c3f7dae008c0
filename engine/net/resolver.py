"""MX routing over DNS: dnspython's async resolver behind a TTL cache on the injected clock.

Theory of operation. ``route(domain)`` answers from a per-domain cache while the
answer's TTL lasts. On a miss it looks up MX, then A and AAAA of each MX host
(hosts have their own cache: a thousand domains hosted by one provider cost one
host lookup). Concurrent calls for the same key share one lookup, because a
worker routes hundreds of domains at once and they repeat.

Failures are values in the cache, so a dead domain is not asked again on every
recipient: permanent answers (NXDOMAIN, null MX) for their negative TTL capped
by ``DnsConfig.negative_ttl``, temporary ones (SERVFAIL, REFUSED, timeout) for
``DnsConfig.temporary_ttl``. A temporary failure never turns into "no MX, use
A" (RELIABILITY 3.6). dnspython exceptions become ``engine.errors`` here only.

Decisions (RFC references in ``engine.mx``):

* NXDOMAIN for the domain -> ``DnsPermanent`` 5.1.2; null MX -> ``DnsPermanent`` 5.1.10.
* NODATA for MX -> implicit MX from the domain's A/AAAA; if the domain has
  neither -> ``DnsPermanent`` 5.1.2 (it exists but cannot receive mail).
* Only the first ``max_mx_hosts`` hosts in preference order are looked up
  (hostile MX sets cost bounded queries); a host whose lookups fail or are empty
  is skipped. If none is left: ``DnsTemporary`` 4.4.3 when any host lookup failed
  temporarily, else ``DnsPermanent`` 5.4.4 (every host is NXDOMAIN or has no
  address: routing information is definitively missing, as Postfix decides).
* MX targets that are IP literals are used as addresses; CNAME targets are
  followed as the nameserver's answer chains them. Private addresses are kept:
  the worker filters them with ``engine.mx.without_private`` per its config.
* Truncated UDP answers are retried over TCP and answers with a wrong query ID
  are ignored: both by dnspython's resolver loop.
"""

from __future__ import annotations

import asyncio
import math
import random
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.inet
import dns.message
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from engine.clock import Clock
from engine.config import DnsConfig
from engine.errors import DnsError, DnsPermanent, DnsTemporary
from engine.mx import (
    MxHost,
    Route,
    build_route,
    ip_literal,
    is_null_mx,
    order_addresses,
    order_mx,
    reshuffled,
    site_key,
)
from engine.net.memo import Memo

__all__ = ["MxResolver"]

TEMPORARY = "4.4.3"  # RFC 3463: directory server failure
NO_DOMAIN = "5.1.2"  # bad destination system address
NULL_MX = "5.1.10"  # RFC 7505
NO_ROUTE = "5.4.4"  # unable to route
LITERAL_TTL = 86400.0  # domain literals ([192.0.2.1]) need no lookup


@dataclass(frozen=True, slots=True)
class _Reply:
    """One DNS answer reduced to what routing needs."""

    records: tuple[Any, ...]  # dnspython rdata objects of the asked type
    ttl: float  # min TTL over the CNAME chain, or the negative TTL
    nxdomain: bool


@dataclass(frozen=True, slots=True)
class _HostAnswer:
    addresses: tuple[str, ...]
    expires: float
    temporary: bool  # some lookup failed in a way a retry may fix


def _fresh(error: DnsError) -> DnsError:
    """A new instance per raise: a cached exception would collect tracebacks."""
    return type(error)(str(error), domain=error.domain, enhanced=error.enhanced)


def _ascii_domain(domain: str) -> str:
    """The A-label form dnspython will query; a malformed domain is permanent 5.1.2."""
    text = domain.strip().rstrip(".")
    try:
        name = dns.name.from_text(text) if text else dns.name.root
    except (dns.exception.DNSException, UnicodeError, ValueError) as exc:
        raise DnsPermanent(
            f"invalid domain {domain!r}: {exc}", domain=domain, enhanced=NO_DOMAIN
        ) from None
    ascii_name = name.to_text(omit_final_dot=True).lower()
    if ascii_name in ("", "."):
        raise DnsPermanent(f"invalid domain {domain!r}", domain=domain, enhanced=NO_DOMAIN)
    return ascii_name


class MxResolver:
    """Routes for recipient domains: ``await resolver.route("example.com")``."""

    def __init__(self, config: DnsConfig, clock: Clock, rng: random.Random | None = None) -> None:
        self._config = config
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._resolver = self._make_resolver(config)
        self._routes: Memo[Route | DnsError] = Memo(clock, config.cache_size)
        self._hosts: Memo[_HostAnswer] = Memo(clock, config.cache_size)
        self._gate: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None

    @staticmethod
    def _make_resolver(config: DnsConfig) -> dns.asyncresolver.Resolver:
        try:
            resolver = dns.asyncresolver.Resolver(configure=config.nameserver is None)
        except dns.resolver.NoResolverConfiguration as exc:
            raise DnsError(f"no DNS resolver configured: {exc}") from None
        if config.nameserver is not None:
            host, port = config.nameserver
            host = "127.0.0.1" if host == "localhost" else host.strip("[]")
            if not dns.inet.is_address(host):
                raise ValueError(f"DnsConfig.nameserver must be an IP address, not {host!r}")
            resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port)]
        resolver.lifetime = config.timeout  # one lookup, all tries
        resolver.timeout = max(config.timeout / 3, 0.05)  # per try: a lost UDP packet is retried
        resolver.use_edns(0, 0, 1232)  # the DNS flag day 2020 payload size
        resolver.cache = None  # the caches here run on the injected clock
        return resolver

    def __repr__(self) -> str:
        return (
            f"<MxResolver routes={len(self._routes)} hosts={len(self._hosts)} "
            f"inflight={self._routes.inflight + self._hosts.inflight}>"
        )

    def cached(self, domain: str) -> Route | None:
        """A fresh cached route for an already normalised (lower-case A-label) domain, or None:
        the worker's hot path, which then needs no task and no name parsing."""
        outcome = self._routes.peek(domain)
        return outcome if isinstance(outcome, Route) else None

    def shared_name(self, domain: str) -> str | None:
        """The name under which ``domain``'s answer is shared with other workers (None: a
        domain literal or a malformed name, answered without DNS)."""
        if domain.startswith("["):
            return None
        try:
            return _ascii_domain(domain)
        except DnsPermanent:
            return None

    def answer(self, name: str) -> tuple[Route | DnsError, float] | None:
        """The cached outcome for a shared name and the seconds it stays fresh."""
        return self._routes.entry(name)

    def prime(self, name: str, outcome: Route | DnsError, ttl: float) -> Route | DnsError:
        """Cache another worker's answer as if looked up here (equal MX preferences reshuffled)."""
        expires = self._clock.monotonic() + ttl
        if isinstance(outcome, Route):
            outcome = replace(reshuffled(outcome, self._rng), expires=expires)
        self._routes.put(name, outcome, expires)
        return outcome

    async def route(self, domain: str) -> Route:
        """The delivery route for ``domain``; raises DnsTemporary or DnsPermanent."""
        hit = self.cached(domain)
        if hit is not None:
            return hit
        if domain.startswith("[") and (literal := ip_literal(domain)) is not None:
            host = MxHost(name=domain.lower(), preference=0, addresses=(literal,))
            expires = self._clock.monotonic() + LITERAL_TTL
            return Route(
                domain=domain.lower(), hosts=(host,), implicit=True, site=host.name, expires=expires
            )
        name = _ascii_domain(domain)
        outcome = await self._routes.get(name, partial(self._resolve_route, name))
        if isinstance(outcome, DnsError):
            raise _fresh(outcome)
        return outcome

    async def close(self) -> None:
        """Cancel lookups in flight and forget cached answers."""
        self._routes.clear()
        self._hosts.clear()

    async def _resolve_route(self, name: str) -> tuple[Route | DnsError, float]:
        now = self._clock.monotonic()
        try:
            mx = await self._lookup(name, dns.rdatatype.MX)
        except DnsTemporary as exc:
            return exc, now + self._config.temporary_ttl
        negative_until = now + min(mx.ttl, self._config.negative_ttl)
        if mx.nxdomain:
            return DnsPermanent(
                f"{name}: no such domain (NXDOMAIN)", domain=name, enhanced=NO_DOMAIN
            ), negative_until
        pairs = [(rd.preference, rd.exchange.to_text()) for rd in mx.records]
        if is_null_mx(pairs):
            null = DnsPermanent(
                f"{name}: null MX, the domain accepts no mail", domain=name, enhanced=NULL_MX
            )
            return null, negative_until
        if not pairs:
            return await self._implicit_route(name, now, now + mx.ttl)
        ordered = order_mx(pairs, self._rng)
        considered = ordered[: max(1, self._config.max_mx_hosts)]
        answers = await asyncio.gather(*(self._host(host) for _, host in considered))
        expires = min([now + mx.ttl, *(a.expires for a in answers)])
        addresses = {
            host: answer.addresses for (_, host), answer in zip(considered, answers, strict=True)
        }
        site = site_key(host for _, host in ordered)
        route = build_route(name, considered, addresses, implicit=False, site=site, expires=expires)
        if route.hosts:
            return route, expires
        if any(a.temporary for a in answers):
            error: DnsError = DnsTemporary(
                f"{name}: no MX host address could be resolved", domain=name, enhanced=TEMPORARY
            )
            return error, now + self._config.temporary_ttl
        error = DnsPermanent(f"{name}: no MX host has an address", domain=name, enhanced=NO_ROUTE)
        return error, min(expires, now + self._config.negative_ttl)

    async def _implicit_route(
        self, name: str, now: float, mx_expires: float
    ) -> tuple[Route | DnsError, float]:
        """RFC 5321 5.1: without MX records the domain itself is the mail host."""
        answer = await self._host(name)
        expires = min(mx_expires, answer.expires)
        if answer.addresses:
            host = MxHost(name=name, preference=0, addresses=answer.addresses)
            route = Route(
                domain=name, hosts=(host,), implicit=True, site=site_key([name]), expires=expires
            )
            return route, expires
        if answer.temporary:
            error: DnsError = DnsTemporary(
                f"{name}: address lookup failed", domain=name, enhanced=TEMPORARY
            )
            return error, now + self._config.temporary_ttl
        error = DnsPermanent(
            f"{name}: no MX and no address records", domain=name, enhanced=NO_DOMAIN
        )
        return error, min(expires, now + self._config.negative_ttl)

    async def _host(self, name: str) -> _HostAnswer:
        # An MX target written as an address violates RFC 5321 but is seen in the wild.
        literal = ip_literal(name)
        if literal is not None:
            return _HostAnswer(addresses=(literal,), expires=math.inf, temporary=False)
        return await self._hosts.get(name, partial(self._resolve_host, name))

    async def _resolve_host(self, name: str) -> tuple[_HostAnswer, float]:
        now = self._clock.monotonic()
        results = await asyncio.gather(
            self._lookup(name, dns.rdatatype.A),
            self._lookup(name, dns.rdatatype.AAAA),
            return_exceptions=True,
        )
        found: list[list[str]] = [[], []]
        expires: list[float] = []
        temporary = False
        for index, result in enumerate(results):
            if isinstance(result, DnsTemporary):
                temporary = True
                expires.append(now + self._config.temporary_ttl)
            elif isinstance(result, BaseException):
                raise result
            else:
                found[index] = [rd.address for rd in result.records]
                ttl = result.ttl if result.records else min(result.ttl, self._config.negative_ttl)
                expires.append(now + ttl)
        answer = _HostAnswer(order_addresses(found[0], found[1]), min(expires), temporary)
        return answer, answer.expires

    async def _lookup(self, name: str, rdtype: dns.rdatatype.RdataType) -> _Reply:
        """One question to the nameserver; DnsTemporary for anything a retry may fix."""
        kind = dns.rdatatype.to_text(rdtype)
        try:
            qname = dns.name.from_text(name)
            async with self._inflight_gate():  # the wait here does not count against the timeout
                answer = await self._resolver.resolve(
                    qname, rdtype, raise_on_no_answer=False, search=False
                )
        except dns.resolver.NXDOMAIN as exc:
            return _Reply(records=(), ttl=self._nxdomain_ttl(exc), nxdomain=True)
        except (dns.exception.DNSException, OSError, ValueError) as exc:
            raise DnsTemporary(
                f"{name}: {kind} lookup failed: {self._why(exc)}", domain=name, enhanced=TEMPORARY
            ) from None
        records = tuple(answer.rrset) if answer.rrset is not None else ()
        return _Reply(
            records=records, ttl=float(answer.chaining_result.minimum_ttl), nxdomain=False
        )

    def _inflight_gate(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._gate is None or self._gate[0] is not loop:
            self._gate = (loop, asyncio.Semaphore(max(1, self._config.max_inflight)))
        return self._gate[1]

    def _why(self, exc: BaseException) -> str:
        if isinstance(exc, dns.exception.Timeout):
            return f"timed out after {self._config.timeout:g}s"
        if isinstance(exc, dns.resolver.NoNameservers):
            return "SERVFAIL, REFUSED or unreachable nameserver"
        return str(exc) or type(exc).__name__

    def _nxdomain_ttl(self, exc: dns.resolver.NXDOMAIN) -> float:
        """RFC 2308 negative TTL from the SOA in the NXDOMAIN answer, capped by config."""
        ttls = []
        for response in exc.responses().values():
            try:
                ttls.append(float(response.resolve_chaining().minimum_ttl))
            except (dns.exception.DNSException, dns.message.ChainTooLong, AttributeError):
                continue
        return min([*ttls, self._config.negative_ttl])
