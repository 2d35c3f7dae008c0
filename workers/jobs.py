"""Per-job context a worker needs to send: sender, compiled template, expiry."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from engine.config import BounceConfig, RetryConfig
from engine.errors import BulkmailError, CorruptData
from engine.job import JobSpec, Recipient
from engine.message import MessageTemplate
from engine.queue.store import JobMeta, QueueStore
from engine.retry import expires_at
from engine.smtp.transaction import Envelope, Transaction
from engine.verp import envelope_sender, trace_header
from workers.work import Item, Unit


@dataclass(slots=True, eq=False)
class JobContext:
    meta: JobMeta
    spec: JobSpec
    template: MessageTemplate
    expires_at: float  # epoch seconds after which recipients are expired, not retried
    bounce: BounceConfig | None = None  # VERP and trace headers when a bounce domain is set

    @property
    def job_id(self) -> str:
        return self.meta.job_id

    @property
    def sender_domain(self) -> str:
        return self.spec.sender.rpartition("@")[2]

    def transaction(self, unit: Unit, items: list[Item], date: bytes) -> Transaction:
        if self.template.identical:
            message = self.template.render_shared(date)
        else:
            rec = items[0].record
            message = self.template.render(Recipient(rec.to, rec.domain, rec.vars), rec.index, date)
        if self.bounce is None:
            return Transaction(
                Envelope(self.spec.sender, tuple(item.record.to for item in items)), message, unit,
                self.template.canonical,
            )
        # VERP: the envelope sender names this recipient (one per transaction), and a
        # signed trace header lets a complaint without the envelope find it too.
        rec = items[0].record
        name, value = trace_header(self.bounce, self.job_id, rec.index, rec.to)
        sender = envelope_sender(self.bounce, self.job_id, rec.index)
        trace = f"{name}: {value}\r\n".encode()  # ASCII, one line: canonical like the rest
        return Transaction(Envelope(sender, (rec.to,)), trace + message, unit, self.template.canonical)

    @property
    def verp(self) -> bool:
        return self.bounce is not None


class JobCache:
    """Compiled templates for the jobs this worker is working on (bounded LRU)."""

    def __init__(
        self, store: QueueStore, retry: RetryConfig, msgid_domain: str, bounce: BounceConfig, size: int = 256
    ) -> None:
        self._store = store
        self._retry = retry
        self._bounce = bounce if bounce.domain and bounce.secret else None
        self._msgid_domain = msgid_domain
        self._size = size
        self._jobs: OrderedDict[str, JobContext] = OrderedDict()

    async def get(self, job_id: str) -> JobContext | None:
        ctx = self._jobs.get(job_id)
        if ctx is not None:
            self._jobs.move_to_end(job_id)
            return ctx
        meta = await self._store.job_meta(job_id)
        if meta is None:
            return None
        try:
            spec = JobSpec.from_record(meta.template)
            template = MessageTemplate(spec, job_id=job_id, msgid_domain=self._msgid_domain)
        except (BulkmailError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CorruptData(f"corrupt job template: {type(exc).__name__}: {exc}") from exc
        ctx = JobContext(meta, spec, template, expires_at(meta.created, meta.max_age, self._retry), self._bounce)
        self._jobs[job_id] = ctx
        if len(self._jobs) > self._size:
            self._jobs.popitem(last=False)
        return ctx
