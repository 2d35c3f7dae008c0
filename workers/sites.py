"""The worker's site dispatchers by shaping bucket, and how a domain's recipients reach one
(or, when its route cannot be had, their DNS outcome): the bucket from the shaping rules, transactions of one recipient each (several
only when every recipient gets the same bytes)."""

from __future__ import annotations

import logging

from engine.classify import from_error
from engine.config import ShapingConfig
from engine.errors import DnsError, DnsTemporary
from engine.mx import Route
from engine.queue.sites import SitesStore
from engine.shaping import resolve
from workers.dispatcher import Shared, SiteDispatcher
from workers.jobs import JobContext
from workers.policy import SitePolicy
from workers.routing import FleetRoutes
from workers.work import Item, Unit

log = logging.getLogger("bulkmail.worker")


class Sites(dict[str, SiteDispatcher]):
    def __init__(self, shaping: ShapingConfig, store: SitesStore, token: str, reserve: int, shared: Shared) -> None:
        super().__init__()
        self.shaping = shaping
        self.store = store
        self.token = token
        self.reserve = reserve  # connections beyond a site's limit (the transactional worker's)
        self.shared = shared

    def dispatch(self, job: JobContext, domain: str, items: list[Item], route: Route) -> None:
        bucket, limits = resolve(self.shaping, route.site, tuple(h.name for h in route.hosts), domain)
        site = self.get(bucket)
        if site is None:
            policy = SitePolicy(bucket, limits, self.store, self.token, self.reserve)
            site = self[bucket] = SiteDispatcher(bucket, route.hosts, policy, self.shared)
        else:
            site.hosts = route.hosts
        per_txn = max(limits.max_recipients_per_transaction if job.template.identical and not job.verp else 1, 1)
        site.enqueue([Unit(job, domain, items[start : start + per_txn]) for start in range(0, len(items), per_txn)])

    async def route(self, job: JobContext, unrouted: dict[str, list[Item]], routes: FleetRoutes) -> None:
        """Dispatch each domain's recipients as soon as its route is known."""
        settle = self.shared.settler.settle

        def deliver(domain: str, outcome: Route | DnsError) -> None:
            items = unrouted.pop(domain)
            if isinstance(outcome, Route):
                self.dispatch(job, domain, items, outcome)
                return
            verdict = from_error(outcome)
            for item in items:
                settle(job, item, verdict, bucket=f"dns:{domain}")

        try:
            await routes.resolve(list(unrouted), deliver)
        except Exception as exc:  # a bug: defer what is left, never strand items
            log.exception("routing %s failed unexpectedly", ", ".join(list(unrouted)[:5]))
            for domain in list(unrouted):
                deliver(domain, DnsTemporary(f"{domain}: routing failed: {exc}", domain=domain, enhanced="4.4.3"))
