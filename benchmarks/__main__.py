"""``python -m benchmarks``: bulkmail side by side with Postfix and the SMTP ceiling (issue 5).

Normally run through ``scripts/bench``, which installs what is needed first. Examples::

    scripts/bench --quick                  # smoke run: small counts, one repeat
    scripts/bench --only a,d --repeat 5
    scripts/bench --only f --messages 20000
    scripts/bench --quick --systems smtp-source,naive,postfix

Everything listens on 127.0.0.0/8 and is stopped (by PID) at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import shutil
import signal
import sys
import tempfile
import tomllib
from pathlib import Path

import uvloop

from benchmarks import harness, machine, procstat, report, workloads
from benchmarks.context import Context
from benchmarks.environment import Environment
from benchmarks.measure import Limits

SYSTEM_NAMES = ("smtp-source", "client", "naive", "postfix", "bulkmail")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/bench", description="bulkmail side by side with Postfix and the SMTP ceiling (issue 5), in one run.",
                                epilog=__doc__.split("\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small counts for a smoke run (2,000 messages, e: 20,000, 1 repeat)")
    p.add_argument("--only", metavar="a,b,...", help="workloads: a, b (= b20,b100), b20, b100, c, d, e, f, g (default: all)")
    p.add_argument("--systems", metavar="LIST", help=f"systems to run, of {','.join(SYSTEM_NAMES)} (default: all)")
    p.add_argument("--repeat", type=int, help="repeats per measurement; the median is reported (default 3, --quick 1)")
    p.add_argument("--messages", type=int, help="messages per run (recipients for c; default 100,000)")
    p.add_argument("--e-recipients", type=int, help="recipients of workload e's job (default 1,000,000)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="bulkmail worker processes (f varies it)")
    p.add_argument("--connections", type=int, default=20, help="connections of the no-queue senders and the Postfix injector")
    p.add_argument("--ceiling-hosts", type=int, default=4, help="sinks the no-queue senders spread their connections over")
    p.add_argument("--hosts", type=int, default=50, help="MX hosts (one smtp-sink each)")
    p.add_argument("--min-rate", type=float, default=50.0, help="abort a run slower than this on average (s = 60 + units/rate)")
    p.add_argument("--stall", type=float, default=60.0, help="abort a run that makes no progress for this many seconds")
    p.add_argument("--bulkmail-config", metavar="FILE.toml", help="base configuration for bulkmail serve")
    p.add_argument("--workdir", help="where job files, Redis and Postfix data go (default: a new dir under /var/tmp)")
    p.add_argument("--keep", action="store_true", help="keep the work directory and per-run data")
    args = p.parse_args(argv)
    args.repeat = args.repeat or (1 if args.quick else 3)
    args.messages = args.messages or (2_000 if args.quick else 100_000)
    args.e_recipients = args.e_recipients or (20_000 if args.quick else 1_000_000)
    if args.systems:
        unknown = set(args.systems.split(",")) - set(SYSTEM_NAMES)
        if unknown:
            p.error(f"unknown systems {sorted(unknown)}; choose from {','.join(SYSTEM_NAMES)}")
    if min(args.repeat, args.messages, args.e_recipients, args.hosts, args.connections) < 1 or args.ceiling_hosts > args.hosts:
        p.error("counts must be positive and --ceiling-hosts at most --hosts")
    if args.hosts > 99:
        p.error("--hosts is at most 99 (127.0.1.100 is the transactional domain's MX)")
    return args


def preflight(args: argparse.Namespace) -> None:
    missing = [path for path in ("/usr/sbin/smtp-source", "/usr/sbin/smtp-sink", "/usr/sbin/postfix") if not os.access(path, os.X_OK)]
    if not shutil.which("redis-server") and not os.access("/usr/bin/redis-server", os.X_OK):
        missing.append("redis-server")
    if missing:
        sys.exit(f"missing {', '.join(missing)}: run scripts/setup (scripts/bench does)")
    if os.geteuid() != 0 and (not args.systems or "postfix" in args.systems):
        sys.exit("the private Postfix relay must be started as root (or pass --systems without postfix)")


def _terminate(signum: int, _frame: object) -> None:
    # Kill the load generators first: a thread waiting for one (asyncio.to_thread) would
    # otherwise hold up the event loop's shutdown until it finished by itself.
    procstat.kill_started()
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    preflight(args)
    selected = workloads.select(args.only)
    systems = set(args.systems.split(",")) if args.systems else None
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bulkmail-bench-", dir="/var/tmp" if os.path.isdir("/var/tmp") else None))
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)  # Postfix daemons (user postfix) reach their queue below it
    tempfile.tempdir = str(workdir)  # Postfix's queue and the sinks' files on the same disk as Redis
    base_config = tomllib.loads(Path(args.bulkmail_config).read_text()) if args.bulkmail_config else {}
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)  # Ctrl-C: the same, instead of asyncio's cancel
    info = machine.describe(workdir)
    env = Environment(workdir, hosts=args.hosts)
    ctx = Context(env, workdir, Limits(min_rate=args.min_rate, stall=args.stall), connections=args.connections,
                  ceiling_hosts=args.ceiling_hosts, workers=args.workers, bulkmail_config=base_config, keep=args.keep)
    settings = {"messages": args.messages, "e_recipients": args.e_recipients, "repeat": args.repeat, "workers": args.workers,
                "connections": args.connections, "ceiling_hosts": args.ceiling_hosts, "mx_hosts": args.hosts,
                "redis": "fresh redis-server per run, AOF appendfsync always", "bulkmail_config": base_config or "defaults",
                "workloads": [w.key for w in selected], "systems": sorted(systems) if systems else "all"}
    print(f"bulkmail benchmark: {', '.join(w.key for w in selected)}; {args.messages:,} messages per run, "
          f"{args.repeat} repeat(s); work dir {workdir} ({info['workdir_fs']})", flush=True)
    results: list[harness.WorkloadResult] = []
    try:
        env.start()
        print(f"   {args.hosts} smtp-sinks on 127.0.1.1-{args.hosts}:{env.sink_port}, DNS on {env.dns_address[0]}:{env.dns_address[1]}", flush=True)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            for workload in selected:
                results += runner.run(harness.run_all(ctx, [workload], args.messages, args.e_recipients, args.repeat, systems))
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything this run started", file=sys.stderr)
    finally:
        procstat.kill_started()
        env.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    if not results:
        return 1
    command = "scripts/bench " + shlex.join(sys.argv[1:] if argv is None else argv)
    document = report.write(results, info, settings, command)
    print("\n" + report.system_table(results))
    print("\n" + report.ratio_table(document["results"]))
    checks = report.targets(document["results"])
    if checks:
        print("\nissue 5 targets:\n" + "\n".join(checks))
    print(f"\nwrote {report.RESULTS / 'latest.json'}, {report.RESULTS / 'throughput.png'}, {report.HERE / 'RESULTS.md'}")
    failed = any(s.errors for r in results for s in r.summaries.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
