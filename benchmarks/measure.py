"""One measured run, the summary of repeated runs, and bounded waits."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any


class BenchError(RuntimeError):
    """A run that could not finish: the message says what was expected and what was seen."""


@dataclass
class Run:
    label: str
    units: int  # messages (or recipients, workload c) that reached their outcome
    seconds: float
    cpu: dict[str, float] = field(default_factory=dict)  # group -> CPU seconds, see each system
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def rate(self) -> float:
        return self.units / self.seconds if self.seconds > 0 and not self.error else 0.0

    def cpu_us(self, group: str) -> float | None:
        if group not in self.cpu or not self.units:
            return None
        return self.cpu[group] / self.units * 1e6

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "units": self.units, "seconds": round(self.seconds, 4),
                "rate": round(self.rate, 1), "cpu_seconds": {k: round(v, 4) for k, v in self.cpu.items()},
                "extra": self.extra, "error": self.error}


@dataclass
class Summary:
    label: str
    runs: list[Run]

    @property
    def ok(self) -> list[Run]:
        return [r for r in self.runs if not r.error]

    @property
    def rate(self) -> float | None:
        return statistics.median(r.rate for r in self.ok) if self.ok else None

    @property
    def spread_pct(self) -> float | None:
        """(max - min) / 2 / median: the +- around the median over the repeats."""
        rates = [r.rate for r in self.ok]
        if not rates or not self.rate:
            return None
        return (max(rates) - min(rates)) / 2 / self.rate * 100

    def cpu_us(self, group: str) -> float | None:
        values = [v for v in (r.cpu_us(group) for r in self.ok) if v is not None]
        return statistics.median(values) if values else None

    def extra(self, key: str) -> Any:
        values = [r.extra[key] for r in self.ok if r.extra.get(key) is not None]
        if not values:
            return None
        return statistics.median(values) if all(isinstance(v, int | float) for v in values) else values[-1]

    @property
    def errors(self) -> list[str]:
        return [r.error for r in self.runs if r.error]


@dataclass(frozen=True)
class Limits:
    """Every wait in a run is bounded: a whole run by ``base + units / min_rate`` seconds, and
    any stretch without progress by ``stall`` seconds."""

    min_rate: float = 50.0
    base: float = 60.0
    stall: float = 60.0

    def run_timeout(self, units: int) -> float:
        return self.base + units / self.min_rate


async def wait_for_progress(
    probe: Callable[[], Awaitable[tuple[int, bool]]],
    *,
    what: str,
    total: int,
    limits: Limits,
    interval: float = 0.1,
    describe: Callable[[], Awaitable[str]] | None = None,
) -> float:
    """Poll ``probe() -> (progress, finished)`` until finished; return the monotonic time it was seen.

    Raises BenchError past the run timeout or after ``limits.stall`` seconds without progress."""
    start = time.monotonic()
    deadline = start + limits.run_timeout(total)
    last, last_change = -1, start
    while True:
        progress, finished = await probe()
        now = time.monotonic()
        if finished:
            return now
        if progress != last:
            last, last_change = progress, now
        reason = None
        if now > deadline:
            reason = f"not finished after {now - start:.0f}s (limit {limits.run_timeout(total):.0f}s)"
        elif now - last_change > limits.stall:
            reason = f"no progress for {limits.stall:.0f}s"
        if reason:
            state = await describe() if describe else ""
            raise BenchError(f"{what}: {reason}; {progress} of {total} done. {state}".strip())
        await asyncio.sleep(interval)
