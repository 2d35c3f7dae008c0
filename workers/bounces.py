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

import asyncio
import logging
from collections.abc import Sequence

from aiosmtpd.smtp import SMTP, Envelope, Session

from engine.bounce_mime import ParseLimits
from engine.clock import SystemClock
from engine.config import BounceConfig
from engine.dsn import BounceRecord, ParsedMessage, parse_message
from engine.errors import QueueError
from engine.queue.bounces import Applied, BounceStore, Report
from engine.queue.connect import open_redis
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
