"""A TTL cache on the injected clock with one shared lookup per key in flight: a worker
routes hundreds of domains at once and they repeat (engine/net/resolver.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Generic, TypeVar

from engine.clock import Clock

V = TypeVar("V")


class Memo(Generic[V]):
    """TTL cache on the injected clock, with one shared lookup per key in flight."""

    def __init__(self, clock: Clock, max_entries: int) -> None:
        self._clock = clock
        self._max = max(1, max_entries)
        self._entries: dict[str, tuple[V, float]] = {}
        self._inflight: dict[str, asyncio.Task[V]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def entry(self, key: str) -> tuple[V, float] | None:
        """(value, seconds it stays fresh) when fresh, else None."""
        hit = self._entries.get(key)
        if hit is not None and (left := hit[1] - self._clock.monotonic()) > 0:
            return hit[0], left
        return None

    def put(self, key: str, value: V, expires: float) -> None:
        self._entries.pop(key, None)
        self._entries[key] = (value, expires)
        if len(self._entries) > self._max:
            self._prune()

    def peek(self, key: str) -> V | None:
        """The cached value when fresh, without a lookup (None otherwise)."""
        hit = self._entries.get(key)
        if hit is not None and hit[1] > self._clock.monotonic():
            return hit[0]
        return None

    async def get(self, key: str, compute: Callable[[], Awaitable[tuple[V, float]]]) -> V:
        hit = self._entries.get(key)
        if hit is not None and hit[1] > self._clock.monotonic():
            return hit[0]
        task = self._inflight.get(key)
        if task is None or task.get_loop() is not asyncio.get_running_loop():
            task = asyncio.ensure_future(self._fill(key, compute))
            self._inflight[key] = task
            task.add_done_callback(partial(self._forget, key))
        # shield: one caller giving up must not cancel the lookup the others wait for
        return await asyncio.shield(task)

    async def _fill(self, key: str, compute: Callable[[], Awaitable[tuple[V, float]]]) -> V:
        value, expires = await compute()
        self.put(key, value, expires)  # re-inserted: dict order is age order
        return value

    def _forget(self, key: str, task: asyncio.Task[V]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]

    def _prune(self) -> None:
        """Drop expired entries, then the oldest, down to 90% of the limit."""
        now = self._clock.monotonic()
        for key in [k for k, (_, exp) in self._entries.items() if exp <= now]:
            del self._entries[key]
        excess = len(self._entries) - int(self._max * 0.9)
        for key in list(self._entries)[: max(0, excess)]:
            del self._entries[key]

    def clear(self) -> None:
        self._entries.clear()
        for task in self._inflight.values():
            task.cancel()
        self._inflight.clear()
