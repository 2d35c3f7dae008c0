"""One dispatcher per shaping bucket (a site: domains sharing an MX host set,
or a domain with its own limits): its queue of transactions, the connections
that drain it, and which MX host is usable.

Connections are persistent and pipelined: each keeps up to ``pipeline_depth``
transactions written ahead. Opening one takes a fleet-wide slot from Redis
(workers/policy.py), so the bucket's connection limit holds across workers;
rate limits are tokens from Redis too. A host that cannot be reached or
refuses the session is skipped for a while and the next MX in preference order
is used; when every host is down the whole backlog is deferred at once (and
the bucket marked down for the other workers) instead of one connection
attempt per recipient. Transactional mail goes to the front of the queue.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass

from engine.classify import Verdict, from_error, from_reply, is_too_many_recipients
from engine.clock import Clock
from engine.config import SmtpConfig
from engine.errors import BulkmailError, ConnectError
from engine.mx import MxHost, is_private_address
from engine.net.smtp_protocol import SmtpSession
from engine.net.tls import TlsContexts
from engine.outcome import BOUNCED, DEFERRED
from engine.queue.sites import SiteState
from engine.smtp.transaction import SessionLost, SessionRefused, TransactionResult
from engine.throttle import slow_down_reason
from workers.policy import SitePolicy
from workers.pools import HostPools, Pooled
from workers.settle import Settler
from workers.work import Unit

log = logging.getLogger("bulkmail.dispatch")

MAX_REQUEUES = 3  # connection failures before a unit is deferred instead of retried at once
PAUSED_RETRY = 60.0  # seconds: mail for a paused site comes back this often to look again
CONTENDED = 1.0  # seconds: another worker refused a slot this recently still wants one
CONTENDED_IDLE = 0.4  # seconds idle after which a connection gives its slot to such a worker


@dataclass(frozen=True, slots=True)
class Shared:
    """What every dispatcher of a worker uses."""

    pools: HostPools
    smtp: SmtpConfig
    tls: TlsContexts
    settler: Settler
    clock: Clock
    date: Callable[[], bytes]
    down_seconds: float


class SiteDispatcher:
    def __init__(self, bucket: str, hosts: tuple[MxHost, ...], policy: SitePolicy, shared: Shared) -> None:
        self.bucket = bucket
        self.hosts = hosts
        self.policy = policy
        self.shared = shared
        self.queue: deque[Unit] = deque()
        self.tasks: set[asyncio.Task[None]] = set()
        self.active: set[SmtpSession] = set()
        self.down_until: dict[str, float] = {}
        self.last_error: BaseException | None = None
        self.stopping = False
        self._delayed: asyncio.TimerHandle | None = None  # a spawn waiting for a refused slot
        self._opener: asyncio.Task[None] | None = None  # the task asking Redis for slots
        self._rechecking = False

    def __repr__(self) -> str:
        return f"<SiteDispatcher {self.bucket} [queued {len(self.queue)} | connections {len(self.tasks)}]>"

    def waiting(self) -> str:
        return f"opener={self._opener is not None} delayed={self._delayed is not None} hosts_down={self.down_until}"

    @property
    def backlog(self) -> int:
        return sum(len(unit.items) for unit in self.queue)

    # ---- queue --------------------------------------------------------------

    def enqueue(self, units: list[Unit]) -> None:
        """Queue one domain's units of one job together: the host, state and spawn checks run
        once for them, not once per recipient."""
        if self._live_host() is None:
            error = self.last_error or ConnectError(f"every MX host of {self.bucket} failed recently")
            for unit in units:
                self._fail(unit, error)
            return
        for unit in units:
            if unit.job.meta.priority == "transactional":
                self.queue.appendleft(unit)
            else:
                self.queue.append(unit)
        state = self.policy.state
        if state.paused or state.down_until > self.shared.clock.wall():
            # what we know says wait: ask Redis first (the operator may just have resumed or
            # retried the site), and let apply() defer the queue or send it
            self._recheck()
            return
        self._spawn()

    def _recheck(self) -> None:
        if not self._rechecking:
            self._rechecking = True
            self.policy.background(self._resync())

    async def _resync(self) -> None:
        try:
            self.apply(await self.policy.sync(self.backlog))
        finally:
            self._rechecking = False

    def apply(self, state: SiteState) -> None:
        """Fleet-wide state from the last sync: a pause or a 'down' mark empties the queue."""
        if state.paused and self.queue:
            verdict = Verdict(DEFERRED, 0, "4.3.2", f"site {self.bucket} paused by the operator")
            for unit in self._take_all():
                self._defer(unit, verdict)
        elif state.down_until > self.shared.clock.wall() and self.queue:
            error = self.last_error or ConnectError(f"every MX host of {self.bucket} failed recently")
            for unit in self._take_all():
                self._fail(unit, error)
        elif self.queue:
            self._spawn()
        elif self.contended():
            self.shared.pools.close_idle(self.bucket, asyncio.get_running_loop().time(), CONTENDED_IDLE)

    def contended(self) -> bool:
        """Another worker was refused a slot here just now: idle connections should not keep theirs
        (else its share of the mail waits for our idle timeout)."""
        if self.policy.reserve:  # the transactional worker keeps its few connections warm
            return False
        return self.policy.state.wanted > self.shared.clock.wall() - CONTENDED

    def take_jobs(self, job_ids: Collection[str]) -> list[Unit]:
        """Remove the queued units of these jobs (paused or cancelled meanwhile)."""
        taken = [unit for unit in self.queue if unit.job.job_id in job_ids]
        if taken:
            self.queue = deque(unit for unit in self.queue if unit.job.job_id not in job_ids)
        return taken

    def abandon(self) -> list[Unit]:
        """Draining: hand back what was never started (its recipients are released)."""
        self.stopping = True
        return self._take_all()

    def abort_connections(self) -> None:
        """Drain timeout: cut the sessions; pending transactions fail as SessionLost and
        those past their end of data are deferred with possible_duplicate."""
        for session in list(self.active):
            session.abort()

    def _take_all(self) -> list[Unit]:
        units = list(self.queue)
        self.queue.clear()
        return units

    def _fail(self, unit: Unit, error: BaseException, mx: str = "") -> None:
        verdict = from_error(error)
        for item in unit.live_items():
            self.shared.settler.settle(unit.job, item, verdict, mx, bucket=self.bucket)

    def _defer(self, unit: Unit, verdict: Verdict) -> None:
        for item in unit.live_items():
            self.shared.settler.settle(unit.job, item, verdict, bucket=self.bucket, attempted=False, retry_in=PAUSED_RETRY)

    # ---- hosts --------------------------------------------------------------

    def _live_host(self) -> MxHost | None:
        """The most preferred MX host not skipped after a failure (None: every one is down)."""
        if self.down_until:
            now = self.shared.clock.monotonic()
            self.down_until = {name: t for name, t in self.down_until.items() if t > now}
        for host in self.hosts:
            if host.name not in self.down_until:
                return host
        return None

    def _host_failed(self, host: MxHost, error: BaseException) -> None:
        log.info("MX %s for %s unusable: %s", host.name, self.bucket, error)
        self.down_until[host.name] = self.shared.clock.monotonic() + self.shared.down_seconds
        self.last_error = error
        if isinstance(error, SessionRefused):
            reason = slow_down_reason(error.reply)
            if reason:
                self.policy.slow_down(reason)
        if self._live_host() is None:
            until = self.shared.clock.wall() + self.shared.down_seconds
            self.policy.background(self.policy.store.mark_down(self.bucket, until, f"{host.name}: {error}"[:200]))
            for unit in self._take_all():
                self._fail(unit, error, host.name)

    # ---- connections --------------------------------------------------------

    def _spawn(self) -> None:
        """Put idle sessions to work at once; ask for new slots one at a time (the opener):
        a burst of slot requests from every site would starve the Redis connection pool."""
        if self.stopping:
            return
        loop = asyncio.get_running_loop()
        while self._wants_connection():
            host = self._live_host()
            if host is None:
                return
            key = self._key(host)
            entry = self.shared.pools.take_idle(key)
            if entry is None:
                break
            self._start(loop.create_task(self._connection(host, key, entry)))
        if self._wants_connection() and self._opener is None and self._delayed is None:
            self._opener = loop.create_task(self._open_more())

    def _wants_connection(self) -> bool:
        return bool(self.queue) and len(self.queue) > len(self.tasks) and len(self.tasks) < max(
            self.policy.state.connections, 1
        )

    def _key(self, host: MxHost) -> str:
        return f"{self.bucket}|{host.name}:{self.shared.smtp.port}"

    def _start(self, task: asyncio.Task[None]) -> None:
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _open_more(self) -> None:
        """Take fleet-wide slots one by one while the backlog wants more connections."""
        pools = self.shared.pools
        try:
            while self._wants_connection() and not self.stopping:
                host = self._live_host()
                if host is None:
                    return
                key = self._key(host)
                if not pools.reserve(key):
                    return  # at the per-process host cap; a finishing connection spawns again
                slot, wait, why = await self.policy.acquire_connection()
                if slot is None:
                    pools.unreserve(key)
                    if why in ("paused", "down"):
                        self.apply(await self.policy.sync(self.backlog))
                    else:
                        self._spawn_later(wait)
                    return
                self._start(asyncio.get_running_loop().create_task(self._connection(host, key, None, slot)))
        except Exception:  # QueueError while syncing, or a bug: try again later rather than strand the queue
            log.exception("opening connections for %s failed", self.bucket)
            self._spawn_later(1.0)
        finally:
            self._opener = None

    def _spawn_later(self, seconds: float) -> None:
        """A slot was refused: ask again after ``seconds`` (a flag, not a time compare: timers
        may fire a fraction of a millisecond early, and a missed spawn would strand the queue)."""
        if self._delayed is None:
            self._delayed = asyncio.get_running_loop().call_later(seconds, self._spawn_again)

    def _spawn_again(self) -> None:
        self._delayed = None
        self._spawn()

    async def _connection(self, host: MxHost, key: str, entry: Pooled | None, slot: str = "") -> None:
        pools = self.shared.pools
        try:
            if entry is None:
                try:
                    session = await self._open(host)
                except (BulkmailError, OSError) as exc:
                    pools.unreserve(key)
                    self.policy.release_connection(slot)
                    self._host_failed(host, exc)
                    return
                pools.opened += 1
                limits = self.policy.limits
                entry = Pooled(session, slot, self.policy.release_connection, limits.idle_timeout,
                               limits.max_messages_per_connection)  # fmt: skip
            self.active.add(entry.session)
            await self._pump(entry.session)
        except Exception as exc:  # a bug must not strand the queue: log it, drop the session
            log.exception("connection to %s for %s failed unexpectedly", host.name, self.bucket)
            if entry is not None:
                entry.session.abort()
            self._host_failed(host, exc)
        finally:
            if entry is not None:
                self.active.discard(entry.session)
                pools.park(key, entry)
            if self.queue and not self.stopping:
                asyncio.get_running_loop().call_soon(self._spawn)

    async def _open(self, host: MxHost) -> SmtpSession:
        smtp = self.shared.smtp
        last: BaseException = ConnectError(f"MX {host.name} has no address")
        for address in host.addresses:
            if not smtp.allow_private_mx and is_private_address(address):
                last = ConnectError(
                    f"MX {host.name} resolves to private address {address}; refused (see --allow-private-mx)"
                )
                continue
            try:
                return await SmtpSession.connect(
                    address, smtp.port, server_name=host.name, config=smtp,
                    ssl_context=self.shared.tls.get(smtp.tls_policy),
                )  # fmt: skip
            except ConnectError as exc:
                last = exc
        raise last

    async def _pump(self, session: SmtpSession) -> None:
        pending: deque[tuple[Unit, asyncio.Future[TransactionResult]]] = deque()
        depth = max(1, self.shared.smtp.pipeline_depth)
        max_msgs = self.policy.limits.max_messages_per_connection
        while True:
            while len(pending) < depth and self.queue and not self.stopping and session.usable:
                if session.transactions >= max_msgs:
                    break
                if self.policy.rate_limited:
                    await self.policy.take_token()
                    if not self.queue:
                        break
                unit = self.queue.popleft()
                submitted = self._submit(session, unit)
                if submitted is not None:
                    pending.append((unit, submitted))
            if not pending:
                return
            unit, future = pending.popleft()
            try:
                result = await future
            except SessionLost as lost:
                self._lost(unit, lost, session.server_name)
                continue
            except (BulkmailError, OSError) as exc:
                self._lost(unit, SessionLost(exc), session.server_name)
                continue
            self._done(unit, result, session.server_name)

    def _submit(self, session: SmtpSession, unit: Unit) -> asyncio.Future[TransactionResult] | None:
        unit.items = unit.live_items()
        if not unit.items:
            return None
        try:
            txn = unit.job.transaction(unit, unit.items, self.shared.date())
        except (BulkmailError, ValueError, UnicodeError) as exc:
            verdict = Verdict(BOUNCED, 0, "5.6.0", f"message could not be built: {exc}")
            for item in unit.items:
                self.shared.settler.settle(unit.job, item, verdict, bucket=self.bucket, attempted=False)
            return None
        return session.submit(txn)

    def _lost(self, unit: Unit, lost: SessionLost, mx: str) -> None:
        reason = slow_down_reason(lost.reply)
        if reason:
            self.policy.slow_down(reason)
        settle = self.shared.settler.settle
        if lost.unsure:
            verdict = from_reply(lost.reply, False) if lost.reply else from_error(lost)
            for item in unit.live_items():
                settle(unit.job, item, verdict, mx, bucket=self.bucket, unsure=True)
            return
        unit.requeues += 1
        if unit.requeues > MAX_REQUEUES:
            verdict = from_reply(lost.reply, False) if lost.reply else from_error(lost.reason or lost)
            for item in unit.live_items():
                settle(unit.job, item, verdict, mx, bucket=self.bucket)
        else:
            self.queue.appendleft(unit)

    def _done(self, unit: Unit, result: TransactionResult, mx: str) -> None:
        again = []
        delivered = 0
        for item, rcpt in zip(unit.items, result.recipients, strict=True):
            if is_too_many_recipients(rcpt.reply) and unit.requeues < MAX_REQUEUES:
                again.append(item)
                continue
            if rcpt.delivered:
                delivered += 1
            else:
                reason = slow_down_reason(rcpt.reply)
                if reason:
                    self.policy.slow_down(reason)
            if not item.held.lost:
                self.shared.settler.settle(unit.job, item, from_reply(rcpt.reply, rcpt.delivered), mx, bucket=self.bucket)
        if delivered:
            self.policy.delivered(delivered)
        if again:
            self.queue.appendleft(Unit(unit.job, unit.domain, again, unit.requeues + 1))
