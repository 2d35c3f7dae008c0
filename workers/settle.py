"""Decide each recipient's outcome from a verdict: retry time, expiry, duplicate flag."""

from __future__ import annotations

import random
from dataclasses import replace

from engine.classify import Verdict
from engine.clock import Clock
from engine.config import RetryConfig
from engine.outcome import DEFERRED, EXPIRED, QUEUED, Outcome
from engine.queue.suppression import Suppressed
from engine.retry import next_attempt
from workers.jobs import JobContext
from workers.reporter import Reporter
from workers.work import Item


class Settler:
    def __init__(self, reporter: Reporter, retry: RetryConfig, clock: Clock, rng: random.Random) -> None:
        self.reporter = reporter
        self.retry = retry
        self.clock = clock
        self.rng = rng

    def settle(
        self,
        job: JobContext,
        item: Item,
        verdict: Verdict,
        mx: str = "",
        *,
        bucket: str = "",
        unsure: bool = False,
        attempted: bool = True,
        retry_in: float | None = None,
    ) -> None:
        """``attempted`` False: decided without talking to any server (expired in the queue,
        site paused); ``retry_in`` overrides the backoff schedule (operator pause)."""
        rec = item.record
        status = verdict.status
        retry_at = None
        retry_record = None
        if status == DEFERRED:
            now = self.clock.wall()
            if retry_in is not None:
                retry_at = now + retry_in
            else:
                retry_at = next_attempt(item.attempt, now, self.retry, self.rng)
            if retry_at >= job.expires_at:
                status, retry_at = EXPIRED, None
            else:
                retry_record = replace(rec, attempts=rec.attempts + (1 if attempted else 0))
        outcome = Outcome(
            index=rec.index,
            rcpt=rec.to,
            status=status,
            code=verdict.code,
            enhanced=verdict.enhanced,
            reply=verdict.text[:1000],
            mx=mx,
            attempt=item.attempt if attempted else rec.attempts,
            possible_duplicate=item.possible_duplicate or unsure,
            retry_at=retry_at,
            category="expired" if status == EXPIRED and verdict.status != EXPIRED else verdict.category,
            fault=verdict.fault,
        )
        self.reporter.add(item.held, outcome, retry_record, bucket)
        if verdict.suppress and attempted:
            entry = Suppressed(job.sender_domain, rec.to, verdict.text[:200], "smtp", 0.0, verdict.category)
            self.reporter.suppress(entry)

    def hand_back(self, item: Item) -> None:
        """Queue a recipient again without an attempt (its job was paused)."""
        rec = item.record
        outcome = Outcome(index=rec.index, rcpt=rec.to, status=QUEUED, attempt=rec.attempts)
        self.reporter.add(item.held, outcome, rec)
