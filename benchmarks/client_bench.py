"""SMTP senders with no queue, run as their own process so their CPU is theirs alone.

    python -m benchmarks.client_bench --impl bulkmail|aiosmtplib --target HOST:PORT[,HOST:PORT...]
        --connections 20 --messages N [--size 2048] [--rcpts 1] [--domains 1000] [--hosts 50]

* ``bulkmail``: this project's client alone (``engine.net.smtp_protocol.SmtpSession``),
  ``--depth`` transactions submitted ahead per connection (pipelined), on uvloop;
* ``aiosmtplib``: the naive sender of issue 3: ``SMTP.sendmail`` per message, one command
  per round trip, on uvloop. Also the injector that feeds the Postfix relay.

Connection ``c`` goes to target ``c % len(targets)`` and sends transactions c, c+C, c+2C...
Messages are personalized (rendered per recipient from pre-split byte templates) when
``--rcpts`` is 1, identical otherwise. A rendered message is canonical by construction
(CRLF text, ASCII values without CR or LF: ``tests/unit/test_bench_messages.py``), so
bulkmail's client is told so with ``Transaction.canonical``, exactly as a worker tells it
for every message ``engine.message`` renders; it still refuses NUL, checks the final CRLF
and dot-stuffs. ``--full-scan`` sends them as unproven (raw) messages instead. The identical
message of ``--rcpts`` > 1 is always sent as unproven, like a raw job's.

With several targets (the sinks, one per MX host) a transaction's recipients are in domains
served by that MX; with one (Postfix) they cycle over all domains. Prints one JSON object:
sent, failed, seconds and CPU seconds of this process measured around the sending alone
(interpreter start-up excluded).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

import uvloop

from benchmarks.workloads import DOMAIN, SENDER, MessageTemplate


@dataclass
class Plan:
    targets: list[tuple[str, int]]
    connections: int
    messages: int
    rcpts: int
    domains: int
    hosts: int
    template: MessageTemplate

    def transactions(self, c: int) -> Iterator[tuple[list[str], bytes]]:
        target = c % len(self.targets)
        per_host = max(self.domains // self.hosts, 1)
        shared = self.template.shared() if self.rcpts > 1 else b""
        for k in range(c, self.messages, self.connections):
            rcpts = []
            for r in range(k * self.rcpts, (k + 1) * self.rcpts):
                domain = r % self.domains if len(self.targets) == 1 else target + self.hosts * (r % per_host)
                rcpts.append(f"u{r}@d{domain}.{DOMAIN}")
            if self.rcpts == 1:
                yield rcpts, self.template.render(rcpts[0].encode(), f"Reader {k}".encode())
            else:
                yield rcpts, shared


@dataclass
class Tally:
    sent: int = 0
    failed: int = 0
    first_error: str | None = None

    def fail(self, error: object, count: int = 1) -> None:
        self.failed += count
        self.first_error = self.first_error or str(error)[:300]


async def bulkmail_connection(plan: Plan, c: int, tally: Tally, depth: int, canonical: bool) -> None:
    from engine.config import SmtpConfig
    from engine.net.smtp_protocol import SmtpSession
    from engine.smtp.transaction import Envelope, Transaction

    host, port = plan.targets[c % len(plan.targets)]
    async with asyncio.timeout(15):
        session = await SmtpSession.connect(host, port, server_name=host, config=SmtpConfig(helo=f"client.{DOMAIN}"))
    pending: deque[asyncio.Future[object]] = deque()

    async def settle() -> None:
        try:
            result = await pending.popleft()
        except Exception as exc:
            tally.fail(exc)
            return
        ok = all(r.delivered for r in result.recipients)  # type: ignore[attr-defined]
        if ok:
            tally.sent += 1
        else:
            tally.fail(result.recipients[0].reply)  # type: ignore[attr-defined]

    try:
        for rcpts, message in plan.transactions(c):
            txn = Transaction(Envelope(SENDER, tuple(rcpts)), message, canonical=canonical)
            pending.append(session.submit(txn))  # type: ignore[arg-type]
            if len(pending) >= depth:
                await settle()
        while pending:
            await settle()
    finally:
        await session.quit()


async def aiosmtplib_connection(plan: Plan, c: int, tally: Tally, depth: int, canonical: bool) -> None:
    import aiosmtplib

    host, port = plan.targets[c % len(plan.targets)]
    smtp = aiosmtplib.SMTP(hostname=host, port=port, local_hostname=f"client.{DOMAIN}", start_tls=False, timeout=60)
    await asyncio.wait_for(smtp.connect(), 15)
    try:
        for rcpts, message in plan.transactions(c):
            try:
                refused, _ = await smtp.sendmail(SENDER, rcpts, message)
            except aiosmtplib.SMTPException as exc:
                tally.fail(exc)
                if not smtp.is_connected:
                    raise
                continue
            if refused:
                tally.fail(refused)
            else:
                tally.sent += 1
    finally:
        if smtp.is_connected:
            await smtp.quit()


IMPLS: dict[str, Callable[[Plan, int, Tally, int, bool], Awaitable[None]]] = {
    "bulkmail": bulkmail_connection,
    "aiosmtplib": aiosmtplib_connection,
}


async def run(plan: Plan, impl: str, depth: int, timeout: float, full_scan: bool = False) -> dict[str, object]:
    tally = Tally()
    canonical = plan.rcpts == 1 and not full_scan
    cpu0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    tasks = [asyncio.create_task(IMPLS[impl](plan, c, tally, depth, canonical)) for c in range(plan.connections)]
    error = None
    try:
        async with asyncio.timeout(timeout):
            results = await asyncio.gather(*tasks, return_exceptions=True)
        lost = [r for r in results if isinstance(r, BaseException)]
        if lost:
            error = f"{len(lost)} of {plan.connections} connections failed: {lost[0]!r}"
    except TimeoutError:
        error = f"not finished after {timeout:.0f}s ({tally.sent} sent)"
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    seconds = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return {"impl": impl, "canonical": canonical and impl == "bulkmail", "sent": tally.sent, "failed": tally.failed,
            "first_error": tally.first_error, "seconds": seconds, "cpu_seconds": cpu, "error": error}


def parse_targets(text: str) -> list[tuple[str, int]]:
    found = []
    for item in text.split(","):
        host, _, port = item.rpartition(":")
        found.append((host, int(port)))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--impl", choices=sorted(IMPLS), required=True)
    parser.add_argument("--target", required=True, help="HOST:PORT[,HOST:PORT...]")
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--messages", type=int, required=True, help="transactions to send")
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--rcpts", type=int, default=1)
    parser.add_argument("--domains", type=int, default=1000)
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--depth", type=int, default=2, help="bulkmail: transactions outstanding per connection")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--full-scan", action="store_true",
                        help="bulkmail: prove every message canonical again (as for a raw message)")
    args = parser.parse_args()
    plan = Plan(parse_targets(args.target), args.connections, args.messages, args.rcpts, args.domains, args.hosts, MessageTemplate(args.size))
    factory = uvloop.new_event_loop if args.loop == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        result = runner.run(run(plan, args.impl, args.depth, args.timeout, args.full_scan))
    print(json.dumps(result), flush=True)
    sys.exit(0 if result["error"] is None and not result["failed"] else 1)


if __name__ == "__main__":
    main()
