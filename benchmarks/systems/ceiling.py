"""The SMTP ceiling: senders with no queue straight into the smtp-sinks.

* ``smtp-source``: Postfix's C load generator, ``--ceiling-hosts`` processes (one per sink)
  sharing ``--connections`` persistent sessions (-d), one pre-rendered message file (-F), a
  unique recipient per message (-N). CPU counted: the smtp-source processes (wait4).
* ``client``: bulkmail's SMTP client alone (``benchmarks.client_bench --impl bulkmail``);
  its ``full_scan`` variant proves every message canonical again (``--full-scan``).
* ``naive``: aiosmtplib on uvloop (``benchmarks.client_bench --impl aiosmtplib``).
  CPU counted for both: the sender process around its sending (its own getrusage).

For each, ``sinks`` is the CPU of every smtp-sink (and the recording sink) over the run.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

from benchmarks.context import Context
from benchmarks.measure import BenchError, Run
from benchmarks.procstat import CpuMeter, run_measured, start, wait_measured
from benchmarks.workloads import DOMAIN, SENDER, Case, MessageTemplate, Workload

SMTP_SOURCE = "/usr/sbin/smtp-source"


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


async def _sink_delta(ctx: Context, before: int, expected: int, timeout: float = 10.0) -> int:
    """Messages the sinks counted since ``before``, once they reach ``expected`` (or the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        seen = ctx.env.sink_messages() - before
        if seen >= expected or time.monotonic() > deadline:
            return seen
        await asyncio.sleep(0.02)


async def run_smtp_source(ctx: Context, workload: Workload, case: Case, units: int) -> Run:
    transactions = units // workload.rcpts_per_txn
    message = ctx.workdir / f"message-{workload.size}.eml"
    message.write_bytes(MessageTemplate(workload.size).shared())
    targets = ctx.ceiling_targets
    sessions, counts = _split(ctx.connections, len(targets)), _split(transactions, len(targets))
    before = ctx.env.sink_messages()
    meter = CpuMeter({"sinks": ctx.env.sink_pids}).start()
    began = time.monotonic()
    procs = []
    with open(ctx.workdir / "smtp-source.log", "ab") as log:
        for i, ((host, port), s, m) in enumerate(zip(targets, sessions, counts, strict=True)):
            argv = [SMTP_SOURCE, "-d", "-s", str(max(s, 1)), "-m", str(m), "-r", str(workload.rcpts_per_txn),
                    "-N", "-F", str(message), "-f", SENDER, "-t", f"bench@d{i}.{DOMAIN}",
                    "-M", f"client.{DOMAIN}", f"{host}:{port}"]
            procs.append(start(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log))
    timeout = ctx.limits.run_timeout(units)
    cpu = 0.0
    try:
        for proc in procs:
            cpu += await asyncio.to_thread(wait_measured, proc, max(timeout - (time.monotonic() - began), 1.0))
    except TimeoutError as exc:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        raise BenchError(f"smtp-source: {exc}") from None
    seconds = time.monotonic() - began
    failed = [proc.returncode for proc in procs if proc.returncode]
    seen = await _sink_delta(ctx, before, transactions)
    cpu_groups = {"system": cpu, **meter.stop()}
    error = f"smtp-source exited {failed} (see smtp-source.log)" if failed else None
    if not error and seen < transactions:
        error = f"the sinks counted {seen} of {transactions} messages"
    return Run(case.label, units, seconds, cpu_groups, {"sink_transactions": seen}, error)


async def run_client(ctx: Context, workload: Workload, case: Case, units: int) -> Run:
    impl = "bulkmail" if case.system == "client" else "aiosmtplib"
    transactions = units // workload.rcpts_per_txn
    targets = ",".join(f"{h}:{p}" for h, p in ctx.ceiling_targets)
    timeout = ctx.limits.run_timeout(units)
    argv = [sys.executable, "-m", "benchmarks.client_bench", "--impl", impl, "--target", targets,
            "--connections", str(ctx.connections), "--messages", str(transactions), "--size", str(workload.size),
            "--rcpts", str(workload.rcpts_per_txn), "--domains", str(workload.domains),
            "--hosts", str(ctx.env.hosts), "--timeout", str(timeout)]
    if case.param("full_scan"):
        argv.append("--full-scan")
    before = ctx.env.sink_messages()
    meter = CpuMeter({"sinks": ctx.env.sink_pids}).start()
    log = ctx.workdir / f"client_bench-{impl}.log"
    try:
        rc, out, _, _ = await asyncio.to_thread(run_measured, argv, timeout + 30, log)
    except TimeoutError as exc:
        raise BenchError(f"{case.label}: {exc}") from None
    sinks = meter.stop()
    try:
        report = json.loads(out.strip().splitlines()[-1])
    except (IndexError, ValueError):
        tail = log.read_text(errors="replace")[-1500:]
        raise BenchError(f"{case.label}: client_bench exited {rc} without a report: {tail}") from None
    seen = await _sink_delta(ctx, before, report["sent"])
    error = report["error"] or (f"{report['failed']} failed, first: {report['first_error']}" if report["failed"] else None)
    sent_units = report["sent"] * workload.rcpts_per_txn
    return Run(case.label, sent_units, report["seconds"], {"system": report["cpu_seconds"], **sinks},
               {"sink_transactions": seen}, error)
