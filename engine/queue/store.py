"""QueueStore: the only code that reads or writes queue state in Redis.

Every state change of a recipient goes through one Lua script (lua/*.lua), so
it is atomic; this module packs arguments, unpacks results and converts
redis-py errors into engine.errors at this one edge.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from redis import exceptions as rexc
from redis.asyncio import Redis

from engine.clock import Clock
from engine.codec import (
    StoredRecipient,
    decode_meta,
    decode_records,
    encode_chunk,
    encode_report,
)
from engine.config import QueueConfig
from engine.errors import CorruptData
from engine.outcome import STATUSES, Outcome
from engine.queue.durability import Durability
from engine.queue.keys import Keys
from engine.queue.redis_errors import wrap as _wrap
from engine.queue.scripts import Scripts
from engine.queue.submit import SubmitResult, submit_job

if TYPE_CHECKING:
    from engine.job import JobSpec, Recipient


@dataclass(frozen=True, slots=True)
class ClaimedChunk:
    job_id: str
    chunk: str
    records: list[StoredRecipient]  # only the recipients to attempt
    duplicates: frozenset[int]  # indices that may have been attempted before (lost lease)
    # This lease's owner value in Redis, "worker token/claim number": reports, heartbeats and
    # releases compare it, so a lease that ran out is stale even for a worker that claimed the
    # same chunk again since (its outcomes would overwrite the new lease's flagged ones).
    lease: str

    @property
    def key(self) -> str:
        return f"{self.job_id}:{self.chunk}"


@dataclass(slots=True)
class RetryGroup:
    """Deferred recipients of one chunk for one shaping bucket, attempts counted."""

    bucket: str
    records: list[StoredRecipient]
    retry_at: float  # epoch seconds
    requeue: bool = False  # handed back unattempted: ready again at once, not a retry


@dataclass(slots=True)
class ChunkReport:
    lease: ClaimedChunk  # the lease the outcomes were decided under
    outcomes: list[Outcome]
    done: bool = False
    retry: list[RetryGroup] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class JobMeta:
    job_id: str
    state: str
    priority: str
    created: float  # epoch seconds
    max_age: float | None
    template: dict[str, Any]


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _lease_pairs(chunks: Sequence[ClaimedChunk]) -> list[str]:
    return [value for chunk in chunks for value in (chunk.key, chunk.lease)]


class QueueStore:
    def __init__(self, redis: Redis, config: QueueConfig, clock: Clock) -> None:
        self.redis = redis
        self.config = config
        self.clock = clock
        self.keys = Keys(config.namespace)
        self.scripts = Scripts(redis)
        self.durability: Durability | None = None  # probed at the first submit
        self._claims = itertools.count(1)  # numbers this store's leases (see ClaimedChunk.lease)

    async def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        try:
            return await self.scripts.call(name, keys, args)
        except rexc.RedisError as exc:
            raise _wrap(exc) from exc
        except OSError as exc:
            raise _wrap(exc) from exc

    # ---- submission -------------------------------------------------------

    async def submit(
        self,
        spec: JobSpec,
        recipients: Iterable[Recipient] | AsyncIterable[Recipient],
        *,
        wake: int = 16,
    ) -> SubmitResult:
        """Store a validated job; it is accepted (and durable) when this returns (engine/queue/submit.py)."""
        return await submit_job(self, spec, recipients, wake)

    # ---- work -------------------------------------------------------------

    async def claim(
        self, token: str, max_chunks: int | None = None, lanes: Sequence[str] = ("transactional", "bulk")
    ) -> list[ClaimedChunk]:
        """Lease chunks, transactional lane first; ``lanes`` narrows to some lanes."""
        k = self.keys
        lease = f"{token}/{next(self._claims)}"
        wanted = [k.lane(lane) if lane in lanes else k.lane(lane) + ":none" for lane in ("transactional", "bulk")]
        flat = await self._run(
            "claim",
            [*wanted, k.lease, k.owner, k.claims, k.quarantine],
            [
                k.ns,
                lease,
                _ms(self.clock.wall()),
                _ms(self.config.lease),
                max_chunks or self.config.claim_chunks,
                self.config.max_claims,
            ],
        )
        chunks = []
        for i in range(0, len(flat), 4):
            job_id, chunk, blob, flags = flat[i].decode(), flat[i + 1].decode(), flat[i + 2], flat[i + 3].decode()
            try:  # one undecodable chunk must not cost the others claimed with it
                records = decode_records(blob)
                if len(records) != len(flags):
                    raise CorruptData(f"corrupt chunk record: {len(records)} records for {len(flags)} recipients")
            except CorruptData as exc:
                await self.quarantine(ClaimedChunk(job_id, chunk, [], frozenset(), lease), str(exc))
                continue
            keep = [r for r, f in zip(records, flags, strict=True) if f != "0"]
            dups = frozenset(r.index for r, f in zip(records, flags, strict=True) if f == "2")
            chunks.append(ClaimedChunk(job_id, chunk, keep, dups, lease))
        return chunks

    async def quarantine(self, chunk: ClaimedChunk, reason: str) -> int:
        """Take a leased chunk out of circulation with its reason; its recipients stay queued.
        Returns how many were in flight, or -1 when the lease is not ours (any more)."""
        k = self.keys
        return int(await self._run(
            "quarantine", [k.lease, k.owner, k.quarantine], [k.ns, chunk.lease, chunk.key, reason]
        ))  # fmt: skip

    async def report(self, reports: Sequence[ChunkReport]) -> tuple[int, list[str]]:
        """Returns (outcomes applied, chunk keys of the reports whose lease was lost)."""
        payload: list[list[Any]] = []
        for r in reports:
            outcomes = [
                [o.index, o.state_byte, o.rcpt, o.status, o.code, o.enhanced, o.reply, o.mx, o.attempt,
                 1 if o.possible_duplicate else 0, o.category, o.fault]
                for o in r.outcomes
            ]  # fmt: skip
            retry: list[Any] = []
            for group in r.retry:
                if group.records:
                    blob, packed = encode_chunk(group.records)
                    retry.append([blob, packed, _ms(group.retry_at), group.bucket, "q" if group.requeue else "r"])
            lease = r.lease
            payload.append([lease.job_id, lease.chunk, 1 if r.done else 0, outcomes, retry, lease.lease])
        k = self.keys
        result = await self._run(
            "report",
            [k.owner, k.lease, k.claims, k.retry],
            [
                k.ns,
                _ms(self.clock.wall()),
                "1" if self.config.events else "0",
                self.config.events_maxlen,
                encode_report(payload),
            ],
        )
        return int(result[0]), [key.decode() for key in result[1:]]

    async def heartbeat(self, token: str, chunks: Sequence[ClaimedChunk]) -> list[str]:
        """Renew the leases of ``chunks`` still held; returns the chunk keys of those lost."""
        k = self.keys
        lost = await self._run(
            "heartbeat",
            [k.owner, k.lease, k.workers, k.claims],
            [token, _ms(self.clock.wall()), _ms(self.config.lease), *_lease_pairs(chunks)],
        )
        return [key.decode() for key in lost]

    async def release(self, chunks: Sequence[ClaimedChunk]) -> int:
        if not chunks:
            return 0
        k = self.keys
        return int(await self._run("release", [k.lease, k.owner, k.claims], [k.ns, *_lease_pairs(chunks)]))

    async def reap(self, limit: int = 200) -> int:
        k = self.keys
        return int(await self._run("reap", [k.lease, k.owner], [k.ns, _ms(self.clock.wall()), limit]))

    async def promote(self, limit: int = 1000) -> tuple[int, float | None]:
        """Returns (retry chunks made ready, epoch seconds of the next one due or None)."""
        k = self.keys
        count, first = await self._run("promote", [k.retry], [k.ns, _ms(self.clock.wall()), limit])
        first = float(first)
        return int(count), (first / 1000.0 if first >= 0 else None)

    async def wait_for_work(self, blocking: Redis, timeout: float, lane: str = "bulk") -> bool:
        """Block on the lane's wake list (on a connection of its own) instead of polling."""
        key = self.keys.wake_tx if lane == "transactional" else self.keys.wake
        try:
            return await blocking.blpop([key], timeout=max(timeout, 0.01)) is not None
        except rexc.RedisError as exc:
            raise _wrap(exc) from exc

    # ---- operator control ---------------------------------------------------

    async def cancel(self, job_id: str) -> int:
        """Recipients cancelled now (queued and deferred); -1 no such job, -2 still loading."""
        k = self.keys
        return int(await self._run(
            "cancel_job",
            [k.job(job_id), k.states(job_id), k.ready(job_id), k.lane("transactional"), k.lane("bulk")],
            [job_id],
        ))  # fmt: skip

    async def set_paused(self, job_id: str, paused: bool) -> int:
        """1 changed, 0 already so, -1 no such job (or loading/cancelled)."""
        k = self.keys
        return int(await self._run(
            "pause_job", [k.job(job_id), k.ready(job_id)], [k.ns, job_id, "pause" if paused else "resume"]
        ))  # fmt: skip

    # ---- reading ----------------------------------------------------------

    async def job_meta(self, job_id: str) -> JobMeta | None:
        try:
            fields: Any = await self.redis.hmget(
                self.keys.job(job_id), ["state", "priority", "created", "max_age", "tpl"]
            )
        except rexc.RedisError as exc:
            raise _wrap(exc) from exc
        state, priority, created, max_age, tpl = fields
        if state is None or tpl is None:
            return None
        return JobMeta(
            job_id=job_id,
            state=state.decode(),
            priority=priority.decode() if priority else "bulk",
            created=int(created) / 1000.0,
            max_age=float(max_age) if max_age else None,
            template=decode_meta(tpl),
        )

    async def status(self, job_id: str) -> dict[str, Any] | None:
        try:
            raw: Any = await self.redis.hgetall(self.keys.job(job_id))
        except rexc.RedisError as exc:
            raise _wrap(exc) from exc
        if not raw or b"state" not in raw:
            return None
        h = {key.decode(): value for key, value in raw.items() if key != b"tpl"}
        counts = {name: int(h.get(name, b"0")) for name in STATUSES}
        state = h["state"].decode()
        total = int(h.get("total", b"0"))
        pending = counts["queued"] + counts["in_flight"] + counts["deferred"]
        return {
            "job": job_id,
            "state": state,
            "priority": h.get("priority", b"bulk").decode(),
            "created": int(h["created"]) / 1000.0,
            "total": total,
            **counts,
            "done": state != "loading" and total > 0 and pending == 0,
        }

    async def events(self, job_id: str, after: str = "-", count: int = 1000) -> list[dict[str, Any]]:
        """Events after stream id ``after`` (exclusive unless '-')."""
        start = after if after == "-" else f"({after}"
        try:
            rows: Any = await self.redis.xrange(self.keys.events(job_id), min=start, count=count)
        except rexc.RedisError as exc:
            raise _wrap(exc) from exc
        return [event_dict(job_id, entry_id, fields) for entry_id, fields in rows]

    async def job_states(self, job_ids: Sequence[str]) -> dict[str, str]:
        """State (active, paused, cancelled...) of each job, in one round trip."""
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for job_id in job_ids:
                    pipe.hget(self.keys.job(job_id), "state")
                states: Any = await pipe.execute()
        except (rexc.RedisError, OSError) as exc:
            raise _wrap(exc) from exc
        return {j: s.decode() for j, s in zip(job_ids, states, strict=True) if s is not None}

    async def job_ids(self) -> list[str]:
        ids: Any = await self.redis.zrange(self.keys.jobs, 0, -1)
        return [j.decode() for j in ids]

    async def state_bytes(self, job_id: str) -> bytes:
        raw: Any = await self.redis.get(self.keys.states(job_id))
        return bytes(raw or b"")


EVENT_FIELDS = ("s", "c", "e", "m", "a", "ts", "d", "k", "f", "t")  # the order of report.lua's 'x' field


def event_dict(job_id: str, entry_id: bytes | str, fields: dict[bytes, bytes] | dict[str, str]) -> dict[str, Any]:
    """An event as the API gives it, from an attempt's compact entry (``r`` and ``x``, written by
    report.lua) or an entry with one field per value (asynchronous bounces, earlier versions)."""
    f = {_text(key): _text(value) for key, value in fields.items()}
    packed = f.pop("x", None)
    if packed is not None:
        f.update(zip(EVENT_FIELDS, packed.split("|", len(EVENT_FIELDS) - 1), strict=False))
        f = {key: value for key, value in f.items() if value != "" and (key != "d" or value == "1")}
    return {
        "id": _text(entry_id),
        "job": job_id,
        "rcpt": f.get("r", ""),
        "status": f.get("s", ""),
        "code": int(f["c"]) if f.get("c", "0").isdigit() and f.get("c") != "0" else None,
        "enhanced": f.get("e") or None,
        "reply": f.get("t", ""),
        "mx": f.get("m") or None,
        "attempt": int(f.get("a", "0") or 0),
        "ts": int(f.get("ts", "0")) / 1000.0,
        "possible_duplicate": f.get("d") == "1",
        "category": f.get("k") or None,
        "fault": f.get("f") or None,
        "source": f.get("src", "smtp"),  # smtp (an attempt), async (a later DSN), arf (a complaint)
        **({"verified": f.get("v") == "1", "applied": f.get("ap") == "1"} if "src" in f else {}),
    }


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
