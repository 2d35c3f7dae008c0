"""The conservation invariant, checked from Redis alone.

For every job: total == queued + in_flight + deferred + delivered + bounced +
expired + cancelled + suppressed, the counters agree with the per-recipient
state bytes, and every recipient index below total has a known state.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from engine.codec import unpack_indices
from engine.outcome import STATE_BYTES, STATUSES
from engine.queue.store import QueueStore


@dataclass(frozen=True, slots=True)
class AuditReport:
    job: str
    total: int
    counters: dict[str, int]
    states: dict[str, int]  # counted from the state bytes
    missing: list[int] = field(default_factory=list)  # indices without a known state (first 100)
    problems: list[str] = field(default_factory=list)
    # chunks taken out of circulation: {"chunk", "reason", "recipients" still queued in it}
    quarantined: list[dict[str, object]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


async def audit_job(store: QueueStore, job_id: str) -> AuditReport:
    status = await store.status(job_id)
    if status is None:
        return AuditReport(job_id, 0, {}, {}, problems=[f"no such job {job_id}"])
    raw = await store.state_bytes(job_id)
    total = int(status["total"])
    counted = Counter(raw[:total].decode("latin-1"))
    states = dict.fromkeys(STATUSES, 0)
    missing: list[int] = []
    for byte, n in counted.items():
        if byte in STATE_BYTES:
            states[STATE_BYTES[byte]] += n
        else:
            missing.extend(i for i, b in enumerate(raw[:total].decode("latin-1")) if b == byte)
    if len(raw) < total:
        missing.extend(range(len(raw), total))
    counters = {name: int(status[name]) for name in STATUSES}
    problems = []
    if sum(counters.values()) != total:
        problems.append(f"counters sum to {sum(counters.values())}, total is {total}")
    for name in STATUSES:
        if counters[name] != states[name]:
            problems.append(f"{name}: counter {counters[name]} but {states[name]} recipients in that state")
    if missing:
        problems.append(f"{len(missing)} recipients without a state (first: {missing[:10]})")
    quarantined = await quarantined_chunks(store, job_id, raw)
    return AuditReport(job_id, total, counters, states, sorted(missing)[:100], problems, quarantined)


async def quarantined_chunks(store: QueueStore, job_id: str, states: bytes) -> list[dict[str, object]]:
    """The job's quarantined chunks, with their reason and how many of their recipients are
    still queued (they are counted as queued: the invariant holds, but nobody will send them)."""
    found = []
    async for key, reason in store.redis.hscan_iter(store.keys.quarantine, match=f"{job_id}:*"):
        chunk = key.decode().partition(":")[2]
        packed: Any = await store.redis.hget(store.keys.chunks(job_id), f"{chunk}#")
        packed = bytes(packed or b"")
        indices = unpack_indices(packed[: len(packed) - len(packed) % 4])  # a corrupt list: what can be read
        waiting = sum(1 for i in indices if i < len(states) and states[i : i + 1] in (b"q", b"Q"))
        found.append({"chunk": key.decode(), "reason": reason.decode(errors="replace"), "recipients": waiting})
    return sorted(found, key=lambda entry: str(entry["chunk"]))
