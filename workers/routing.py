"""Routes for a worker's domains: its own cache, then answers other workers published,
then its own lookups (published in turn). See engine/queue/routes.py for why.

A domain another worker is looking up is asked about again every ``poll`` seconds
until its answer is there or that worker's claim lapses (then it is ours to look up).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from engine.errors import DnsError, QueueError
from engine.mx import Route
from engine.net.resolver import MxResolver
from engine.queue.routes import MINE, Claim, Published, RouteStore

log = logging.getLogger("bulkmail.routing")

POLL = 0.05  # seconds between looks at domains another worker is resolving
PUBLISH_DELAY = 0.02  # seconds answers gather before one round trip publishes them
CLAIM_MARGIN = 1.0  # seconds a claim outlives the lookup's own timeout

Deliver = Callable[[str, Route | DnsError], None]


class FleetRoutes:
    def __init__(self, resolver: MxResolver, store: RouteStore | None, token: str, dns_timeout: float) -> None:
        self.resolver = resolver
        self.store = store  # None: every answer looked up here (DnsConfig.shared = false)
        self.token = token
        self.claim_seconds = dns_timeout + CLAIM_MARGIN
        self._answers: list[tuple[str, Route | DnsError, float]] = []
        self._publisher: asyncio.Task[None] | None = None
        self.taken = 0  # answers other workers published (counters for tests and logs)
        self.looked_up = 0

    def cached(self, domain: str) -> Route | None:
        return self.resolver.cached(domain)

    async def resolve(self, domains: Sequence[str], deliver: Deliver) -> None:
        """``deliver(domain, route or DNS error)`` once per domain, as soon as it is known."""
        shared: dict[str, list[str]] = {}
        local: list[str] = []
        for domain in domains:
            name = self.resolver.shared_name(domain) if self.store is not None else None
            if name is None:
                local.append(domain)
            else:
                shared.setdefault(name, []).append(domain)
        lookups = [asyncio.ensure_future(self._lookup(domain, None, deliver)) for domain in local]
        try:
            while shared:
                for name in list(shared):
                    entry = self.resolver.answer(name)
                    if entry is not None:  # answered here meanwhile (a sibling chunk's lookup)
                        for domain in shared.pop(name):
                            deliver(domain, entry[0])
                if not shared:
                    break
                claims = await self._claim(list(shared))
                waiting: dict[str, list[str]] = {}
                for name, claim in claims.items():
                    if isinstance(claim, Published):
                        outcome = self.resolver.prime(name, claim.outcome, claim.ttl)
                        self.taken += 1
                        for domain in shared[name]:
                            deliver(domain, outcome)
                    elif claim == MINE:
                        lookups.extend(asyncio.ensure_future(self._lookup(d, name, deliver)) for d in shared[name])
                    else:
                        waiting[name] = shared[name]
                shared = waiting
                if shared:
                    await asyncio.sleep(POLL)
            if lookups:
                await asyncio.gather(*lookups)
        finally:
            for task in lookups:
                task.cancel()

    async def _claim(self, names: list[str]) -> dict[str, Claim]:
        assert self.store is not None
        try:
            return await self.store.claim(names, self.token, self.claim_seconds)
        except QueueError as exc:
            log.warning("cannot read shared routes, looking up here: %s", exc)
            return dict.fromkeys(names, MINE)

    async def _lookup(self, domain: str, name: str | None, deliver: Deliver) -> None:
        try:
            outcome: Route | DnsError = await self.resolver.route(domain)
        except DnsError as exc:
            outcome = exc
        self.looked_up += 1
        deliver(domain, outcome)
        entry = self.resolver.answer(name) if name is not None else None
        if entry is not None and name is not None:
            self._answers.append((name, entry[0], entry[1]))
            if self._publisher is None:
                self._publisher = asyncio.ensure_future(self._publish())

    async def flush(self) -> None:
        """Publish what is waiting now (at shutdown: other workers need not look it up again)."""
        while self._publisher is not None:
            await self._publisher

    async def _publish(self) -> None:
        assert self.store is not None
        try:
            await asyncio.sleep(PUBLISH_DELAY)
            answers, self._answers = self._answers, []
            await self.store.publish(answers)
        except QueueError as exc:  # the other workers look up for themselves when the claims lapse
            log.warning("cannot publish routes: %s", exc)
        finally:
            self._publisher = None
            if self._answers:
                self._publisher = asyncio.ensure_future(self._publish())
