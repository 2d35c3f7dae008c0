"""The bounce listener and the suppression list against a real redis-server,
with messages sent by smtplib over loopback.

A job is submitted, claimed and reported delivered through QueueStore (so the
recipients are in state D, as after a real delivery); then a DSN, an ARF
report or a forgery arrives at the listener and the test waits, bounded, for
Redis to show the result.
"""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

import pytest
from redis.asyncio import Redis

from engine import bounce_rules as r
from engine.config import BounceConfig, QueueConfig
from engine.outcome import Outcome
from engine.queue.audit import audit_job
from engine.queue.bounces import BounceStore
from engine.queue.store import ChunkReport, QueueStore
from engine.queue.suppression import SuppressionList
from engine.verp import envelope_sender, trace_header
from tests.support.builders import build
from tests.support.clock import ManualClock
from tests.support.ports import free_port
from tests.support.waiting import async_wait_until
from workers.bounces import serve_bounces

HOST = "127.0.0.31"
CONFIG = BounceConfig(domain="bounce.example.org", secret="integration-secret", unverified_maxlen=100)
RCPTS = ["jane@example.com", "joe@example.net"]


@dataclass
class Setup:
    store: QueueStore
    suppression: SuppressionList
    bounces: BounceStore
    job: str
    port: int


@asynccontextmanager
async def running(redis_url: str) -> AsyncIterator[Setup]:
    """A job whose two recipients were delivered, and the listener on HOST."""
    redis = Redis.from_url(redis_url)
    clock = ManualClock()
    store = QueueStore(redis, QueueConfig(chunk_size=10), clock)
    spec, rcpts = build(RCPTS, **{"from": "news@sender.example.org"})
    job = (await store.submit(spec, rcpts)).job_id
    (chunk,) = await store.claim("w1")
    outcomes = [Outcome(x.index, x.to, "delivered", 250, "2.0.0", "queued", "mx.test") for x in chunk.records]
    await store.report([ChunkReport(chunk, outcomes, done=True)])
    port = free_port(HOST)
    config = replace(CONFIG, listen=f"{HOST}:{port}")
    stop = asyncio.Event()
    server = asyncio.create_task(serve_bounces(config, redis_url, "bm", stop))
    await async_wait_until(lambda: _listening(port), what="the bounce listener")
    try:
        yield Setup(store, SuppressionList(redis, "bm", clock), BounceStore(redis, "bm", clock, config), job, port)
    finally:
        stop.set()
        await server
        await redis.aclose()


async def _listening(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(HOST, port)
    except OSError:
        return False
    writer.close()
    return True


def _send(port: int, rcpt: str, data: bytes, mail_from: str = "") -> None:
    with smtplib.SMTP(HOST, port, timeout=10) as smtp:
        smtp.sendmail(mail_from, [rcpt], data)


async def send(port: int, rcpt: str, data: bytes, mail_from: str = "") -> None:
    await asyncio.to_thread(_send, port, rcpt, data, mail_from)


def dsn(rcpt: str, status: str = "5.1.1", diagnostic: str = "550 5.1.1 <{rcpt}>: user unknown") -> bytes:
    diag = diagnostic.format(rcpt=rcpt)
    return (
        "From: Mail Delivery System <MAILER-DAEMON@relay.example.net>\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        f"--B\r\nContent-Type: text/plain\r\n\r\n<{rcpt}>: host mx said: {diag}\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; relay.example.net\r\n\r\n"
        f"Final-Recipient: rfc822; {rcpt}\r\nAction: failed\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: smtp; {diag}\r\n--B--\r\n"
    ).encode()


def arf(trace: str) -> bytes:
    return (
        "From: feedback@fbl.example.net\r\nTo: fbl@bounce.example.org\r\nSubject: complaint\r\n"
        'MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=feedback-report; boundary="F"\r\n\r\n'
        "--F\r\nContent-Type: text/plain\r\n\r\nThis is an abuse report.\r\n"
        "--F\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nUser-Agent: TestFBL/1.0\r\n"
        "Version: 1\r\n\r\n--F\r\nContent-Type: message/rfc822\r\n\r\nFrom: news@sender.example.org\r\n"
        f"To: redacted@example.com\r\nX-Bulkmail-Trace: {trace}\r\nSubject: hello\r\n\r\nhello\r\n--F--\r\n"
    ).encode()


async def state_of(setup: Setup, index: int) -> str:
    return chr((await setup.store.state_bytes(setup.job))[index])


async def test_asynchronous_dsn_bounces_a_delivered_recipient_and_suppresses_it(redis_url: str) -> None:
    async with running(redis_url) as s:
        await send(s.port, envelope_sender(CONFIG, s.job, 0), dsn(RCPTS[0]))
        await async_wait_until(lambda: _is(s, 0, "b"), what="state b")
        report = await audit_job(s.store, s.job)
        assert report.ok, report.problems
        assert report.counters["bounced"] == 1 and report.counters["delivered"] == 1
        found = await s.suppression.check("sender.example.org", RCPTS)
        assert list(found) == [RCPTS[0]] and found[RCPTS[0]].source == "async"
        assert found[RCPTS[0]].category == r.BAD_MAILBOX
        events = await s.store.redis.xrange(s.store.keys.events(s.job))
        last = {k.decode(): v.decode() for k, v in events[-1][1].items()}
        assert (last["r"], last["s"], last["k"], last["f"], last["src"], last["v"]) == (
            RCPTS[0], "bounced", r.BAD_MAILBOX, r.RECIPIENT, "async", "1"
        )
        assert await state_of(s, 1) == "D"


async def _is(s: Setup, index: int, state: str) -> bool:
    return await state_of(s, index) == state


async def test_a_sender_fault_bounce_changes_the_state_but_does_not_suppress(redis_url: str) -> None:
    async with running(redis_url) as s:
        blocked = dsn(RCPTS[1], "5.7.1", "554 5.7.1 Service unavailable; client host blocked using zen.spamhaus.org")
        await send(s.port, envelope_sender(CONFIG, s.job, 1), blocked)
        await async_wait_until(lambda: _is(s, 1, "b"), what="state b")
        assert await s.suppression.check("sender.example.org", RCPTS) == {}


async def test_arf_report_suppresses_the_address_and_counts_the_complaint(redis_url: str) -> None:
    async with running(redis_url) as s:
        _, trace = trace_header(CONFIG, s.job, 1, RCPTS[1])
        await send(s.port, "fbl@bounce.example.org", arf(trace))
        found = await async_wait_until(
            lambda: s.suppression.check("sender.example.org", RCPTS), what="the complaint suppression"
        )
        assert list(found) == [RCPTS[1]] and found[RCPTS[1]].source == "arf"
        assert await s.suppression.complaint_counts("sender.example.org") == {"example.net": 1, "*": 1}
        assert await state_of(s, 1) == "D"  # it was delivered; a complaint does not change that


async def test_forged_token_is_recorded_unverified_and_changes_nothing(redis_url: str) -> None:
    async with running(redis_url) as s:
        real = envelope_sender(CONFIG, s.job, 0)
        forged = real[:8] + ("b" if real[8] != "b" else "c") + real[9:]  # one character of the mac
        await send(s.port, forged, dsn(RCPTS[0]))
        rows = await async_wait_until(lambda: s.bounces.unverified_entries(), what="the unverified entry")
        assert rows[0]["why"] == "bad-signature" and RCPTS[0] in rows[0]["reports"]
        assert await state_of(s, 0) == "D"
        assert await s.suppression.check("sender.example.org", RCPTS) == {}
        report = await audit_job(s.store, s.job)
        assert report.ok and report.counters["delivered"] == 2


async def test_only_verp_and_feedback_addresses_are_accepted(redis_url: str) -> None:
    async with running(redis_url) as s:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            await send(s.port, "someone@bounce.example.org", dsn(RCPTS[0]))
        (code, text) = refused.value.recipients["someone@bounce.example.org"]
        assert code == 550 and text.startswith(b"5.1.1")
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            await send(s.port, envelope_sender(CONFIG, s.job, 0).replace("bounce.example.org", "other.org"), b"x")


async def test_auto_reply_to_a_verp_address_changes_nothing(redis_url: str) -> None:
    async with running(redis_url) as s:
        vacation = b"From: jane@example.com\r\nAuto-Submitted: auto-replied\r\nSubject: Out of office\r\n\r\nAway.\r\n"
        await send(s.port, envelope_sender(CONFIG, s.job, 0), vacation)
        await send(s.port, envelope_sender(CONFIG, s.job, 1), dsn(RCPTS[1]))  # sent after, so recorded after
        await async_wait_until(lambda: _is(s, 1, "b"), what="the second message's effect")
        assert await state_of(s, 0) == "D"
