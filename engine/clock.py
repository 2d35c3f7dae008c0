"""Time as an injected dependency: pure code takes ``now`` values, adapters take a Clock."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def wall(self) -> float:
        """Seconds since the epoch (what is stored in Redis and shown to users)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (timeouts, rates)."""
        ...


class SystemClock:
    def wall(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()
