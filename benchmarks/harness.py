"""Run the selected workloads: every case of a workload once per repeat, side by side.

Repeats are interleaved (repeat 1 of every system, then repeat 2, ...) so that a noisy
stretch of the machine hits every system, and the ratios stay comparable. Every other repeat
runs the cases in reverse order: two close variants (g's events on and off) otherwise always
met the machine in the same order, and the order decided which came out faster.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from benchmarks.context import Context
from benchmarks.measure import BenchError, Run, Summary
from benchmarks.systems.bulkmail import run_bulkmail
from benchmarks.systems.ceiling import run_client, run_smtp_source
from benchmarks.systems.postfix import run_postfix
from benchmarks.workloads import Case, Workload

System = Callable[[Context, Workload, Case, int], Awaitable[Run]]
SYSTEMS: dict[str, System] = {
    "smtp-source": run_smtp_source,
    "client": run_client,
    "naive": run_client,
    "postfix": run_postfix,
    "bulkmail": run_bulkmail,
}


@dataclass
class WorkloadResult:
    workload: Workload
    units: int
    summaries: dict[str, Summary]
    seconds: float


def _line(run: Run, unit: str) -> str:
    if run.error:
        return f"FAILED: {run.error}"
    cpu = run.cpu_us("system")
    text = f"{run.rate:>10,.0f} {unit}/s in {run.seconds:6.2f}s"
    if cpu is not None:
        text += f", {cpu:,.0f} us CPU/{unit[:-1]}"
    for key in ("p50_ms", "p99_ms", "redis_bytes_per_recipient"):
        if run.extra.get(key) is not None:
            text += f", {key} {run.extra[key]}"
    return text


async def run_workload(ctx: Context, workload: Workload, units: int, repeat: int, systems: set[str] | None) -> WorkloadResult:
    units -= units % workload.rcpts_per_txn
    cases = [c for c in workload.cases if systems is None or c.system in systems]
    summaries = {case.label: Summary(case.label, []) for case in cases}
    started = time.monotonic()
    print(f"\n== {workload.key}: {workload.title} ({units:,} {workload.unit}, {repeat} repeat(s))", flush=True)
    for rep in range(repeat):
        for case in cases if rep % 2 == 0 else cases[::-1]:
            summary = summaries[case.label]
            if summary.runs and not summary.ok:
                continue  # failed on every repeat so far: do not spend the timeout again
            try:
                run = await SYSTEMS[case.system](ctx, workload, case, units)
            except BenchError as exc:
                run = Run(case.label, 0, 0.0, error=str(exc))
            summary.runs.append(run)
            print(f"   [{rep + 1}/{repeat}] {case.label:<22} {_line(run, workload.unit)}", flush=True)
            if run.error:
                print(f"   {case.label}: {run.error}", file=sys.stderr, flush=True)
    return WorkloadResult(workload, units, summaries, time.monotonic() - started)


async def run_all(ctx: Context, workloads: list[Workload], messages: int, e_recipients: int, repeat: int,
                  systems: set[str] | None) -> list[WorkloadResult]:
    results = []
    for workload in workloads:
        units = e_recipients if workload.memory else messages
        results.append(await run_workload(ctx, workload, units, repeat, systems))
    return results
