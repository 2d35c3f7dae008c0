"""The ``bounces`` and ``suppress`` commands of ``bulkmail``.

Kept apart from the listener (workers/bounces.py) and importing it, the bounce parser
and aiosmtpd only when a command runs: every ``bulkmail`` call (a submit above all)
builds the whole parser, and those imports cost 0.1 s of its start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from dataclasses import replace
from typing import Any

from engine.clock import SystemClock
from engine.config import BounceConfig, redis_from_env
from engine.errors import InputError, QueueError
from engine.queue.connect import open_redis, resolve_url
from engine.queue.suppression import Suppressed, SuppressionList


def _add_redis(p: argparse.ArgumentParser, nested: bool = True) -> None:
    """``--redis`` both right after ``suppress``/``bounces`` and after the action: the nested
    one must not reset what the outer one set, hence SUPPRESS as its default."""
    p.add_argument("--redis", metavar="URL", default=argparse.SUPPRESS if nested else None,
                   help="Redis URL (default: BULKMAIL_REDIS_URL, else embedded)")  # fmt: skip


def add_bounce_commands(subparsers: Any) -> None:
    bounces = subparsers.add_parser("bounces", help="asynchronous bounces: listen, parse")
    _add_redis(bounces, nested=False)
    sub = bounces.add_subparsers(dest="bounces_command", required=True)
    serve = sub.add_parser("serve", help="run the inbound SMTP listener for the bounce domain")
    _add_redis(serve)
    serve.add_argument("--listen", metavar="HOST:PORT", default=None, help="default BULKMAIL_BOUNCE_LISTEN or 127.0.0.1:2525")
    serve.add_argument("--domain", default=None, help="bounce domain (default BULKMAIL_BOUNCE_DOMAIN)")
    serve.add_argument("--namespace", default="bm")
    serve.set_defaults(func=cmd_bounces_serve)
    parse = sub.add_parser("parse", help="parse messages; one JSON object per bounced recipient")
    parse.add_argument("files", nargs="+", metavar="FILE")
    parse.set_defaults(func=cmd_bounces_parse)


def cmd_bounces_parse(args: argparse.Namespace) -> int:
    from engine.dsn import parse_message

    failed = 0
    for name in args.files:
        try:
            with open(name, "rb") as f:
                parsed = parse_message(f.read())
        except OSError as exc:
            print(f"error: {name}: {exc}", file=sys.stderr)
            failed += 1
            continue
        for r in parsed.records:
            print(json.dumps({"file": name, "recipient": r.recipient, "action": r.action, "status": r.status,
                              "code": r.code or None, "category": r.category, "fault": r.fault,
                              "permanent": r.permanent}, ensure_ascii=False))  # fmt: skip
        if parsed.complaint is not None:
            for who in parsed.complaint.recipients or ("",):
                print(json.dumps({"file": name, "recipient": who, "action": "complained", "status": "",
                                  "code": None, "category": "complaint", "fault": "recipient", "permanent": True,
                                  "feedback_type": parsed.complaint.feedback_type}))  # fmt: skip
    sys.stdout.flush()
    return 1 if failed else 0


def cmd_bounces_serve(args: argparse.Namespace) -> int:
    config = BounceConfig.from_env()
    config = replace(config, listen=args.listen or config.listen, domain=(args.domain or config.domain).lower())
    if not config.domain or not config.secret:
        print("error: set the bounce domain (--domain or BULKMAIL_BOUNCE_DOMAIN) and BULKMAIL_BOUNCE_SECRET",
              file=sys.stderr)  # fmt: skip
        return 2
    url = resolve_url(redis_from_env(args.redis))

    from workers.bounces import serve_bounces

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await serve_bounces(config, url, args.namespace, stop)

    asyncio.run(main())
    return 0


def add_suppress_commands(subparsers: Any) -> None:
    top = subparsers.add_parser("suppress", help="the suppression list per sender domain")
    _add_redis(top, nested=False)
    sub = top.add_subparsers(dest="suppress_command", required=True)
    for name, text in (("add", "suppress addresses"), ("remove", "lift suppressions")):
        p = sub.add_parser(name, help=text)
        _add_redis(p)
        p.add_argument("sender_domain")
        p.add_argument("addresses", nargs="+", metavar="ADDRESS")
        if name == "add":
            p.add_argument("--reason", default="manual")
        p.set_defaults(func=cmd_suppress)
    listing = sub.add_parser("list", help="print entries as CSV (all sender domains without one)")
    _add_redis(listing)
    listing.add_argument("sender_domain", nargs="?")
    listing.set_defaults(func=cmd_suppress)
    imp = sub.add_parser("import", help="add entries from CSV: sender_domain,address,reason,source,time")
    _add_redis(imp)
    imp.add_argument("file", help="CSV file, or - for standard input")
    imp.add_argument("--domain", default="", help="sender domain for rows that give only address[,reason]")
    imp.set_defaults(func=cmd_suppress)
    exp = sub.add_parser("export", help="write entries as CSV")
    _add_redis(exp)
    exp.add_argument("file", nargs="?", default="-", help="CSV file (default: standard output)")
    exp.add_argument("--domain", default=None, help="only this sender domain")
    exp.set_defaults(func=cmd_suppress)


def cmd_suppress(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_suppress(args))
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except QueueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3


async def _suppress(args: argparse.Namespace) -> int:
    redis = open_redis(resolve_url(redis_from_env(args.redis)))
    try:
        lists = SuppressionList(redis, getattr(args, "namespace", "bm"), SystemClock())
        action = args.suppress_command
        if action in ("add", "remove"):
            if action == "add":
                n = await lists.add_many(Suppressed(args.sender_domain, a, args.reason, "manual", 0.0)
                                         for a in args.addresses)  # fmt: skip
            else:
                n = await lists.remove(args.sender_domain, args.addresses)
            print(f"{action}: {n}")
        elif action == "import":
            if args.file == "-":
                n = await lists.import_csv(sys.stdin, args.domain)
            else:
                with open(args.file, encoding="utf-8", newline="") as f:
                    n = await lists.import_csv(f, args.domain)
            print(f"imported: {n}")
        elif action == "list" or args.file == "-":
            await lists.export_csv(sys.stdout, args.sender_domain if action == "list" else args.domain)
        else:
            with open(args.file, "w", encoding="utf-8", newline="") as f:
                n = await lists.export_csv(f, args.domain)
            print(f"exported: {n}")
        return 0
    finally:
        await redis.aclose()
