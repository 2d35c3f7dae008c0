"""The suppression list, per sender domain, and complaint counters, in Redis.

Keys (under the queue namespace, see ``BounceKeys``)::

  {ns}:suppress:D        hash   address (lower case) -> JSON {reason, time, source, category}
  {ns}:suppress:domains  set    sender domains that have a suppression list
  {ns}:complaints:D      hash   reporting (recipient) domain -> complaints; "*" -> all
  {ns}:bounces:unverified stream forged or unmatched bounces and complaints (capped)

An address is suppressed for one sender domain (``news@example.org`` and
``billing@example.org`` share ``example.org``'s list). ``check`` answers for
many addresses in one round trip (HMGET), for the submit or claim path.
CSV (import/export): ``sender_domain,address,reason,source,time`` with a
header line; time in epoch seconds.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from redis import exceptions as rexc
from redis.asyncio import Redis

from engine.clock import Clock
from engine.errors import InputError
from engine.queue.keys import Keys
from engine.queue.redis_errors import wrap

CSV_FIELDS = ("sender_domain", "address", "reason", "source", "time")


@dataclass(frozen=True, slots=True)
class BounceKeys(Keys):
    def suppress(self, sender_domain: str) -> str:
        return f"{self.ns}:suppress:{sender_domain.lower()}"

    @property
    def suppress_domains(self) -> str:
        return f"{self.ns}:suppress:domains"

    def complaints(self, sender_domain: str) -> str:
        return f"{self.ns}:complaints:{sender_domain.lower()}"

    @property
    def unverified(self) -> str:
        return f"{self.ns}:bounces:unverified"


@dataclass(frozen=True, slots=True)
class Suppressed:
    sender_domain: str
    address: str
    reason: str
    source: str  # manual | import | async | arf | smtp
    time: float  # epoch seconds
    category: str = ""

    def to_json(self) -> str:
        return json.dumps(
            {"reason": self.reason, "source": self.source, "time": self.time, "category": self.category},
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, sender_domain: str, address: str, raw: bytes | str) -> Suppressed:
        try:
            data: Any = json.loads(raw)
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        return cls(
            sender_domain,
            address,
            str(data.get("reason", "")),
            str(data.get("source", "")),
            float(data.get("time", 0) or 0),
            str(data.get("category", "")),
        )


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].strip().strip(">").lower()


def normalise(address: str) -> str:
    return address.strip().strip("<>").lower()


async def guarded(awaitable: Any) -> Any:
    """Await a redis-py call, its errors converted at this edge."""
    try:
        return await awaitable
    except (rexc.RedisError, OSError) as exc:
        raise wrap(exc) from exc


def read_csv(stream: TextIO, default_domain: str = "") -> list[Suppressed]:
    """Rows of an exported file (or ``address[,reason]`` lines with ``default_domain``)."""
    rows: list[Suppressed] = []
    reader = csv.reader(stream)
    for n, row in enumerate(reader, 1):
        if not row or row[0].strip().startswith("#") or (n == 1 and row[0].strip() == "sender_domain"):
            continue
        if "@" in row[0]:  # short form: address[,reason]
            row = [default_domain, *row]
        domain, address = row[0].strip().lower(), normalise(row[1] if len(row) > 1 else "")
        if not domain or "@" not in address:
            raise InputError(f"line {n}: expected sender_domain,address[,reason,source,time]", field="csv")
        reason = row[2].strip() if len(row) > 2 else ""
        source = row[3].strip() if len(row) > 3 and row[3].strip() else "import"
        try:
            when = float(row[4]) if len(row) > 4 and row[4].strip() else 0.0
        except ValueError as exc:
            raise InputError(f"line {n}: time must be epoch seconds", field="csv") from exc
        rows.append(Suppressed(domain, address, reason, source, when))
    return rows


def write_csv(stream: TextIO, entries: Iterable[Suppressed]) -> int:
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    n = 0
    for e in entries:
        writer.writerow([e.sender_domain, e.address, e.reason, e.source, f"{e.time:.3f}"])
        n += 1
    return n


class SuppressionList:
    def __init__(self, redis: Redis, namespace: str, clock: Clock) -> None:
        self.redis = redis
        self.keys = BounceKeys(namespace)
        self.clock = clock

    async def add_many(self, entries: Iterable[Suppressed]) -> int:
        """Add (or replace) entries; returns how many addresses were new."""
        pipe = self.redis.pipeline(transaction=True)
        count = 0
        now = self.clock.wall()
        for e in entries:
            entry = e if e.time else Suppressed(e.sender_domain, e.address, e.reason, e.source, now, e.category)
            pipe.hset(self.keys.suppress(entry.sender_domain), normalise(entry.address), entry.to_json())
            pipe.sadd(self.keys.suppress_domains, entry.sender_domain.lower())
            count += 1
        if not count:
            return 0
        results = await guarded(pipe.execute())
        return sum(int(r) for r in results[::2])

    async def add(self, sender_domain: str, address: str, reason: str, source: str = "manual") -> bool:
        return await self.add_many([Suppressed(sender_domain, address, reason, source, 0.0)]) == 1

    async def remove(self, sender_domain: str, addresses: Sequence[str]) -> int:
        if not addresses:
            return 0
        key = self.keys.suppress(sender_domain)
        return int(await guarded(self.redis.hdel(key, *[normalise(a) for a in addresses])))

    async def check(self, sender_domain: str, addresses: Sequence[str]) -> dict[str, Suppressed]:
        """The suppressed ones among ``addresses`` (keyed as given), in one round trip."""
        if not addresses:
            return {}
        values = await guarded(self.redis.hmget(self.keys.suppress(sender_domain), [normalise(a) for a in addresses]))
        return {
            a: Suppressed.from_json(sender_domain, normalise(a), v)
            for a, v in zip(addresses, values, strict=True)
            if v is not None
        }

    async def domains(self) -> list[str]:
        members = await guarded(self.redis.smembers(self.keys.suppress_domains))
        return sorted(m.decode() for m in members)

    async def entries(self, sender_domain: str | None = None) -> AsyncIterator[Suppressed]:
        """Every entry of one sender domain, or of all, read in batches (HSCAN)."""
        for domain in [sender_domain.lower()] if sender_domain else await self.domains():
            cursor: int = 0
            while True:
                cursor, batch = await guarded(self.redis.hscan(self.keys.suppress(domain), cursor, count=1000))
                for address, raw in sorted(batch.items()):
                    yield Suppressed.from_json(domain, address.decode(), raw)
                if cursor == 0:
                    break

    async def complaint_counts(self, sender_domain: str) -> dict[str, int]:
        raw = await guarded(self.redis.hgetall(self.keys.complaints(sender_domain)))
        return {k.decode(): int(v) for k, v in raw.items()}

    async def import_csv(self, stream: TextIO, default_domain: str = "") -> int:
        return await self.add_many(read_csv(stream, default_domain))

    async def export_csv(self, stream: TextIO, sender_domain: str | None = None) -> int:
        buffer = io.StringIO()
        rows = [e async for e in self.entries(sender_domain)]
        n = write_csv(buffer, rows)
        stream.write(buffer.getvalue())
        return n
