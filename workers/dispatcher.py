"""One dispatcher per site (domains sharing an MX host set): its queue of
transactions, the connections that drain it, and which MX host is usable.

Connections are persistent and pipelined: each keeps up to
``pipeline_depth`` transactions written ahead. A host that cannot be reached
or refuses the session is skipped for a while and the next MX in preference
order is used; when every host is down the whole site's backlog is deferred
at once instead of one connection attempt per recipient.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

from engine.net.smtp_protocol import SmtpSession

from engine.classify import Verdict, from_error, from_reply, is_too_many_recipients
from engine.clock import Clock
from engine.config import SmtpConfig
from engine.errors import BulkmailError, ConnectError
from engine.mx import MxHost, is_private_address
from engine.outcome import BOUNCED
from engine.smtp.transaction import SessionLost, TransactionResult
from workers.pools import HostPools
from workers.settle import Settler
from workers.work import Unit

log = logging.getLogger("bulkmail.dispatch")

MAX_REQUEUES = 3  # connection failures before a unit is deferred instead of retried at once


class SiteDispatcher:
    def __init__(
        self,
        site: str,
        hosts: tuple[MxHost, ...],
        *,
        pools: HostPools,
        smtp: SmtpConfig,
        settler: Settler,
        clock: Clock,
        date: Callable[[], bytes],
        down_seconds: float,
    ) -> None:
        self.site = site
        self.hosts = hosts
        self.pools = pools
        self.smtp = smtp
        self.settler = settler
        self.clock = clock
        self.date = date
        self.down_seconds = down_seconds
        self.queue: deque[Unit] = deque()
        self.tasks: set[asyncio.Task[None]] = set()
        self.active: set[SmtpSession] = set()
        self.down_until: dict[str, float] = {}
        self.last_error: BaseException | None = None
        self.stopping = False

    def __repr__(self) -> str:
        return f"<SiteDispatcher {self.site} [queued {len(self.queue)} | connections {len(self.tasks)}]>"

    # ---- queue --------------------------------------------------------------

    def enqueue(self, unit: Unit) -> None:
        if self._live_host() is None:
            self._fail(unit, self.last_error or ConnectError(f"no usable MX host for {self.site}"))
            return
        self.queue.append(unit)
        self._spawn()

    def abandon(self) -> list[Unit]:
        """Draining: hand back what was never started (its recipients are released)."""
        self.stopping = True
        units = list(self.queue)
        self.queue.clear()
        return units

    def abort_connections(self) -> None:
        """Drain timeout: cut the sessions; pending transactions fail as SessionLost and
        those past their end of data are deferred with possible_duplicate."""
        for session in list(self.active):
            session.abort()

    def _fail(self, unit: Unit, error: BaseException, mx: str = "") -> None:
        verdict = from_error(error)
        for item in unit.live_items():
            self.settler.settle(unit.job, item, verdict, mx)

    # ---- hosts --------------------------------------------------------------

    def _live_host(self) -> MxHost | None:
        now = self.clock.monotonic()
        for host in self.hosts:
            if self.down_until.get(host.name, 0.0) <= now:
                return host
        return None

    def _host_failed(self, host: MxHost, error: BaseException) -> None:
        log.info("MX %s for %s unusable: %s", host.name, self.site, error)
        self.down_until[host.name] = self.clock.monotonic() + self.down_seconds
        self.last_error = error
        if self._live_host() is None:
            backlog = list(self.queue)
            self.queue.clear()
            for unit in backlog:
                self._fail(unit, error, host.name)

    def _pool_key(self, host: MxHost) -> str:
        return f"{host.name}:{self.smtp.port}"

    # ---- connections --------------------------------------------------------

    def _spawn(self) -> None:
        while self.queue and not self.stopping and len(self.queue) > len(self.tasks):
            host = self._live_host()
            if host is None:
                return
            key = self._pool_key(host)
            session = self.pools.take_idle(key)
            if session is None and not self.pools.reserve(key):
                return  # at the host's connection cap; a finishing connection re-spawns
            task = asyncio.get_running_loop().create_task(self._connection(host, key, session))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _connection(self, host: MxHost, key: str, session: SmtpSession | None) -> None:
        try:
            if session is None:
                try:
                    session = await self._open(host)
                except (BulkmailError, OSError) as exc:
                    self.pools.unreserve(key)
                    self._host_failed(host, exc)
                    return
                self.pools.opened += 1
            self.active.add(session)
            await self._pump(session)
        finally:
            if session is not None:
                self.active.discard(session)
                self.pools.park(key, session)
            if self.queue and not self.stopping:
                asyncio.get_running_loop().call_soon(self._spawn)

    async def _open(self, host: MxHost) -> SmtpSession:
        last: BaseException = ConnectError(f"MX {host.name} has no address")
        for address in host.addresses:
            if not self.smtp.allow_private_mx and is_private_address(address):
                last = ConnectError(
                    f"MX {host.name} resolves to private address {address}; refused (see --allow-private-mx)"
                )
                continue
            try:
                return await SmtpSession.connect(address, self.smtp.port, server_name=host.name, config=self.smtp)
            except ConnectError as exc:
                last = exc
        raise last

    async def _pump(self, session: SmtpSession) -> None:
        pending: deque[tuple[Unit, asyncio.Future[TransactionResult]]] = deque()
        depth = max(1, self.smtp.pipeline_depth)
        while True:
            while (
                len(pending) < depth
                and self.queue
                and not self.stopping
                and session.usable
                and session.transactions < self.pools.max_msgs
            ):
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
            txn = unit.job.transaction(unit, unit.items, self.date())
        except (BulkmailError, ValueError, UnicodeError) as exc:
            verdict = Verdict(BOUNCED, 0, "5.6.0", f"message could not be built: {exc}")
            for item in unit.items:
                self.settler.settle(unit.job, item, verdict, attempted=False)
            return None
        return session.submit(txn)

    def _lost(self, unit: Unit, lost: SessionLost, mx: str) -> None:
        if lost.unsure:
            verdict = from_reply(lost.reply, False) if lost.reply else from_error(lost)
            for item in unit.live_items():
                self.settler.settle(unit.job, item, verdict, mx, unsure=True)
            return
        unit.requeues += 1
        if unit.requeues > MAX_REQUEUES:
            verdict = from_reply(lost.reply, False) if lost.reply else from_error(lost.reason or lost)
            for item in unit.live_items():
                self.settler.settle(unit.job, item, verdict, mx)
        else:
            self.queue.appendleft(unit)

    def _done(self, unit: Unit, result: TransactionResult, mx: str) -> None:
        again = []
        for item, rcpt in zip(unit.items, result.recipients, strict=True):
            if is_too_many_recipients(rcpt.reply) and unit.requeues < MAX_REQUEUES:
                again.append(item)
                continue
            if item.held.lost:
                continue
            self.settler.settle(unit.job, item, from_reply(rcpt.reply, rcpt.delivered), mx)
        if again:
            self.queue.appendleft(Unit(unit.job, unit.domain, again, unit.requeues + 1))
