"""MX routes shared by the workers of a fleet through Redis.

Each worker used to look up every domain of a job itself: with 1,000 domains that
is 1,000 MX queries per worker at about 0.6 ms of CPU each in dnspython, 10-20% of
a worker's CPU on a 50,000-message newsletter. Here one worker claims a domain
(``{ns}:route:D:busy``, expiring in case it dies), looks it up and publishes the
answer under ``{ns}:route:D`` with the answer's own TTL; the others read it.
Redis trouble only costs the sharing: callers then look up for themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from redis import exceptions as rexc
from redis.asyncio import Redis

from engine.codec import decode_route, encode_route
from engine.errors import CorruptData, DnsError
from engine.mx import Route
from engine.queue.keys import Keys
from engine.queue.redis_errors import wrap
from engine.queue.scripts import Scripts

MINE: Literal["mine"] = "mine"  # this worker looks it up and publishes
WAIT: Literal["wait"] = "wait"  # another worker is looking it up


@dataclass(frozen=True, slots=True)
class Published:
    outcome: Route | DnsError  # ``expires`` of a Route is meaningless here: use ``ttl``
    ttl: float  # seconds the answer stays fresh


Claim = Published | Literal["mine", "wait"]


class RouteStore:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self.scripts = Scripts(redis)

    async def claim(self, names: Sequence[str], token: str, claim_seconds: float) -> dict[str, Claim]:
        """One round trip for many domains (ASCII names, as ``MxResolver.shared_name``)."""
        try:
            rows = await self.scripts.call(
                "route_claim", [], [self.keys.ns, token, max(1, int(claim_seconds * 1000)), *names]
            )
        except (rexc.RedisError, OSError) as exc:
            raise wrap(exc, self.keys.ns) from exc
        claims: dict[str, Claim] = {}
        for name, row in zip(names, rows, strict=True):
            if isinstance(row, list):
                try:
                    claims[name] = Published(decode_route(name, row[0], 0.0), max(int(row[1]), 1) / 1000)
                except CorruptData:
                    claims[name] = MINE  # looked up again here, and the bad value overwritten
            else:
                claims[name] = MINE if int(row) == 1 else WAIT
        return claims

    async def publish(self, answers: Sequence[tuple[str, Route | DnsError, float]]) -> None:
        """(name, outcome, seconds fresh) of lookups this worker claimed; frees the claims."""
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for name, outcome, ttl in answers:
                    key = self.keys.route(name)
                    pipe.set(key, encode_route(outcome), px=max(1, int(ttl * 1000)))
                    pipe.delete(f"{key}:busy")
                await pipe.execute()
        except (rexc.RedisError, OSError) as exc:
            raise wrap(exc, self.keys.ns) from exc
