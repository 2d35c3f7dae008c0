"""Buffer outcomes and write them to Redis in batches, one Lua call per flush.

Outcomes stay in memory until Redis has them: when Redis is unreachable the
reporter keeps them and retries with backoff, so a worker's finished work is
reported once Redis is back. A chunk is released ('done') with the flush that
carries its last outcome.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from engine.clock import Clock
from engine.codec import StoredRecipient
from engine.config import QueueConfig
from engine.errors import QueueError
from engine.outcome import QUEUED, Outcome
from engine.queue.store import ChunkReport, QueueStore, RetryGroup
from engine.queue.suppression import Suppressed, SuppressionList
from workers.work import Held

log = logging.getLogger("bulkmail.reporter")


class Reporter:
    def __init__(
        self,
        store: QueueStore,
        config: QueueConfig,
        clock: Clock,
        on_settled: Callable[[int], None],
        suppression: SuppressionList | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        self.held: dict[str, Held] = {}
        self._dirty: dict[str, Held] = {}
        self._unreported = 0
        self._wake = asyncio.Event()
        self._on_settled = on_settled
        self.failures = 0
        self.suppression = suppression
        self._suppress: list[Suppressed] = []
        self._closed = False

    def hold(self, held: Held) -> None:
        earlier = self.held.get(held.key)
        if earlier is not None:
            # Our lease on this chunk ran out and was reaped (Redis was down past it, say) and we
            # claimed the chunk again: the earlier lease is lost like any other. Its outcomes must
            # not be reported, or an unflagged one would stand for a recipient the new lease
            # sends again (claimed as a possible duplicate).
            log.warning("claimed chunk %s again after losing its lease; the lost lease's results are void", held.key)
            self.forget(earlier)
        self.held[held.key] = held
        if held.remaining == 0:
            self._dirty[held.key] = held  # nothing to send: release the chunk at once
            self._wake.set()

    def add(self, held: Held, outcome: Outcome, retry: StoredRecipient | None = None, bucket: str = "") -> None:
        if held.lost:
            return
        held.pending.append(outcome)
        held.remaining -= 1
        if retry is not None:
            requeue = outcome.status == QUEUED
            key = f"{'q' if requeue else 'r'}{bucket}"
            group = held.retry.get(key)
            if group is None:
                group = held.retry[key] = RetryGroup(bucket, [], 0.0, requeue)
            group.records.append(retry)
            group.retry_at = max(group.retry_at, outcome.retry_at or 0.0)
        self._dirty[held.key] = held
        self._unreported += 1
        self._on_settled(1)
        if self._unreported >= self.config.report_batch:
            self._wake.set()

    def suppress(self, entry: Suppressed) -> None:
        """A permanent recipient-fault failure: the address goes on its sender domain's list."""
        self._suppress.append(entry)
        self._wake.set()

    async def _flush_suppressions(self) -> None:
        if not self._suppress or self.suppression is None:
            return
        entries, self._suppress = self._suppress, []
        try:
            await self.suppression.add_many(entries)
        except QueueError as exc:
            log.warning("cannot record %d suppressions yet: %s", len(entries), exc)
            self._suppress = entries + self._suppress

    def forget(self, held: Held) -> None:
        """Our lease on this chunk is gone; whatever we still hold for it is void. (By the lease,
        not the chunk key: the key may be held again under a newer lease of ours.)"""
        if held.lost:
            return
        held.lost = True
        if self.held.get(held.key) is held:
            del self.held[held.key]
        if self._dirty.get(held.key) is held:
            del self._dirty[held.key]
        self._unreported -= len(held.pending)  # a flush on its way skips a lost chunk's count
        held.pending.clear()
        self._on_settled(held.remaining)

    @property
    def unreported(self) -> int:
        return self._unreported

    def close(self) -> None:
        """``run()`` returns at its next turn even if the cancel that ends it is lost (workers/loop.py)."""
        self._closed = True
        self._wake.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed:
            # a timer that sets the event, not wait_for: that costs a task and a cancel per tick
            timer = loop.call_later(self.config.report_interval, self._wake.set)
            await self._wake.wait()
            timer.cancel()
            self._wake.clear()
            await self.flush()

    async def flush(self) -> bool:
        """Write what is buffered; False (and everything kept) when Redis failed."""
        await self._flush_suppressions()
        if not self._dirty:
            return True
        batch = list(self._dirty.values())
        self._dirty = {}
        taken = [(h, len(h.pending), h.retry) for h in batch]
        for h in batch:
            h.retry = {}
        reports = [
            ChunkReport(h.claimed, h.pending[:n], done=h.remaining == 0, retry=list(groups.values()))
            for h, n, groups in taken
        ]
        try:
            _, stale = await self.store.report(reports)
        except QueueError as exc:
            self.failures += 1
            log.warning("cannot report %d chunks (attempt %d): %s", len(batch), self.failures, exc)
            for h, _, groups in taken:
                for bucket, group in groups.items():  # put back in front of what came since
                    later = h.retry.get(bucket)
                    if later is not None:
                        group.records.extend(later.records)
                        group.retry_at = max(group.retry_at, later.retry_at)
                    h.retry[bucket] = group
                if not h.lost:
                    self._dirty[h.key] = h
            await asyncio.sleep(min(0.1 * 2 ** min(self.failures, 6), 5.0))
            return False
        self.failures = 0
        for h, n, _ in taken:
            if h.lost:  # forgotten while the report was on its way: forget() counted it
                continue
            del h.pending[:n]
            self._unreported -= n
            if h.remaining == 0 and not h.pending and self.held.get(h.key) is h:
                del self.held[h.key]
        lost = set(stale)
        for h, _, _ in taken:
            if h.key in lost:
                log.warning("lease on chunk %s was lost; its results were not recorded", h.key)
                self.forget(h)
        return True
