"""A worker's view of one shaping bucket: its limits, and the fleet-wide state in Redis.

Connection slots and rate tokens come from Redis (engine/queue/sites.py) so
limits hold across processes; tokens are taken in small batches to keep Redis
off the per-message path. Deliveries and 'slow down' signals are counted here
and sent with the periodic sync, which brings back the adaptive limits.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Coroutine
from typing import Any

from engine.config import Limits
from engine.errors import QueueError
from engine.queue.sites import SitesStore, SiteState

log = logging.getLogger("bulkmail.policy")

TOKEN_BATCH = 20  # rate tokens fetched at once per bucket


class SitePolicy:
    def __init__(self, bucket: str, limits: Limits, store: SitesStore, token: str, reserve: int = 0) -> None:
        self.reserve = reserve  # slots beyond the limit this worker may take (transactional workers)
        self.bucket = bucket
        self.limits = limits
        self.store = store
        self.token = token
        self.rate_limited = bool(limits.rate_windows())
        self.state = SiteState(limits.initial_connections, 1.0, False, 0.0)
        self.slots: set[str] = set()
        self._ids = itertools.count()
        self._tokens = 0
        self._token_lock = asyncio.Lock()
        self.successes = 0
        self.signal = ""
        self.refused: tuple[str, float] = ("", 0.0)  # the last refusal of a slot, for describe()
        self._background: set[asyncio.Task[Any]] = set()

    def __repr__(self) -> str:
        return (
            f"<SitePolicy {self.bucket} limit={self.state.connections} open={len(self.slots)}"
            f" last refusal={self.refused[0] or '-'} ({self.refused[1]:g}s)>"
        )

    async def acquire_connection(self) -> tuple[str | None, float, str]:
        """(slot id or None, seconds to wait when refused, why)."""
        conn_id = f"{self.token}#{next(self._ids)}"
        try:
            granted, wait, reason = await self.store.connect(self.bucket, self.limits, conn_id, self.reserve)
        except QueueError as exc:
            return None, 1.0, f"queue unavailable: {exc}"
        if not granted:
            self.refused = (reason, wait)
            return None, wait, reason
        self.slots.add(conn_id)
        return conn_id, 0.0, ""

    def release_connection(self, conn_id: str) -> None:
        if conn_id in self.slots:
            self.slots.discard(conn_id)
            self.background(self.store.release(self.bucket, conn_id))

    def background(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Fire and forget (slot release, down mark): failures are logged, cancellation is not one."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._finished)

    async def flush(self, timeout: float = 5.0) -> None:
        """Shutdown: wait for slot releases still on their way, so a restart finds them free."""
        if self._background:
            await asyncio.wait(list(self._background), timeout=timeout)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("%s: background update failed: %s", self.bucket, task.exception())

    async def take_token(self) -> None:
        """Wait for a message token when the bucket has rate limits (no-op otherwise)."""
        if not self.rate_limited:
            return
        async with self._token_lock:
            while self._tokens <= 0:
                try:
                    granted, wait = await self.store.tokens(self.bucket, self.limits, TOKEN_BATCH)
                except QueueError as exc:
                    log.warning("rate tokens for %s unavailable: %s", self.bucket, exc)
                    granted, wait = 0, 1.0
                self._tokens += granted
                if granted <= 0:
                    await asyncio.sleep(max(wait, 0.005))
            self._tokens -= 1

    def delivered(self, count: int = 1) -> None:
        self.successes += count

    def slow_down(self, reason: str) -> None:
        self.signal = reason[:200]

    async def sync(self, backlog: int) -> SiteState:
        successes, signal = self.successes, self.signal
        self.successes, self.signal = 0, ""
        try:
            self.state = await self.store.feedback(self.bucket, self.limits, successes, signal, self.token, backlog)
        except QueueError:
            self.successes += successes
            self.signal = self.signal or signal
            raise
        if signal:
            log.info("%s: slow down (%s) -> %d connections, rate factor %.2f",
                     self.bucket, signal, self.state.connections, self.state.rate_factor)
        return self.state
