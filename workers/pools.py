"""Open SMTP sessions per (shaping bucket, MX host), kept between transactions.

A connection is parked when its dispatcher's queue runs dry and taken again by
the next transaction for the same bucket and host, until it has been idle too
long or carried its share of messages. Each session holds one of the bucket's
fleet-wide connection slots; closing it gives the slot back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from engine.net.smtp_protocol import SmtpSession


@dataclass(slots=True, eq=False)
class Pooled:
    session: SmtpSession
    slot: str
    release: Callable[[str], None]  # gives the bucket's connection slot back
    idle_timeout: float
    max_msgs: int


class HostPools:
    def __init__(self, max_per_host: int) -> None:
        self.max_per_host = max_per_host
        self._open: dict[str, int] = defaultdict(int)  # sessions open or opening, per key
        self._idle: dict[str, list[Pooled]] = defaultdict(list)
        self.opened = 0  # connections opened in this process (the connection-reuse figure)
        self._closing: set[asyncio.Task[None]] = set()

    def count(self, key: str) -> int:
        return self._open[key]

    def take_idle(self, key: str) -> Pooled | None:
        idle = self._idle.get(key)
        while idle:
            entry = idle.pop()
            if entry.session.usable:
                return entry
            self.close(key, entry)
        return None

    def reserve(self, key: str) -> bool:
        if self._open[key] >= self.max_per_host:
            return False
        self._open[key] += 1
        return True

    def unreserve(self, key: str) -> None:
        self._open[key] -= 1

    def park(self, key: str, entry: Pooled) -> None:
        if entry.session.usable and entry.session.transactions < entry.max_msgs:
            self._idle[key].append(entry)
        else:
            self.close(key, entry)

    def close(self, key: str, entry: Pooled) -> None:
        self._open[key] -= 1
        entry.release(entry.slot)
        task = asyncio.get_running_loop().create_task(entry.session.quit())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def close_idle(self, bucket: str, now: float, min_idle: float) -> int:
        """Give back a bucket's connections idle for ``min_idle`` seconds (another worker waits
        for their slots). ``now``: loop.time()."""
        prefix = bucket + "|"
        return self._close_where(lambda key, entry: key.startswith(prefix) and now - entry.session.last_used >= min_idle)

    def sweep(self, now: float) -> None:
        """Close sessions idle longer than their bucket's idle timeout (now: loop.time())."""
        self._close_where(
            lambda _, entry: not entry.session.usable or now - entry.session.last_used >= entry.idle_timeout
        )

    def _close_where(self, stale: Callable[[str, Pooled], bool]) -> int:
        closed = 0
        for key, idle in self._idle.items():
            keep = []
            for entry in idle:
                if stale(key, entry):
                    self.close(key, entry)
                    closed += 1
                else:
                    keep.append(entry)
            idle[:] = keep
        return closed

    async def close_all(self) -> None:
        for key, idle in self._idle.items():
            for entry in idle:
                self.close(key, entry)
            idle.clear()
        if self._closing:
            with contextlib.suppress(Exception):
                await asyncio.wait(list(self._closing), timeout=5.0)
