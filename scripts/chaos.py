"""Chaos run: deliver N recipients while workers are SIGKILLed, one is SIGSTOPped past its
lease and resumed, and redis-server is SIGKILLed and restarted from its AOF; then check that
the sinks' record and Redis agree.

Everything runs on loopback and is started here, and only what was started here is
signalled, by PID: a redis-server (AOF, appendfsync always), the loopback DNS server,
Postfix ``smtp-sink`` processes dumping every transaction (``-D``) as the MX hosts, and
``bulkmail serve``. Faults are spread over the run by progress (fault k of n when k/(n+1)
of the recipients are delivered), so a fast run and a slow one see the same faults.

Checks at the end (any failure: exit 1; the run not finishing in time: exit 2):
  * every recipient was received by a sink at least once (lost = 0) and is ``delivered`` in
    Redis (state byte 'D', counters), and nothing was received that Redis does not know;
  * each recipient received more than once has a ``possible_duplicate`` event;
  * ``bulkmail audit`` is clean.

    scripts/chaos                              # 50,000 recipients over ~60 s, 10 rounds of faults
    scripts/chaos --recipients 3000 --kills 1 --pauses 1 --restarts 1 --duration 15 --seed 7
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from engine.queue.embedded import RedisProcess  # noqa: E402
from engine.queue.keys import Keys  # noqa: E402
from engine.queue.store import event_dict  # noqa: E402
from tests.support.dns_server import DnsServer  # noqa: E402
from tests.support.ports import free_port  # noqa: E402
from tests.support.postfix import SinkOptions, SmtpSinkProcess  # noqa: E402
from tests.support.serve import Serve, cli  # noqa: E402

KEYS = Keys()
PROGRESS = ["total", "delivered", "queued", "in_flight", "deferred"]
LEASE = 2.0
CONFIG = """
[queue]
lease = {lease}
heartbeat = 0.5
reap_interval = 0.3
[retry]
base = 0.5
jitter = 0.0
[worker]
restart_backoff = 0.2
[shaping.default]
max_connections = 10
messages_per_second = {rate}
"""


@dataclass
class Tally:
    rounds: int = 0
    kills: int = 0
    pauses: int = 0
    restarts: int = 0
    log: list[str] = field(default_factory=list)

    def note(self, start: float, text: str) -> None:
        line = f"[{time.monotonic() - start:6.1f}s] {text}"
        self.log.append(line)
        print(line, flush=True)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/chaos", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipients", type=int, default=50_000, help="recipients in the job (default 50,000)")
    p.add_argument("--domains", type=int, default=200, help="recipient domains (default 200)")
    p.add_argument("--hosts", type=int, default=5, help="MX hosts, one smtp-sink each on 127.0.0.30+ (default 5)")
    p.add_argument("--workers", type=int, default=3, help="bulkmail worker processes (default 3)")
    p.add_argument("--kills", type=int, default=8, help="workers SIGKILLed (default 8)")
    p.add_argument("--pauses", type=int, default=1, help="workers SIGSTOPped past their lease, then SIGCONT (default 1)")
    p.add_argument("--restarts", type=int, default=1, help="redis-server SIGKILLed and restarted from its AOF (default 1)")
    p.add_argument("--duration", type=float, default=60.0,
                   help="seconds the delivery should take: sets the per-host rate limit so the faults land "
                        "mid-run however fast the machine (default 60; 0: no limit)")
    p.add_argument("--rate", type=float, default=None, help="messages per second per MX host (overrides --duration)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: random, printed)")
    p.add_argument("--timeout", type=float, default=900.0, help="give up after this many seconds (default 900)")
    p.add_argument("--workdir", default=None, help="where Redis, logs and sink dumps go (default: a new temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    args = p.parse_args(argv)
    if min(args.recipients, args.domains, args.hosts, args.workers) < 1 or min(args.kills, args.pauses, args.restarts) < 0:
        p.error("counts must be positive (faults may be 0)")
    if args.hosts > 50:
        p.error("--hosts is at most 50")
    if args.rate is None:
        args.rate = args.recipients / (args.hosts * args.duration) if args.duration > 0 else 0.0
    return args


def job(recipients: int, domains: int) -> dict[str, Any]:
    return {
        "id": "chaos",
        "from": "chaos@sender.test",
        "subject": "Chaos {{n}}",
        "text": "Hello {{n}}, this is a chaos run.\n",
        "recipients": [{"to": f"r{i}@d{i % domains}.chaos.test", "vars": {"n": str(i)}} for i in range(recipients)],
    }


def progress(client: redis.Redis) -> dict[str, int] | None:
    try:
        raw: Any = client.hmget(KEYS.job("chaos"), PROGRESS)
    except (redis.RedisError, OSError):
        return None  # Redis is down (on purpose, or not): ask again later
    return {name: int(value or 0) for name, value in zip(PROGRESS, raw, strict=True)}


def done(state: dict[str, int] | None, total: int) -> bool:
    return state is not None and state.get("delivered", 0) >= total and state.get("in_flight", 1) == 0


def run_faults(args: argparse.Namespace, rng: random.Random, serve: Serve, server: RedisProcess,
               start: float, deadline: float, tally: Tally) -> bool:
    """Deal the faults out over the run; True when the job finished in time.

    The next fault comes when the delivered count passes its mark; after each fault the
    remaining marks are spread again over what is left of the first 90% of the job, so faults
    never bunch up behind a slow one and all of them land before the end. A paused worker is
    resumed by this loop (which goes on watching meanwhile)."""
    plan = ["kill"] * args.kills + ["pause"] * args.pauses + ["restart"] * args.restarts
    rng.shuffle(plan)
    last = 0.9 * args.recipients  # every fault lands before the last tenth of the job
    mark = last / (len(plan) + 1)
    paused: tuple[int, float] | None = None  # (pid, when to resume)
    client = redis.Redis.from_url(server.url, socket_timeout=5, socket_connect_timeout=2, decode_responses=True)
    try:
        while time.monotonic() < deadline:
            if paused is not None and time.monotonic() >= paused[1]:
                resume(paused[0], start, tally)
                paused = None
            state = progress(client)
            if done(state, args.recipients) and paused is None:
                return True
            delivered = state["delivered"] if state else 0
            if plan and delivered >= mark and paused is None:
                tally.rounds += 1
                paused = fault_round(plan.pop(0), rng, serve, server, start, tally, delivered)
                mark = delivered + max(last - delivered, 0.0) / (len(plan) + 1)
                continue
            time.sleep(0.05)
        if paused is not None:
            resume(paused[0], start, tally)
        return False
    finally:
        client.close()


def resume(pid: int, start: float, tally: Tally) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)
    tally.note(start, f"          SIGCONT worker pid {pid}")


def fault_round(fault: str, rng: random.Random, serve: Serve, server: RedisProcess, start: float,
                tally: Tally, delivered: int) -> tuple[int, float] | None:
    """Inflict one fault; a pause returns (pid, when to resume it)."""
    pids = serve.worker_pids()
    if fault == "restart":
        tally.note(start, f"round {tally.rounds}: SIGKILL redis-server pid {server.pid} at {delivered} delivered")
        server.stop(signal.SIGKILL)
        time.sleep(rng.uniform(0.3, 1.5))
        server.start()
        tally.restarts += 1
        tally.note(start, f"          redis-server restarted from its AOF (pid {server.pid})")
        return None
    if not pids:
        tally.note(start, f"round {tally.rounds}: no worker alive to {fault}; skipped")
        return None
    victim = rng.choice(pids)
    if fault == "kill":
        tally.note(start, f"round {tally.rounds}: SIGKILL worker pid {victim} at {delivered} delivered")
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
            tally.kills += 1
        return None
    held = LEASE * 1.5 + rng.uniform(0.5, 1.5)
    tally.note(start, f"round {tally.rounds}: SIGSTOP worker pid {victim} for {held:.1f}s (lease {LEASE:g}s) at {delivered} delivered")
    try:
        os.kill(victim, signal.SIGSTOP)
    except ProcessLookupError:
        tally.note(start, "          the worker was gone already; skipped")
        return None
    tally.pauses += 1
    return victim, time.monotonic() + held


def events(url: str) -> list[dict[str, Any]]:
    client = redis.Redis.from_url(url, decode_responses=True)
    found: list[dict[str, Any]] = []
    last = "-"
    try:
        while True:
            batch: Any = client.xrange(KEYS.events("chaos"), min=last, count=10_000)
            if last != "-":
                batch = batch[1:]
            if not batch:
                return found
            found += [event_dict("chaos", entry_id, fields) for entry_id, fields in batch]
            last = batch[-1][0]
    finally:
        client.close()


def verify(args: argparse.Namespace, url: str, sinks: list[SmtpSinkProcess]) -> tuple[dict[str, Any], list[str]]:
    expected = {f"r{i}@d{i % args.domains}.chaos.test" for i in range(args.recipients)}
    received = Counter(r for sink in sinks for txn in sink.transactions() for r in txn.recipients)
    evs = events(url)
    flagged = {e["rcpt"] for e in evs if e["possible_duplicate"]}
    delivered_events = {e["rcpt"] for e in evs if e["status"] == "delivered"}
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        raw_states: Any = client.get(KEYS.states("chaos"))
        states = str(raw_states or "")[: args.recipients]
        counters: Any = client.hmget(KEYS.job("chaos"), ["total", "delivered"])
        counters = {"total": counters[0] or 0, "delivered": counters[1] or 0}
        quarantined = int(client.hlen(KEYS.quarantine))
    finally:
        client.close()
    duplicates = {r for r, n in received.items() if n > 1}
    lost = expected - set(received)
    audit = cli(url, "audit", "chaos")
    summary = {
        "recipients": args.recipients,
        "received": len(set(received) & expected),
        "messages_at_sinks": sum(received.values()),
        "delivered_in_redis": int(counters.get("delivered", 0)),
        "lost": len(lost),
        "duplicates": len(duplicates),
        "duplicates_flagged": len(duplicates & flagged),
        "flagged_events": len(flagged),
        "quarantined_chunks": quarantined,
        "audit_ok": audit.returncode == 0,
    }
    problems = []
    if lost:
        problems.append(f"{len(lost)} recipients never reached a sink, e.g. {sorted(lost)[:5]}")
    if set(received) - expected:
        problems.append(f"sinks received unknown recipients: {sorted(set(received) - expected)[:5]}")
    if duplicates - flagged:
        problems.append(f"{len(duplicates - flagged)} duplicates without a possible_duplicate event, "
                        f"e.g. {sorted(duplicates - flagged)[:5]}")
    if states != "D" * args.recipients:
        problems.append(f"state bytes not all delivered: {Counter(states)}")
    if int(counters.get("delivered", 0)) != args.recipients or int(counters.get("total", 0)) != args.recipients:
        problems.append(f"counters disagree: {counters}")
    if delivered_events != expected:
        problems.append(f"{len(expected - delivered_events)} recipients without a delivered event")
    if audit.returncode != 0:
        problems.append(f"bulkmail audit failed: {audit.stdout.strip()} {audit.stderr.strip()}")
    if quarantined:
        problems.append(f"{quarantined} chunks quarantined")
    return summary, problems


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bulkmail-chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rate = f"{args.rate:g} messages/s per MX host" if args.rate else "no rate limit"
    print(f"chaos: {args.recipients:,} recipients, {args.workers} workers, {args.hosts} MX hosts ({rate}), faults: "
          f"{args.kills} kills, {args.pauses} pauses, {args.restarts} Redis restarts; seed {seed}; work dir {workdir}",
          flush=True)
    hosts = [f"127.0.0.{30 + i}" for i in range(args.hosts)]
    port = free_port(hosts[0], also=tuple(hosts[1:]))
    server = RedisProcess(workdir / "redis", port=free_port(), appendfsync="always")
    dns = DnsServer()
    sinks = [SmtpSinkProcess(host, port, SinkOptions(dump=True, max_connections=1000)) for host in hosts]
    serve: Serve | None = None
    failed = True  # until the checks pass: keep the work directory for a look
    tally = Tally()
    start = time.monotonic()
    try:
        server.start()
        dns.start()
        dns.add_pattern(domain="d{n}.chaos.test", count=args.domains, mx=f"mx{{n%{args.hosts}}}.chaos.test",
                        a=f"127.0.0.{{30+n%{args.hosts}}}")
        for sink in sinks:
            sink.start()
        config = workdir / "chaos.toml"
        config.write_text(CONFIG.format(lease=LEASE, rate=args.rate))
        job_file = workdir / "job.json"
        job_file.write_text(json.dumps(job(args.recipients, args.domains)))
        serve = Serve(server.url, dns=dns.address, smtp_port=port, workers=args.workers, config=str(config),
                      log=workdir / "serve.log").start()
        submitted = cli(server.url, "submit", str(job_file), timeout=300)
        if submitted.returncode != 0:
            print(f"chaos: submit failed: {submitted.stderr}", file=sys.stderr)
            return 1
        start = time.monotonic()
        finished = run_faults(args, rng, serve, server, start, start + args.timeout, tally)
        elapsed = time.monotonic() - start
        serve.stop()
        summary, problems = verify(args, server.url, sinks)
        if not finished:
            problems.insert(0, f"the job did not finish within {args.timeout:g}s")
        planned = args.kills + args.pauses + args.restarts
        if tally.rounds < planned:  # a run the faults missed proves nothing
            problems.append(f"only {tally.rounds} of {planned} fault rounds happened before the job was done "
                            "(use a lower --rate or a longer --duration)")
        summary = {"rounds": tally.rounds, "kills": tally.kills, "pauses": tally.pauses,
                   "redis_restarts": tally.restarts, **summary, "seconds": round(elapsed, 1), "seed": seed}
        print("chaos summary: " + json.dumps(summary), flush=True)
        print(f"  rounds {tally.rounds}: {tally.kills} workers killed, {tally.pauses} paused past the lease, "
              f"{tally.restarts} Redis restarts; {summary['recipients']:,} recipients, "
              f"{summary['received']:,} received ({summary['messages_at_sinks']:,} messages), lost {summary['lost']}, "
              f"duplicates {summary['duplicates']} ({summary['duplicates_flagged']} flagged), {elapsed:.1f}s")
        for problem in problems:
            print(f"  VIOLATION: {problem}", flush=True)
        if problems:
            print(f"  serve log: {workdir / 'serve.log'}", flush=True)
            return 2 if not finished else 1
        print("  OK: every recipient delivered at least once, every duplicate flagged, audit clean")
        failed = False
        return 0
    finally:
        if serve is not None:
            serve.stop()
        for sink in sinks:
            sink.stop()
        dns.stop()
        server.stop()
        if not (args.keep or args.workdir or failed):
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
