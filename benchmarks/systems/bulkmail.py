"""bulkmail end to end: from ``bulkmail submit`` until every recipient's outcome is in Redis.

Each run gets a fresh ``redis-server`` (``engine.queue.embedded.RedisProcess``) on a free
loopback port with AOF on and ``appendfsync always`` (every write fsynced before Redis
replies, so a submitted job is on disk when ``submit`` returns), in a directory on disk.
``bulkmail serve --workers N --redis URL --dns HOST:PORT --smtp-port P --allow-private-mx
--helo NAME --config FILE.toml`` runs as a subprocess against the loopback DNS server and
the sinks. Once its workers are connected to Redis, the clock starts; ``bulkmail submit
JOB.json`` runs as a subprocess; the run ends when ``status`` says ``done`` (or nothing is
queued, in flight or deferred). Workload e submits with no serve running (to measure Redis
``used_memory`` per queued recipient), then starts serve and times the drain from its launch
(worker start-up included, and all of serve's CPU).

CPU counted as ``system``: the serve process and all its descendants (the workers,
including any that exited), the redis-server, and the submit process (wait4). Reported
apart: ``sinks`` (every sink) and ``dns`` (the loopback DNS server).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.context import Context
from benchmarks.measure import BenchError, Run, wait_for_progress
from benchmarks.procstat import (
    CpuMeter,
    alive,
    children,
    cpu_seconds,
    descendants,
    run_measured,
    tree_cpu,
    vm_hwm_bytes,
)
from benchmarks.transactional import TransactionalProbe
from benchmarks.workloads import Case, Workload, tx_job, write_job
from engine.client import Client
from engine.queue.connect import open_redis
from engine.queue.embedded import RedisProcess
from tests.support.ports import free_port

HELO = "bulkmail.bench.test"


def bulkmail_argv() -> list[str]:
    found = shutil.which("bulkmail")
    return [found] if found else [sys.executable, "-m", "workers.cli"]


def toml_text(config: dict[str, Any], prefix: str = "") -> str:
    """Nested tables of scalars and lists: all the engine configuration needs."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, list | tuple):
            return "[" + ", ".join(value(item) for item in v) + "]"
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    text = ""
    for name, section in config.items():
        table = f"{prefix}{name}"
        text += f"[{table}]\n" + "".join(f"{k} = {value(v)}\n" for k, v in section.items() if not isinstance(v, dict)) + "\n"
        text += toml_text({k: v for k, v in section.items() if isinstance(v, dict)}, f"{table}.")
    return text


def job_file(ctx: Context, workload: Workload, recipients: int) -> Path:
    path = ctx.workdir / f"job-{workload.key}-{recipients}.json"
    if not path.exists():
        write_job(path, workload, recipients, f"bench-{workload.key}")
    return path


class Serve:
    """``bulkmail serve`` as a subprocess, stopped by PID (SIGTERM, then SIGKILL of it and its workers)."""

    def __init__(self, ctx: Context, url: str, workers: int, config: Path, log: Path) -> None:
        dns = "{}:{}".format(*ctx.env.dns_address)
        self.argv = [*bulkmail_argv(), "serve", "--workers", str(workers), "--redis", url, "--dns", dns,
                     "--smtp-port", str(ctx.env.sink_port), "--allow-private-mx", "--helo", HELO, "--config", str(config)]
        self.workers = workers
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self, redis_url: str, timeout: float = 30.0, *, wait: bool = True) -> None:
        """Start serve; with ``wait``, return once every worker waits for work (bounded by ``timeout``)."""
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        if not wait:
            return
        probe = open_redis(redis_url)
        try:
            deadline = time.monotonic() + timeout
            while True:
                if self.proc.poll() is not None:
                    raise BenchError(f"bulkmail serve exited {self.proc.returncode}: {self.tail()}")
                # an idle worker blocks on the wake list; if none is seen blocking, connections will do
                listing = await probe.client_list()
                blocked = sum("b" in entry.get("flags", "") for entry in listing)
                waited = time.monotonic() - (deadline - timeout)
                if blocked >= self.workers or (waited > 10 and len(listing) > 2 * self.workers):
                    return
                if time.monotonic() > deadline:
                    raise BenchError(f"bulkmail serve: {self.workers} workers not connected to Redis after {timeout:.0f}s: {self.tail()}")
                await asyncio.sleep(0.05)
        finally:
            await probe.aclose()

    def tail(self, chars: int = 1500) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def worker_peaks(self) -> list[int]:
        assert self.proc is not None
        return [peak for pid in children(self.proc.pid) if (peak := vm_hwm_bytes(pid))]

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        family = descendants(self.proc.pid)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            print(f"warning: bulkmail serve (pid {self.proc.pid}) ignored SIGTERM for {timeout:.0f}s: killing it", file=sys.stderr)
            self.proc.kill()
            self.proc.wait(timeout)
        for pid in alive(family):  # workers outliving their supervisor
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def run_bulkmail(ctx: Context, workload: Workload, case: Case, units: int) -> Run:
    run_id = ctx.next_id()
    base = ctx.workdir / f"bulkmail-{run_id}"
    base.mkdir()
    workers = int(case.param("workers", ctx.workers))  # type: ignore[arg-type]
    config = {name: dict(section) for name, section in ctx.bulkmail_config.items()}
    if case.param("events") is not None:
        config.setdefault("queue", {})["events"] = bool(case.param("events"))
    (base / "bulkmail.toml").write_text(toml_text(config))
    job = job_file(ctx, workload, units)
    fsync = str(config.get("redis", {}).get("appendfsync", "always"))  # [redis] appendfsync in --bulkmail-config
    redis = RedisProcess(base / "redis", port=free_port("127.0.0.1"), appendfsync=fsync)
    await asyncio.to_thread(redis.start)
    serve = Serve(ctx, redis.url, workers, base / "bulkmail.toml", base / "serve.log")
    client = Client(open_redis(redis.url))
    try:
        return await _measure(ctx, workload, case, units, run_id, job, redis, serve, client)
    finally:
        await asyncio.to_thread(serve.stop)
        await client.close()
        await asyncio.to_thread(redis.stop)
        if not ctx.keep:
            shutil.rmtree(base, ignore_errors=True)


async def _submit(ctx: Context, job: Path, url: str, log: Path) -> tuple[str, float, float]:
    argv = [*bulkmail_argv(), "submit", str(job), "--redis", url]
    try:
        rc, out, seconds, cpu = await asyncio.to_thread(run_measured, argv, ctx.limits.base * 10, log)
    except TimeoutError as exc:
        raise BenchError(f"bulkmail submit: {exc}") from None
    if rc != 0 or not out.strip():
        raise BenchError(f"bulkmail submit exited {rc}: {log.read_text(errors='replace')[-1500:]}")
    return out.split()[0], seconds, cpu


async def _measure(ctx: Context, workload: Workload, case: Case, units: int, run_id: int, job: Path,
                   redis: RedisProcess, serve: Serve, client: Client) -> Run:
    extra: dict[str, Any] = {}
    submit_log = job.parent / f"submit-{run_id}.log"
    assert redis.pid is not None
    redis_cpu0, probe = cpu_seconds(redis.pid), None
    if workload.memory:
        before = (await client.redis.info("memory"))["used_memory"]
        job_id, submit_seconds, submit_cpu = await _submit(ctx, job, redis.url, submit_log)
        after = (await client.redis.info("memory"))["used_memory"]
        extra["redis_bytes_per_recipient"] = round((after - before) / units, 1)
        extra["redis_used_memory_mb"] = round(after / 2**20, 1)
        # the drain is timed from serve's launch: its workers find the job at once, never idle
        meter = CpuMeter({"sinks": ctx.env.sink_pids, "dns": ctx.env.dns_pids}).start()
        serve_cpu0, start = 0.0, time.monotonic()
        await serve.start(redis.url, wait=False)
    else:
        await serve.start(redis.url)
        assert serve.proc is not None
        serve_cpu0, start = tree_cpu(serve.proc.pid), time.monotonic()
        meter = CpuMeter({"sinks": ctx.env.sink_pids, "dns": ctx.env.dns_pids}).start()
        if workload.transactional:
            probe = TransactionalProbe(ctx.env, run_id, lambda rcpt: client.submit(tx_job(rcpt)))  # type: ignore[arg-type,return-value]
            probe.start(int(ctx.limits.run_timeout(units) / probe.interval))
        job_id, submit_seconds, submit_cpu = await _submit(ctx, job, redis.url, submit_log)
    extra["submit_seconds"] = round(submit_seconds, 3)
    last: dict[str, Any] = {}

    async def state() -> tuple[int, bool]:
        status = await client.status(job_id)
        if status is None:
            raise BenchError(f"bulkmail: job {job_id} not found after submit")
        last.update(status)
        if serve.proc is not None and serve.proc.poll() is not None:
            raise BenchError(f"bulkmail serve exited {serve.proc.returncode}: {serve.tail()}")
        busy = status["queued"] + status["in_flight"]
        if status["state"] != "loading" and not busy and status["deferred"]:
            raise BenchError(f"bulkmail: {status['deferred']} recipients deferred (retried only after the backoff): "
                             f"{await client.events(job_id, '-', 3)}")
        finished = status["done"] or (status["state"] != "loading" and not busy and not status["deferred"])
        return status["total"] - busy - status["deferred"], finished

    async def describe() -> str:
        return f"status {last}; serve log: {serve.tail(600)}"

    try:
        end = await wait_for_progress(state, what=case.label, total=units, limits=ctx.limits, describe=describe)
    finally:
        if probe is not None:
            extra |= await probe.finish()
    peaks = serve.worker_peaks()
    extra["worker_peak_rss_mb"] = [round(p / 2**20, 1) for p in peaks]
    cpu = {"serve": tree_cpu(serve.proc.pid) - serve_cpu0, "redis": cpu_seconds(redis.pid) - redis_cpu0, "submit": submit_cpu}
    cpu["system"] = sum(cpu.values())
    cpu |= meter.stop()
    extra["status"] = {k: last.get(k) for k in ("delivered", "bounced", "deferred", "expired")}
    error = None if last.get("delivered") == units else f"delivered {last.get('delivered')} of {units}: {extra['status']}"
    return Run(case.label, units, end - start, cpu, extra, error)
