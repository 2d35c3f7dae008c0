"""When to try a deferred recipient again, and when to give up.

Jittered exponential backoff: attempt n waits base * factor**(n-1), capped,
then +-jitter. Pure: the caller passes ``now`` and a random source.
"""

from __future__ import annotations

import random

from engine.config import RetryConfig


def backoff(attempts: int, config: RetryConfig, rng: random.Random) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt (1-based)."""
    delay = min(config.base * config.factor ** max(attempts - 1, 0), config.cap)
    return delay * (1.0 + config.jitter * (2.0 * rng.random() - 1.0))


def next_attempt(attempts: int, now: float, config: RetryConfig, rng: random.Random) -> float:
    return now + backoff(attempts, config, rng)


def expires_at(created: float, max_age: float | None, config: RetryConfig) -> float:
    return created + (config.default_max_age if max_age is None else max_age)
