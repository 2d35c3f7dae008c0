"""Workload (d): a transactional message submitted every 100 ms while a newsletter drains.

Latency is submit-to-250: from the moment the submitter starts handing the message over
(``bulkmail``: ``Client.submit`` of a one-recipient transactional job; Postfix: an SMTP
connection to its smtpd) to the moment the recording sink at the transactional domain's MX
writes 250 to the end of data (both read ``time.time()`` on this machine). Messages are
matched by recipient, unique per run.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable

from benchmarks.environment import Environment
from benchmarks.workloads import tx_recipient


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[max(math.ceil(pct / 100 * len(ordered)) - 1, 0)]


class TransactionalProbe:
    def __init__(self, env: Environment, run: int, send: Callable[[str], Awaitable[None]], interval: float = 0.1) -> None:
        self.env = env
        self.run_id = run
        self.send = send
        self.interval = interval
        self.submitted: dict[str, float] = {}
        self.accepted: dict[str, float] = {}  # when the submit call returned (the queue has it)
        self.errors: list[str] = []
        self._task: asyncio.Task[None] | None = None
        self._sends: set[asyncio.Task[None]] = set()

    def start(self, limit: int) -> None:
        self._task = asyncio.create_task(self._loop(limit))

    async def _loop(self, limit: int) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for k in range(limit):  # bounded: the caller's run timeout / interval
            await asyncio.sleep(max(start + k * self.interval - loop.time(), 0))
            rcpt = tx_recipient(self.run_id, k)
            self.submitted[rcpt] = time.time()
            task = asyncio.create_task(self._one(rcpt))
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)

    async def _one(self, rcpt: str) -> None:
        try:
            await asyncio.wait_for(self.send(rcpt), 30)
            self.accepted[rcpt] = time.time()
        except Exception as exc:
            self.errors.append(f"{rcpt}: {exc!r}")

    async def finish(self, grace: float = 15.0) -> dict[str, object]:
        """Stop submitting; wait up to ``grace`` s for the submitted ones to arrive; the figures."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        deadline = time.monotonic() + grace
        while True:
            seen = self.env.arrivals_seen()
            missing = [r for r in self.submitted if r not in seen]
            if not missing or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        for task in list(self._sends):
            task.cancel()
        latencies = [(seen[r] - t) * 1000 for r, t in self.submitted.items() if r in seen]
        figures: dict[str, object] = {"tx_sent": len(self.submitted), "tx_missing": len(missing)}
        if latencies:
            figures |= {"p50_ms": round(percentile(latencies, 50), 2), "p99_ms": round(percentile(latencies, 99), 2),
                        "max_ms": round(max(latencies), 2)}
        accepts = [(t - self.submitted[r]) * 1000 for r, t in self.accepted.items()]
        if accepts:  # where the latency goes: handing over vs queue-to-250
            figures |= {"submit_p50_ms": round(percentile(accepts, 50), 2),
                        "submit_p99_ms": round(percentile(accepts, 99), 2)}
        if self.errors:
            figures["tx_errors"] = self.errors[:3]
        return figures
