"""The ``bulkmail`` command.

Every subcommand takes ``--redis URL`` (or BULKMAIL_REDIS_URL); without one it
uses the embedded redis-server under BULKMAIL_HOME (default ./.bulkmail),
starting it if needed. Exit codes: 0 ok, 1 failure, 2 invalid input,
3 Redis unavailable, 4 no such job.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
import tomllib
from dataclasses import replace
from typing import Any

from engine.client import Client, dumps
from engine.config import TLS_POLICIES, BounceConfig, EngineConfig, redis_from_env
from engine.errors import InputError, QueueError, QueueUnavailable
from engine.queue.audit import audit_job
from engine.queue.connect import resolve_url
from engine.queue.durability import probe, probe_url, redact
from engine.queue.embedded import stop_embedded
from workers import control
from workers.bounce_commands import add_bounce_commands, add_suppress_commands
from workers.progress import ProgressLine

EXIT_FAIL, EXIT_INPUT, EXIT_REDIS, EXIT_NOT_FOUND = 1, 2, 3, 4


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"BULKMAIL_{name}", default)


def _add_redis(p: argparse.ArgumentParser) -> None:
    p.add_argument("--redis", metavar="URL", default=None, help="Redis URL (default: BULKMAIL_REDIS_URL, else embedded)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bulkmail", description="High-throughput bulk email delivery engine")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the supervisor and its worker processes")
    _add_redis(serve)
    serve.add_argument("--workers", type=int, default=int(_env("WORKERS", "0") or 0), help="worker processes (default: CPU count)")
    serve.add_argument("--dns", metavar="HOST:PORT", default=_env("DNS"), help="send every DNS lookup to this nameserver")
    serve.add_argument("--smtp-port", type=int, default=int(_env("SMTP_PORT", "25") or 25), help="port used to reach every MX")
    serve.add_argument("--helo", default=_env("HELO"), help="EHLO name (default: this host's name)")
    serve.add_argument("--allow-private-mx", action="store_true", default=_env("ALLOW_PRIVATE_MX") in ("1", "yes", "true"), help="permit MX hosts on loopback/private addresses")
    serve.add_argument("--tls-policy", choices=TLS_POLICIES, default=_env("TLS_POLICY"), help="STARTTLS policy (default: opportunistic)")
    serve.add_argument("--retry-base", type=float, default=None, metavar="SECONDS", help="first retry delay (default 300)")
    serve.add_argument("--config", default=_env("CONFIG"), metavar="FILE.toml", help="engine configuration (sections smtp, dns, retry, queue, worker)")

    submit = sub.add_parser("submit", help="submit a job (JSON file or - for stdin); prints the job id")
    _add_redis(submit)
    submit.add_argument("file", help="job JSON file, or - for standard input")
    submit.add_argument("--wait", action="store_true", help="show progress until nothing is queued or in flight, then print the status")
    submit.add_argument("--timeout", type=float, default=None, help="with --wait: give up after this many seconds")

    status = sub.add_parser("status", help="a job's counters")
    _add_redis(status)
    status.add_argument("job")
    status.add_argument("--json", action="store_true", help="one JSON object")

    events = sub.add_parser("events", help="delivery events, one JSON object per line")
    _add_redis(events)
    events.add_argument("--job", default=None)
    events.add_argument("--follow", action="store_true", help="keep printing new events")
    events.add_argument("--after", default="-", help="only events after this id")

    audit = sub.add_parser("audit", help="check that every recipient has exactly one state (all jobs, or one)")
    _add_redis(audit)
    audit.add_argument("job", nargs="?", default=None)

    control.add_commands(sub, _add_redis)
    add_bounce_commands(sub)
    add_suppress_commands(sub)

    redis_cmd = sub.add_parser("redis", help="the embedded redis-server: url, start, stop")
    _add_redis(redis_cmd)
    redis_cmd.add_argument("action", choices=("url", "start", "stop"))
    return parser


def engine_config(args: argparse.Namespace) -> EngineConfig:
    config = EngineConfig()
    if args.config:
        with open(args.config, "rb") as f:
            config = EngineConfig.from_mapping(tomllib.load(f))
    smtp = config.smtp
    smtp = replace(smtp, port=args.smtp_port, helo=args.helo or (smtp.helo if args.config else _hostname()))
    if args.allow_private_mx:
        smtp = replace(smtp, allow_private_mx=True)
    if args.tls_policy:
        smtp = replace(smtp, tls_policy=args.tls_policy)
    dns = config.dns
    if args.dns:
        host, _, port = args.dns.rpartition(":")
        if not host or not port.isdigit():
            raise InputError("expected HOST:PORT", field="--dns")
        dns = replace(dns, nameserver=(host, int(port)))
    retry = config.retry if args.retry_base is None else replace(config.retry, base=args.retry_base)
    redis_cfg = redis_from_env(args.redis)
    workers = args.workers or config.worker.workers or os.cpu_count() or 1
    bounce = BounceConfig.from_env() if os.environ.get("BULKMAIL_BOUNCE_DOMAIN") else config.bounce
    return replace(
        config,
        smtp=smtp,
        dns=dns,
        retry=retry,
        redis=replace(config.redis, url=redis_cfg.url, home=redis_cfg.home),
        worker=replace(config.worker, workers=workers),
        bounce=bounce,
    )


def _hostname() -> str:
    return socket.getfqdn() or "localhost"


def cmd_serve(args: argparse.Namespace) -> int:
    from workers.supervisor import Supervisor

    config = engine_config(args)
    url = resolve_url(config.redis)
    config = replace(config, redis=replace(config.redis, url=url))
    durability = probe_url(url)
    warning = durability.warning(url)
    if warning is not None:
        print(warning, file=sys.stderr, flush=True)
    logging.getLogger("bulkmail").info(
        "serving with %d workers on %s (durability %s)", config.worker.workers, redact(url), durability.describe()
    )
    return Supervisor(config, config.worker.workers).run()


async def _client(args: argparse.Namespace) -> Client:
    cfg = redis_from_env(args.redis)
    return await Client.connect(cfg.url, home=cfg.home)


async def cmd_submit(args: argparse.Namespace) -> int:
    data = sys.stdin.buffer.read() if args.file == "-" else _read(args.file)
    async with await _client(args) as client:
        result = await client.submit_job(data)
        print(result.job_id, flush=True)
        if not result.created:
            print(f"job {result.job_id} exists already; nothing changed", file=sys.stderr)
        if not args.wait:
            return 0
        bar = ProgressLine(sys.stderr)
        status = await client.wait(result.job_id, timeout=args.timeout, progress=bar.update)
        bar.finish(status)
        print(dumps(status), flush=True)
        return 0


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise InputError(str(exc), field="file") from exc


async def cmd_status(args: argparse.Namespace) -> int:
    async with await _client(args) as client:
        status = await client.status(args.job)
        if status is not None:
            status["durability"] = (await probe(client.redis)).mode
    if status is None:
        print(f"error: no such job: {args.job}", file=sys.stderr)
        return EXIT_NOT_FOUND
    if args.json:
        print(dumps(status))
    else:
        for key, value in status.items():
            print(f"{key:>11}: {value}")
    return 0


async def cmd_events(args: argparse.Namespace) -> int:
    async with await _client(args) as client:
        if args.job and await client.status(args.job) is None:
            print(f"error: no such job: {args.job}", file=sys.stderr)
            return EXIT_NOT_FOUND
        positions: dict[str, str] = {}
        while True:
            jobs = [args.job] if args.job else await client.store.job_ids()
            printed = 0
            for job in jobs:
                while True:
                    batch = await client.events(job, positions.get(job, args.after), 1000)
                    for event in batch:
                        print(dumps(event))
                    printed += len(batch)
                    if batch:
                        positions[job] = batch[-1]["id"]
                    if len(batch) < 1000:
                        break
            sys.stdout.flush()
            if not args.follow:
                return 0
            if not printed:
                await asyncio.sleep(0.25)


async def cmd_audit(args: argparse.Namespace) -> int:
    async with await _client(args) as client:
        jobs = [args.job] if args.job else await client.store.job_ids()
        failed = 0
        for job in jobs:
            report = await audit_job(client.store, job)
            failed += not report.ok
            print(dumps({"job": job, "ok": report.ok, "total": report.total, **report.counters,
                         "problems": report.problems, "missing": report.missing,
                         "quarantined": report.quarantined}))
    if args.job and failed and report.problems == [f"no such job {args.job}"]:
        return EXIT_NOT_FOUND
    return EXIT_FAIL if failed else 0


def cmd_redis(args: argparse.Namespace) -> int:
    cfg = redis_from_env(args.redis)
    if args.action == "stop":
        if cfg.url:
            print("error: --redis/BULKMAIL_REDIS_URL given; only the embedded server can be stopped", file=sys.stderr)
            return EXIT_INPUT
        print("stopped" if stop_embedded(cfg.home) else "not running")
        return 0
    print(resolve_url(cfg, start=True))
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=os.environ.get("BULKMAIL_LOG_LEVEL", "INFO"), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "func", None) is not None:
            return int(args.func(args))
        if args.command == "serve":
            return cmd_serve(args)
        if args.command == "redis":
            return cmd_redis(args)
        handlers: dict[str, Any] = {"submit": cmd_submit, "status": cmd_status, "events": cmd_events, "audit": cmd_audit}
        handler = handlers.get(args.command) or control.HANDLERS[args.command]
        return int(asyncio.run(handler(args)))
    except InputError as exc:
        print(f"error: invalid job: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except QueueUnavailable as exc:
        print(f"error: {exc} (nothing was submitted)" if args.command == "submit" else f"error: {exc}", file=sys.stderr)
        return EXIT_REDIS
    except QueueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except (KeyboardInterrupt, BrokenPipeError):
        return EXIT_FAIL
    except TimeoutError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())

