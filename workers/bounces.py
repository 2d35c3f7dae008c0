"""The bounce domain's inbound SMTP listener, and the ``bounces``/``suppress`` commands.

``bulkmail bounces serve`` answers for the bounce domain (its MX points here):

* RCPT is accepted for well-formed VERP addresses (``bounces+TOKEN@domain``) and
  for the feedback addresses (``fbl@domain``, ``abuse@domain``); anything else
  gets ``550 5.1.1``. The token is verified after DATA, so a forged one is
  still received and recorded as unverified instead of retried by its sender.
* At the end of data the message is parsed (``engine.dsn.parse_message``, in a
  thread: a 10 MB message must not stall other sessions) and reported through
  ``engine.queue.bounces.BounceStore``: a bounce to a VERP address, a complaint
  matched by our trace header or by the VERP address it was sent from.
  Auto-replies and anything else that is not a bounce are accepted and dropped.
* If Redis is unreachable the message gets ``451 4.3.0``: its sender retries.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from engine.bounce_mime import ParseLimits
from engine.clock import SystemClock
from engine.config import BounceConfig, redis_from_env
from engine.dsn import BounceRecord, ParsedMessage, parse_message
from engine.errors import InputError, QueueError
from engine.queue.bounces import Applied, BounceStore, Report
from engine.queue.connect import open_redis, resolve_url
from engine.queue.suppression import Suppressed, SuppressionList
from engine.verp import parse_address, parse_trace

log = logging.getLogger("bulkmail.bounces")


def report_of(record: BounceRecord) -> Report:
    status = "bounced" if record.action == "failed" else "delayed"
    return Report(record.recipient, status, record.code, record.status, record.text, record.remote_mta,
                  record.category, record.fault, record.permanent, "async")  # fmt: skip


def complaint_report(rcpt: str, feedback_type: str) -> Report:
    return Report(rcpt, "complained", 0, "", f"feedback report: {feedback_type}", "", "complaint", "recipient",
                  True, "arf")  # fmt: skip


class BounceHandler:
    """aiosmtpd handler: which recipients to take, and what to do with what arrives."""

    def __init__(self, config: BounceConfig, store: BounceStore) -> None:
        self.config = config
        self.store = store
        self.limits = ParseLimits(max_bytes=config.max_message_bytes, max_depth=config.max_mime_depth)
        self.feedback = {f"{local}@{config.domain}".lower() for local in config.feedback_addresses}

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if parse_address(self.config, address) is None and address.lower() not in self.feedback:
            return f"550 5.1.1 <{address}>: no such user here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        data = envelope.original_content or b""
        if isinstance(envelope.content, bytes) and not data:
            data = envelope.content
        parsed = await asyncio.get_running_loop().run_in_executor(None, parse_message, data, self.limits)
        try:
            results = await self.route(parsed, list(envelope.rcpt_tos), str(envelope.mail_from or ""))
        except QueueError as exc:
            log.warning("bounce not recorded, asking the sender to retry: %s", exc)
            return "451 4.3.0 temporary failure, try again later"
        for r in results:
            log.info("%s %s#%d verified=%s applied=%s %s", parsed.kind, r.job_id, r.index, r.verified, r.applied, r.why)
        return "250 2.0.0 OK"

    async def route(self, parsed: ParsedMessage, rcpts: Sequence[str], mail_from: str = "") -> list[Applied]:
        """Record ``parsed`` for each recipient it reached; returns what was done."""
        done: list[Applied] = []
        reports = _reports(parsed)
        for rcpt in rcpts:
            ref = parse_address(self.config, rcpt)
            if ref is not None and reports:
                done.append(await self.store.apply_verp(ref, reports, mail_from))
            elif ref is None and parsed.kind in ("complaint", "bounce"):
                done.extend(await self._by_trace(parsed, reports, mail_from))
        return done

    async def _by_trace(self, parsed: ParsedMessage, reports: list[Report], mail_from: str) -> list[Applied]:
        """A report sent to a feedback address: match it by our trace header, or by
        the VERP address the reported message was sent from."""
        complaint = parsed.complaint
        trace = parse_trace(self.config, parsed.trace)
        if trace is not None and trace.verified:
            if complaint is not None:
                reports = [complaint_report(trace.rcpt, complaint.feedback_type)]
            return [await self.store.apply(trace.job_id, trace.index, reports, mail_from)] if reports else []
        ref = parse_address(self.config, complaint.original_mail_from) if complaint is not None else None
        if ref is not None and reports:
            return [await self.store.apply_verp(ref, reports, mail_from)]
        why = "bad-signature" if trace is not None else "no-match"
        await self.store.unverified(f"trace {parsed.trace}"[:200], why, reports, mail_from)
        return []


def _reports(parsed: ParsedMessage) -> list[Report]:
    if parsed.kind == "bounce":
        failed = [r for r in parsed.records if r.action == "failed"] or list(parsed.records)
        return [report_of(failed[0])]  # a VERP address stands for one recipient
    if parsed.kind == "complaint" and parsed.complaint is not None:
        who = parsed.complaint.recipients[:1] or parsed.original_to[:1]
        return [complaint_report(who[0], parsed.complaint.feedback_type)] if who else []
    return []


async def serve_bounces(config: BounceConfig, redis_url: str, namespace: str = "bm",
                        stop: asyncio.Event | None = None) -> None:  # fmt: skip
    """Run the listener until ``stop`` is set (or SIGTERM/SIGINT when run from the CLI)."""
    redis = open_redis(redis_url)
    store = BounceStore(redis, namespace, SystemClock(), config)
    host, _, port = config.listen.rpartition(":")
    handler = BounceHandler(config, store)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, data_size_limit=config.max_message_bytes, hostname=config.domain or None,
                     enable_SMTPUTF8=True, ident="bulkmail bounces"),  # fmt: skip
        host or "0.0.0.0",
        int(port),
    )
    log.info("bounce listener for %s on %s", config.domain, config.listen)
    try:
        await (stop or asyncio.Event()).wait()
    finally:
        server.close()
        await server.wait_closed()
        await redis.aclose()


# ---- commands -------------------------------------------------------------------


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
