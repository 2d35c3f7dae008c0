"""Recording asynchronous bounces and complaints against the recipients they are about.

A report reaches a recipient through a VERP token (``bounces+TOKEN@domain``) or
our trace header (``engine.verp``). ``BounceStore.apply`` resolves the job
(a token may carry a digest of the job id), verifies the signature, reads the
sender's domain from the job, and runs ``lua/async_bounce.lua``: one atomic
step that moves the recipient D -> b for a permanent failure, appends the
event (``k`` category, ``f`` fault, ``src`` async/arf, ``v`` verified,
``ap`` applied), and updates the suppression list and the complaint counters.

What cannot be verified (a bad signature, an unknown job or index) changes
nothing: it is appended to the capped ``{ns}:bounces:unverified`` stream.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from engine.bounce_rules import RECIPIENT
from engine.clock import Clock
from engine.config import BounceConfig
from engine.queue.scripts import load_source
from engine.queue.suppression import BounceKeys, Suppressed, domain_of, guarded, normalise
from engine.verp import VerpRef, job_digest, verify


@dataclass(frozen=True, slots=True)
class Report:
    """One recipient's asynchronous result, ready to record."""

    rcpt: str
    status: str  # bounced | delayed | complained
    code: int = 0
    enhanced: str = ""
    text: str = ""
    remote_mta: str = ""
    category: str = ""
    fault: str = ""
    permanent: bool = False
    source: str = "async"  # async | arf

    @property
    def suppress(self) -> bool:
        if self.source == "arf":
            return True
        return self.status == "bounced" and self.permanent and self.fault == RECIPIENT


@dataclass(frozen=True, slots=True)
class Applied:
    job_id: str
    index: int
    verified: bool
    applied: bool  # the recipient's state changed (D -> b)
    prior: str  # its state byte before ("" when the job or index is unknown)
    why: str = ""  # for what was not verified: bad-signature | unknown-job | unknown-index


class BounceStore:
    def __init__(
        self, redis: Redis, namespace: str, clock: Clock, config: BounceConfig, events_maxlen: int = 2_000_000
    ) -> None:
        self.redis = redis
        self.keys = BounceKeys(namespace)
        self.clock = clock
        self.config = config
        self.events_maxlen = events_maxlen
        self._script: AsyncScript = redis.register_script(load_source("async_bounce"))

    async def resolve(self, ref: VerpRef) -> str | None:
        """The job id a token names: itself, or the job whose id has its digest."""
        if ref.job_id is not None:
            return ref.job_id
        cursor: int = 0
        while True:  # long or mixed-case ids are rare; scan the job index for the digest
            cursor, batch = await guarded(self.redis.zscan(self.keys.jobs, cursor, count=1000))
            for member, _score in batch:
                job_id = member.decode()
                if job_digest(job_id) == ref.digest:
                    return job_id
            if cursor == 0:
                return None

    async def apply_verp(self, ref: VerpRef, reports: Sequence[Report], envelope_from: str = "") -> Applied:
        job_id = await self.resolve(ref)
        if job_id is None or not verify(self.config, ref, job_id):
            why = "unknown-job" if job_id is None else "bad-signature"
            await self.unverified(f"verp {ref.index} {job_id or '~' + ref.digest}", why, reports, envelope_from)
            return Applied(job_id or "", ref.index, False, False, "", why)
        return await self.apply(job_id, ref.index, reports, envelope_from)

    async def apply(self, job_id: str, index: int, reports: Sequence[Report], envelope_from: str = "") -> Applied:
        """Record verified ``reports`` (normally one) for recipient ``index`` of ``job_id``."""
        sender: Any = await guarded(self.redis.hget(self.keys.job(job_id), "from"))
        if sender is None:
            await self.unverified(f"job {job_id} {index}", "unknown-job", reports, envelope_from)
            return Applied(job_id, index, False, False, "", "unknown-job")
        sender_domain = domain_of(sender.decode())
        result = Applied(job_id, index, True, False, "")
        for report in reports:
            result = await self._apply_one(job_id, index, sender_domain, report)
            if result.why:
                await self.unverified(f"job {job_id} {index}", result.why, reports, envelope_from)
                break
        return result

    async def _apply_one(self, job_id: str, index: int, sender_domain: str, report: Report) -> Applied:
        k = self.keys
        now = self.clock.wall()
        rcpt = normalise(report.rcpt)
        entry = Suppressed(sender_domain, rcpt, f"{report.category}: {report.text}"[:300], report.source, now,
                           report.category)  # fmt: skip
        counter = domain_of(rcpt) if report.source == "arf" else ""
        keys = [k.job(job_id), k.states(job_id), k.events(job_id), k.suppress(sender_domain), k.suppress_domains,
                k.complaints(sender_domain)]  # fmt: skip
        args: list[Any] = [
            index, rcpt, report.status, report.code, report.enhanced, report.text[:1000], report.remote_mta,
            int(now * 1000), report.category, report.fault, report.source, self.events_maxlen,
            1 if report.status == "bounced" and report.permanent else 0, 1 if report.suppress else 0,
            entry.to_json(), sender_domain, counter,
        ]  # fmt: skip
        applied, prior = await guarded(self._script(keys=keys, args=args))
        prior = prior.decode() if isinstance(prior, bytes) else str(prior)
        return Applied(job_id, index, True, bool(applied), prior, "" if prior else "unknown-index")

    async def unverified(self, ref: str, why: str, reports: Sequence[Report], envelope_from: str = "") -> None:
        fields: dict[Any, Any] = {
            "ref": ref,
            "why": why,
            "from": envelope_from,
            "ts": str(int(self.clock.wall() * 1000)),
            "reports": json.dumps([[r.rcpt, r.status, r.code, r.enhanced, r.category, r.source] for r in reports]),
        }
        await guarded(self.redis.xadd(self.keys.unverified, fields, maxlen=self.config.unverified_maxlen))

    async def unverified_entries(self, count: int = 100) -> list[dict[str, str]]:
        rows = await guarded(self.redis.xrevrange(self.keys.unverified, count=count))
        return [{k.decode(): v.decode() for k, v in fields.items()} for _id, fields in rows]
