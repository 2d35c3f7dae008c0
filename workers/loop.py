"""WorkerLoop: one worker process's work cycle.

claim chunks (block on the wake list when there is nothing) -> group their
recipients by domain -> resolve MX -> hand transactions to the site's
dispatcher -> outcomes go to the reporter. Beside it: a heartbeat that renews
our leases, and maintenance that takes back expired leases of dead workers
and promotes retries that are due. ``drain()`` is the SIGTERM path.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import random
from collections import defaultdict
from dataclasses import dataclass

from redis.asyncio import Redis

from engine.classify import Verdict
from engine.clock import Clock
from engine.config import EngineConfig
from engine.errors import CorruptData, QueueError
from engine.net.resolver import MxResolver
from engine.net.tls import TlsContexts
from engine.outcome import CANCELLED, EXPIRED, SUPPRESSED
from engine.queue.routes import RouteStore
from engine.queue.sites import SitesStore
from engine.queue.store import ClaimedChunk, QueueStore
from engine.queue.suppression import Suppressed, SuppressionList
from workers.dispatcher import Shared
from workers.jobs import JobCache, JobContext
from workers.pools import HostPools
from workers.reporter import Reporter
from workers.routing import FleetRoutes
from workers.settle import Settler
from workers.sites import Sites
from workers.work import Held, Item

log = logging.getLogger("bulkmail.worker")

SITE_SYNC = 0.5  # seconds between syncs of each active bucket with Redis
JOB_WATCH = 0.5  # seconds between looks at the state of jobs with mail waiting here
RESERVED_FOR_TRANSACTIONAL = 2  # connections a transactional worker may open beyond a site's limit


@dataclass(slots=True)
class Counters:
    claimed_chunks: int = 0
    recipients: int = 0
    maintenance_runs: int = 0


class WorkerLoop:
    def __init__(
        self,
        config: EngineConfig,
        store: QueueStore,
        blocking: Redis,
        resolver: MxResolver,
        clock: Clock,
        token: str,
        rng: random.Random | None = None,
        lanes: tuple[str, ...] = ("transactional", "bulk"),
    ) -> None:
        self.lanes = lanes
        self.config = config
        self.store = store
        self.blocking = blocking
        self.resolver = resolver
        self.clock = clock
        self.token = token
        self.outstanding = 0
        self.suppression = SuppressionList(store.redis, config.queue.namespace, clock)
        self.reporter = Reporter(store, config.queue, clock, self._settled, self.suppression)
        self.settler = Settler(self.reporter, config.retry, clock, rng or random.Random())
        smtp = config.smtp
        self.pools = HostPools(smtp.max_conns_per_mx)
        self.jobs = JobCache(store, config.retry, smtp.helo, config.bounce)
        self.site_store = SitesStore(store.redis, store.keys, clock, config.shaping.adaptive)
        route_store = RouteStore(store.redis, store.keys) if config.dns.shared else None
        self.routes = FleetRoutes(resolver, route_store, token, config.dns.timeout)
        self.shared = Shared(
            pools=self.pools,
            smtp=smtp,
            tls=TlsContexts(smtp.ca_file),
            settler=self.settler,
            clock=clock,
            date=self.date,
            down_seconds=min(60.0, config.retry.base),
        )
        reserve = RESERVED_FOR_TRANSACTIONAL if lanes == ("transactional",) else 0
        self.sites = Sites(config.shaping, self.site_store, token, reserve, self.shared)
        self.counters = Counters()
        self._capacity = asyncio.Event()
        self._stopping = asyncio.Event()
        self._closing = False  # run() is ending: the background loops leave at their next turn
        self._routing: set[asyncio.Task[None]] = set()
        self._background: list[asyncio.Task[None]] = []
        self._date_second = -1
        self._date = b""

    def describe(self) -> str:
        """What this worker holds and why it waits (logged on SIGUSR1)."""
        lines = [
            f"outstanding {self.outstanding}/{self.config.queue.window}, held chunks {len(self.reporter.held)}, "
            f"unreported {self.reporter.unreported}, routing tasks {len(self._routing)}",
            "loops: " + ", ".join(
                f"{t.get_name()}={'running' if not t.done() else repr(t.exception()) if not t.cancelled() else 'cancelled'}"
                for t in self._background
            ),
        ]
        for site in self.sites.values():
            if site.queue or site.tasks or site.policy.slots:
                lines.append(
                    f"  {site!r} {site.policy!r} state={site.policy.state} {site.waiting()}"
                )
        return "\n".join(lines)

    # ---- accounting ---------------------------------------------------------

    def _settled(self, count: int) -> None:
        self.outstanding -= count
        if self.outstanding < self.config.queue.window:
            self._capacity.set()

    def date(self) -> bytes:
        """The Date header value, formatted once per second."""
        now = self.clock.wall()
        if int(now) != self._date_second:
            self._date_second = int(now)
            self._date = email.utils.formatdate(now, usegmt=True).encode()
        return self._date

    # ---- main loops ---------------------------------------------------------

    async def run(self) -> None:
        background = self._background = [
            asyncio.create_task(self.reporter.run(), name="reporter"),
            asyncio.create_task(self._heartbeat(), name="heartbeat"),
            asyncio.create_task(self._maintenance(), name="maintenance"),
            asyncio.create_task(self._site_sync(), name="site-sync"),
            asyncio.create_task(self._watch_jobs(), name="job-watch"),
        ]
        try:
            await asyncio.gather(*(self._claim_loop(lane) for lane in self.lanes))
            await self.drain()
        finally:
            await self._close(background)

    async def _close(self, background: list[asyncio.Task[None]]) -> None:
        """End the background loops. Each also checks ``_closing`` at the top of its loop, because
        a cancel can be lost: on Python 3.11 ``asyncio.wait_for`` returns the result instead of
        raising when the cancel lands while its inner task is finishing (CPython gh-86296, fixed
        in 3.12), and redis-py sends every command through ``wait_for`` (socket_timeout). A loop
        caught there carried on, and ``run()`` never returned."""
        self._closing = True
        self.reporter.close()
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)

    def stop(self) -> None:
        self._stopping.set()
        self._capacity.set()

    async def _claim_loop(self, lane: str = "bulk") -> None:
        """Bulk work fills a window of ``queue.window`` recipients; transactional mail has a
        claimer of its own that never waits for that window (it blocks on its own wake list)."""
        queue = self.config.queue
        backoff = 0.05
        while not self._stopping.is_set():
            if lane == "bulk" and self.outstanding >= queue.window:
                self._capacity.clear()
                await self._capacity.wait()
                continue
            room = max(1, (queue.window - self.outstanding) // max(queue.chunk_size, 1))
            try:
                chunks = await self.store.claim(self.token, min(room, queue.claim_chunks), (lane,))
                if not chunks:
                    await self._idle_wait(lane)
                backoff = 0.05
            except QueueError as exc:
                log.warning("claim failed: %s (retrying in %.1fs)", exc, backoff)
                await self._pause(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            for chunk in chunks:
                self._take(chunk)

    async def _idle_wait(self, lane: str) -> None:
        waiter = asyncio.create_task(self.store.wait_for_work(self.blocking, 1.0, lane))
        stopper = asyncio.create_task(self._stopping.wait())
        _, pending = await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        if waiter.done() and not waiter.cancelled() and waiter.exception() is not None:
            raise waiter.exception()  # type: ignore[misc]

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _heartbeat(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.config.queue.heartbeat)
            sent = list(self.reporter.held.values())
            try:
                lost = set(await self.store.heartbeat(self.token, [held.claimed for held in sent]))
            except QueueError as exc:
                log.warning("heartbeat failed: %s", exc)
                continue
            for held in sent:
                if held.key not in lost or held.remaining == 0:
                    continue  # finished while the heartbeat was on its way: not a loss
                log.warning("lease on %s lost", held.key)
                self.reporter.forget(held)

    async def _site_sync(self) -> None:
        """Send deliveries and slow-down signals, bring back fleet-wide limits, renew slots."""
        while not self._closing:
            await asyncio.sleep(SITE_SYNC)
            try:
                for site in list(self.sites.values()):
                    policy = site.policy
                    stale = policy.state.paused or policy.state.down_until  # must learn when it ends
                    if site.queue or site.tasks or policy.successes or policy.signal or policy.slots or stale:
                        site.apply(await policy.sync(site.backlog))
                await self.site_store.renew(
                    [(site.bucket, slot) for site in self.sites.values() for slot in site.policy.slots]
                )
            except QueueError as exc:
                log.warning("site sync failed: %s", exc)

    async def _watch_jobs(self) -> None:
        """A job paused or cancelled while its mail waits here: hand it back / cancel it now,
        instead of sending a whole window of it first."""
        while not self._closing:
            await asyncio.sleep(JOB_WATCH)
            waiting = {unit.job.job_id for site in self.sites.values() for unit in site.queue}
            if not waiting:
                continue
            try:
                states = await self.store.job_states(sorted(waiting))
            except QueueError:
                continue
            stopped = {job: state for job, state in states.items() if state in ("paused", "cancelled")}
            for site in self.sites.values() if stopped else ():
                for unit in site.take_jobs(stopped):
                    for item in unit.live_items():
                        if stopped[unit.job.job_id] == "cancelled":
                            verdict = Verdict(CANCELLED, 0, "", "job cancelled by the operator")
                            self.settler.settle(unit.job, item, verdict, bucket=site.bucket, attempted=False)
                        else:
                            self.settler.hand_back(item)

    async def _maintenance(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closing:
            await asyncio.sleep(self.config.queue.reap_interval)
            self.pools.sweep(loop.time())
            try:
                await self.store.reap()
                await self.store.promote()
            except QueueError as exc:
                log.warning("maintenance failed: %s", exc)
            self.counters.maintenance_runs += 1

    # ---- routing ------------------------------------------------------------

    def _take(self, chunk: ClaimedChunk) -> None:
        """Hold the chunk now; read its job, suppressions and routes in a task of its own,
        so the claimer goes straight back to claiming."""
        self.counters.claimed_chunks += 1
        held = Held(chunk, remaining=len(chunk.records))
        self.outstanding += held.remaining
        self.counters.recipients += held.remaining
        self.reporter.hold(held)
        if chunk.records:
            task = asyncio.create_task(self._prepare(chunk, held))
            self._routing.add(task)
            task.add_done_callback(self._routing.discard)

    async def _prepare(self, chunk: ClaimedChunk, held: Held) -> None:
        try:
            job = await self._job(chunk.job_id)
            if job is None:
                raise QueueError(f"job {chunk.job_id} has no metadata")
        except CorruptData as exc:  # no worker can ever send it: out of circulation at once
            await self._quarantine(held, str(exc))
            return
        except Exception:
            # A job we cannot read (corrupt template, missing meta) must not be held forever:
            # stop renewing its lease; after queue.max_claims such leases it is quarantined.
            log.exception("chunk %s cannot be worked on; its lease will lapse", chunk.key)
            self.reporter.forget(held)
            return
        self._split(job, chunk, held, await self._suppressed(job, chunk))

    def _split(self, job: JobContext, chunk: ClaimedChunk, held: Held, suppressed: dict[str, Suppressed]) -> None:
        """Expired and suppressed recipients are decided here; the rest go to routing by domain."""
        now = self.clock.wall()
        by_domain: dict[str, list[Item]] = defaultdict(list)
        for record in chunk.records:
            item = Item(held, record)
            if now >= job.expires_at:
                verdict = Verdict(EXPIRED, 0, "4.4.7", "message expired in the queue (max_age reached)", "expired")
                self.settler.settle(job, item, verdict, attempted=False)
            elif record.to in suppressed:
                entry = suppressed[record.to]
                verdict = Verdict(SUPPRESSED, 0, "5.7.1", f"suppressed ({entry.source}): {entry.reason}",
                                  entry.category, "recipient", permanent=True)  # fmt: skip
                self.settler.settle(job, item, verdict, attempted=False)
            else:
                by_domain[record.domain].append(item)
        unrouted: dict[str, list[Item]] = {}
        for domain, items in by_domain.items():
            route = self.routes.cached(domain)
            if route is not None:
                self.sites.dispatch(job, domain, items, route)
            else:
                unrouted[domain] = items
        if unrouted:
            task = asyncio.create_task(self.sites.route(job, unrouted, self.routes))
            self._routing.add(task)
            task.add_done_callback(self._routing.discard)

    async def _suppressed(self, job: JobContext, chunk: ClaimedChunk) -> dict[str, Suppressed]:
        """Addresses of this chunk on the sender domain's suppression list (one round trip)."""
        while True:
            try:
                return await self.suppression.check(job.sender_domain, [r.to for r in chunk.records])
            except QueueError as exc:
                log.warning("cannot read the suppression list: %s", exc)
                await self._pause(1.0)

    async def _job(self, job_id: str) -> JobContext | None:
        while True:
            try:
                return await self.jobs.get(job_id)
            except CorruptData:
                raise
            except QueueError as exc:
                log.warning("cannot read job %s: %s", job_id, exc)
                await self._pause(1.0)

    async def _quarantine(self, held: Held, reason: str) -> None:
        """A chunk no worker can send (its job's template is unreadable): quarantined with its
        reason on the first claim, instead of after max_claims lapsed leases."""
        log.error("chunk %s quarantined: %s", held.key, reason)
        self.reporter.forget(held)
        while not self._stopping.is_set():
            try:
                await self.store.quarantine(held.claimed, reason)
                return
            except QueueError as exc:  # Redis down: retry; if we stop first, the lease runs out
                log.warning("cannot quarantine %s yet: %s", held.key, exc)
                await self._pause(1.0)

    # ---- shutdown -----------------------------------------------------------

    async def drain(self) -> None:
        """Finish in-flight transactions (bounded), report, hand back the rest."""
        timeout = self.config.worker.drain_timeout
        for task in list(self._routing):
            task.cancel()
        for site in self.sites.values():
            site.abandon()
        connections = [task for site in self.sites.values() for task in site.tasks]
        if connections:
            _, late = await asyncio.wait(connections, timeout=timeout)
            if late:
                for site in self.sites.values():
                    site.abort_connections()
                _, late = await asyncio.wait(late, timeout=1.0)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        for _ in range(20):
            if await self.reporter.flush() and not self.reporter.unreported:
                break
        try:
            await self.store.release([held.claimed for held in self.reporter.held.values()])
        except QueueError as exc:
            log.warning("could not release leases (they expire by themselves): %s", exc)
        await self.pools.close_all()
        await self.routes.flush()
        for site in self.sites.values():
            await site.policy.flush()
