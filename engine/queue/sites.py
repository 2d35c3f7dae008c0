"""Shaping buckets in Redis: connection slots, rate tokens, adaptive limits, operator switches.

Everything here is shared by all workers on all hosts using the same Redis, so a
limit holds for the whole fleet. Slots are leases (renewed by the worker that
holds the connection), so a dead worker's connections stop counting on their own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis import exceptions as rexc
from redis.asyncio import Redis

from engine.clock import Clock
from engine.config import AdaptiveConfig, Limits
from engine.errors import QueueUnavailable
from engine.queue.keys import Keys
from engine.queue.redis_errors import wrap
from engine.queue.scripts import Scripts

SLOT_TTL = 10.0  # seconds a connection slot lives without renewal (renewed every 0.5 s)
STALE_BACKLOG = 30.0  # a worker's backlog report older than this is ignored


@dataclass(frozen=True, slots=True)
class SiteState:
    connections: int  # the current adaptive connection limit
    rate_factor: float  # share of the configured rates currently allowed
    paused: bool
    down_until: float  # epoch seconds; 0 when not down
    wanted: float = 0.0  # epoch seconds another worker was last refused a slot at the limit; 0: never


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


class SitesStore:
    def __init__(self, redis: Redis, keys: Keys, clock: Clock, adaptive: AdaptiveConfig | None = None) -> None:
        self.redis = redis
        self.keys = keys
        self.clock = clock
        self.adaptive = adaptive or AdaptiveConfig()
        self.scripts = Scripts(redis)

    async def _call(self, name: str, keys: list[str], args: list[Any]) -> Any:
        try:
            return await self.scripts.call(name, keys, args)
        except (rexc.RedisError, OSError) as exc:
            raise wrap(exc, self.keys.ns) from exc

    async def connect(self, bucket: str, limits: Limits, conn_id: str, reserve: int = 0) -> tuple[bool, float, str]:
        """(granted, seconds to wait before asking again, reason when refused). ``reserve``:
        slots beyond the limit this caller may take (transactional mail must not wait for bulk)."""
        k = self.keys
        granted, wait_ms, reason = await self._call(
            "site_connect",
            [k.site(bucket), k.site_conns(bucket), k.site_new(bucket), k.sites],
            [bucket, _ms(self.clock.wall()), _ms(SLOT_TTL), conn_id, limits.max_connections,
             limits.initial_connections, limits.max_new_connections_per_minute, reserve],
        )  # fmt: skip
        return bool(granted), int(wait_ms) / 1000.0, reason.decode() if isinstance(reason, bytes) else str(reason)

    async def release(self, bucket: str, conn_id: str) -> None:
        with contextlib.suppress(rexc.RedisError, OSError):  # else the slot expires by itself
            await self.redis.zrem(self.keys.site_conns(bucket), conn_id)

    async def renew(self, slots: Sequence[tuple[str, str]]) -> None:
        if not slots:
            return
        expiry = _ms(self.clock.wall() + SLOT_TTL)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for bucket, conn_id in slots:
                    pipe.zadd(self.keys.site_conns(bucket), {conn_id: expiry}, xx=True)
                await pipe.execute()
        except (rexc.RedisError, OSError) as exc:
            raise QueueUnavailable(f"Redis unreachable: {exc}") from exc

    async def tokens(self, bucket: str, limits: Limits, want: int) -> tuple[int, float]:
        """(tokens granted, seconds until the next one when none was)."""
        args: list[Any] = [_ms(self.clock.wall()), want]
        for refill, capacity in limits.rate_windows():
            args += [repr(refill), repr(capacity)]
        granted, wait_ms = await self._call("site_tokens", [self.keys.site(bucket)], args)
        return int(granted), int(wait_ms) / 1000.0

    async def feedback(
        self, bucket: str, limits: Limits, successes: int, signal: str, token: str, backlog: int
    ) -> SiteState:
        a = self.adaptive
        k = self.keys
        climit, rf, paused, down, wanted = await self._call(
            "site_feedback",
            [k.site(bucket), k.site_log(bucket), k.sites],
            [bucket, _ms(self.clock.wall()), successes, signal, limits.max_connections,
             limits.initial_connections, a.decrease_factor, a.increase_every, a.rate_step,
             a.min_rate_factor, _ms(a.cooldown), a.min_connections, token, backlog],
        )  # fmt: skip
        return SiteState(int(climit), int(rf) / 1000.0, bool(int(paused)), int(down) / 1000.0, int(wanted) / 1000.0)

    async def mark_down(self, bucket: str, until: float, reason: str) -> None:
        """Every MX host of the bucket failed: other workers defer its mail without trying."""
        await self.redis.hset(
            self.keys.site(bucket),
            mapping={"down_until": _ms(until), "last_reason": reason, "last_reason_ts": _ms(self.clock.wall())},
        )

    async def set_paused(self, bucket: str, paused: bool) -> bool:
        """False when the bucket was never seen (nothing to pause)."""
        if not await self.redis.sismember(self.keys.sites, bucket):
            return False
        if paused:
            await self.redis.hset(self.keys.site(bucket), "paused", "1")
        else:
            await self.redis.hdel(self.keys.site(bucket), "paused")
        return True

    async def retry_now(self, bucket: str) -> int:
        """Make every retry chunk waiting for this bucket due now; clear a 'down' mark."""
        k = self.keys
        members: Any = await self.redis.zrange(k.site_retry(bucket), 0, -1)
        now = _ms(self.clock.wall())
        async with self.redis.pipeline(transaction=True) as pipe:
            for member in members:
                pipe.zadd(k.retry, {member: now}, xx=True)
            pipe.hdel(k.site(bucket), "down_until")
            await pipe.execute()
        return len(members)

    async def describe(self) -> list[dict[str, Any]]:
        """What ``bulkmail sites`` shows, one dict per bucket."""
        k = self.keys
        buckets: Any = await self.redis.smembers(k.sites)
        now = self.clock.wall()
        rows = []
        for raw in sorted(buckets):
            bucket = raw.decode()
            await self.redis.zremrangebyscore(k.site_conns(bucket), "-inf", _ms(now))
            h: Any = await self.redis.hgetall(k.site(bucket))
            f = {key.decode(): value.decode() for key, value in h.items()}
            backlog = sum(
                int(v) for key, v in f.items()
                if key.startswith("backlog:") and now - int(f.get("seen:" + key[8:], 0)) / 1000 < STALE_BACKLOG
            )  # fmt: skip
            rows.append({
                "site": bucket,
                "connections_limit": int(f.get("climit", 0)),
                "connections_max": int(f.get("max", 0)),
                "connections_open": int(await self.redis.zcard(k.site_conns(bucket))),
                "rate_factor": float(f.get("rate_factor", 1.0)),
                "queued": backlog,
                "waiting_retry": int(await self.redis.zcard(k.site_retry(bucket))),
                "paused": f.get("paused") == "1",
                "down_until": int(f.get("down_until", 0)) / 1000 or None,
                "last_reason": f.get("last_reason"),
                "last_change": f.get("last_change_reason"),
            })  # fmt: skip
        return rows

    async def changes(self, bucket: str, count: int = 100) -> list[dict[str, Any]]:
        rows: Any = await self.redis.xrevrange(self.keys.site_log(bucket), count=count)
        return [
            {key.decode(): value.decode() for key, value in fields.items()} for _, fields in reversed(rows)
        ]
