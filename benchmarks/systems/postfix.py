"""Postfix as a relay, end to end until its queue is empty.

A private Postfix (``tests.support.postfix.PostfixInstance``, started once per benchmark run
on 127.0.0.10) relays every benchmark domain by transport_maps to the same MX host the DNS
zone gives (``[127.0.1.x]:port``, the smtp-sinks). Its settings are Postfix's defaults apart
from what a private instance needs (see PostfixInstance): queue files are fsynced before
smtpd answers 250, as in any Postfix.

A run injects the messages by SMTP with ``benchmarks.client_bench --impl aiosmtplib``
(``--connections`` connections, a personalized message per recipient, or 10 RCPT per
message for workload c) and ends when the injector has finished and every queue
(maildrop, incoming, active, deferred, hold) is empty. The time is from the injector's
start to that moment.

CPU counted as ``system``: the Postfix master and all its descendants (smtpd, cleanup,
qmgr, trivial-rewrite, smtp, postlogd, ...), including those that exited during the run
(their parent's cutime/cstime). ``injector``: the aiosmtplib injector (wait4). ``sinks``:
every sink. None of the injector's CPU is charged to Postfix.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time

import aiosmtplib

from benchmarks.context import Context
from benchmarks.measure import BenchError, Run, wait_for_progress
from benchmarks.procstat import CpuMeter, run_measured
from benchmarks.transactional import TransactionalProbe
from benchmarks.workloads import Case, Workload, tx_message
from tests.support.postfix import PostfixInstance


def _master_pid(postfix: PostfixInstance) -> int:
    return int((postfix.queue_dir / "pid" / "master.pid").read_text().strip())


async def _queued(postfix: PostfixInstance) -> int:
    return sum((await asyncio.to_thread(postfix.queue_counts)).values())


async def run_postfix(ctx: Context, workload: Workload, case: Case, units: int) -> Run:
    postfix = await asyncio.to_thread(ctx.env.postfix)
    if await _queued(postfix):
        raise BenchError(f"Postfix queue not empty before the run: {postfix.queue_counts()}")
    transactions = units // workload.rcpts_per_txn
    timeout = ctx.limits.run_timeout(units)
    host, port = postfix.address
    argv = [sys.executable, "-m", "benchmarks.client_bench", "--impl", "aiosmtplib", "--target", f"{host}:{port}",
            "--connections", str(ctx.connections), "--messages", str(transactions), "--size", str(workload.size),
            "--rcpts", str(workload.rcpts_per_txn), "--domains", str(workload.domains), "--timeout", str(timeout)]
    sinks_before = ctx.env.sink_messages()
    meter = CpuMeter({"system": [_master_pid(postfix)], "sinks": ctx.env.sink_pids}).start()
    probe = None
    if workload.transactional:
        probe = TransactionalProbe(ctx.env, ctx.next_id(), lambda rcpt: _send_tx(postfix, rcpt))
        probe.start(int(timeout / probe.interval))
    start = time.monotonic()
    log = ctx.workdir / "postfix-injector.log"
    injector = asyncio.create_task(asyncio.to_thread(run_measured, argv, timeout + 30, log))

    async def state() -> tuple[int, bool]:
        if injector.done():
            rc, out, _, _ = injector.result()  # raises TimeoutError from the injector
            if rc != 0:
                raise BenchError(f"Postfix injector exited {rc}: {out.strip()[-600:]} {log.read_text()[-600:]}")
        delivered = ctx.env.sink_messages() - sinks_before
        if not injector.done() or (workload.rcpts_per_txn == 1 and delivered < transactions):
            return delivered, False  # walking a queue of 100,000 files costs CPU: only near the end
        # with transactional messages arriving every 100 ms the queue is rarely seen empty
        return delivered, (probe is not None and delivered >= transactions) or not await _queued(postfix)

    async def describe() -> str:
        return f"queues {postfix.queue_counts()}; maillog tail:\n{postfix.diagnostics(10)}"

    try:
        end = await wait_for_progress(state, what="Postfix relay", total=transactions, limits=ctx.limits,
                                      interval=0.25, describe=describe)
    except TimeoutError as exc:
        raise BenchError(f"Postfix injector: {exc}") from None
    finally:
        if not injector.done():
            with contextlib.suppress(Exception):
                await injector
        extra = await probe.finish() if probe else {}
    _, out, _, injector_cpu = injector.result()
    cpu = {**meter.stop(), "injector": injector_cpu}
    delivered = ctx.env.sink_messages() - sinks_before
    extra["sink_transactions"] = delivered
    report = json.loads(out.strip().splitlines()[-1])
    extra["injector_msgs_per_s"] = round(report["sent"] / max(report["seconds"], 1e-9), 1)
    error = None
    if workload.rcpts_per_txn == 1 and delivered < transactions:
        error = f"the sinks counted {delivered} of {transactions} messages (bounced or lost: see the Postfix maillog)"
    return Run(case.label, units, end - start, cpu, extra, error)


async def _send_tx(postfix: PostfixInstance, rcpt: str) -> None:
    host, port = postfix.address
    smtp = aiosmtplib.SMTP(hostname=host, port=port, start_tls=False, timeout=30)
    await smtp.connect()
    try:
        await smtp.sendmail("alerts@bench.test", [rcpt], tx_message(rcpt))
    finally:
        await smtp.quit()
