"""SmtpSession against real peers on 127.0.0.x: aiosmtpd sinks and scripted raw servers.

Every test runs twice, on the default asyncio loop and on uvloop (the ``aio`` fixture).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any

import pytest

from engine.config import SmtpConfig, SmtpTimeouts
from engine.errors import ConnectError, RemoteProtocolError, SmtpTimeout, TlsError
from engine.net.smtp_protocol import SmtpSession
from engine.smtp import Envelope, SessionLost, SessionRefused, Transaction, TransactionResult
from tests.support.sinks import (
    RecordingSink,
    ScriptedServer,
    close,
    expect,
    hang,
    read_any,
    read_until,
    send,
    stall,
)
from tests.support.tls import TestCa

Run = Callable[[Coroutine[Any, Any, Any]], Any]
Sink = Callable[..., RecordingSink]
CONFIG = SmtpConfig(helo="client.test", tls_policy="none", timeouts=SmtpTimeouts(*([5.0] * 12)))
GREETING = send(b"220 scripted.test ESMTP\r\n")


def message(n: int, body: bytes = b"hello\r\n") -> bytes:
    return b"From: a@x.test\r\nTo: b@y.test\r\nSubject: message %d\r\n\r\n" % n + body


def txn(n: int, *recipients: str, body: bytes = b"hello\r\n", sender: str = "a@x.test") -> Transaction:
    return Transaction(Envelope(sender, recipients or ("b@y.test",)), message(n, body), tag=n)


def canonical(data: bytes) -> bytes:
    body = re.sub(rb"\r\n|\r|\n", b"\r\n", data)
    return body if not body or body.endswith(b"\r\n") else body + b"\r\n"


async def connect(sink: RecordingSink | ScriptedServer, config: SmtpConfig = CONFIG, **kw: Any) -> SmtpSession:
    return await SmtpSession.connect(sink.host, sink.port, server_name="mx.test", config=config, **kw)


async def deliver_all(sink: RecordingSink, txns: list[Transaction], **kw: Any) -> list[TransactionResult]:
    session = await connect(sink, **kw)
    futures = [session.submit(t) for t in txns]
    results = list(await asyncio.gather(*futures))
    assert session.outstanding == 0 and session.transactions == len(txns)
    await session.quit()
    assert not session.usable
    return results


# -- delivery ---------------------------------------------------------------------------


@pytest.mark.parametrize("pipelining", [True, False])
def test_many_messages_on_one_connection_arrive_once_with_exact_bytes(
    aio: Run, smtp_sink: Sink, pipelining: bool
) -> None:
    sink = smtp_sink(pipelining=pipelining)
    txns = [txn(n, f"r{n}@y.test", f"s{n}@y.test") for n in range(20)]
    results = aio(deliver_all(sink, txns))
    assert [r.transaction for r in results] == txns
    assert all(rcpt.delivered and rcpt.reply.code == 250 for r in results for rcpt in r.recipients)
    got = sink.messages
    assert [(m.mail_from, m.rcpt_tos, m.data) for m in got] == [
        ("a@x.test", t.envelope.recipients, t.message) for t in txns
    ]
    assert {m.connection for m in got} == {1} and sink.connections == 1
    assert got[0].mail_options == (f"SIZE={len(txns[0].message)}",)
    assert sink.commands[-1] == (1, "QUIT") and (1, "RSET") not in sink.commands


def test_per_recipient_results_and_lazy_rset(aio: Run, smtp_sink: Sink) -> None:
    sink = smtp_sink(rcpt={"unknown": "550 5.1.1 no such user", "full": "452 4.2.2 mailbox full"})
    txns = [
        txn(0, "ok@y.test", "unknown@y.test", "full@y.test"),
        txn(1, "unknown@y.test"),  # nobody accepted: DATA refused, RSET before the next MAIL
        txn(2, "ok2@y.test"),
    ]
    first, second, third = aio(deliver_all(sink, txns))
    assert [(r.recipient, r.reply.code, r.reply.command, r.delivered) for r in first.recipients] == [
        ("ok@y.test", 250, ".", True),
        ("unknown@y.test", 550, "RCPT", False),
        ("full@y.test", 452, "RCPT", False),
    ]
    assert str(first.recipients[1].reply.enhanced) == "5.1.1"
    assert [r.delivered for r in second.recipients] == [False] and third.recipients[0].delivered
    assert [m.rcpt_tos for m in sink.messages] == [("ok@y.test",), ("ok2@y.test",)]
    assert [verb for _, verb in sink.commands] == [
        *("MAIL", "RCPT", "RCPT", "RCPT", "DATA"),
        *("MAIL", "RCPT", "DATA"),  # 503: no valid recipient
        *("RSET", "MAIL", "RCPT", "DATA", "QUIT"),
    ]


def test_smuggling_and_dots_arrive_as_one_canonical_message(aio: Run, smtp_sink: Sink) -> None:
    sink = smtp_sink()
    smuggled = b"\n.\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@y.test>\r\nDATA\r\nspoofed\r\n"
    bodies = [
        b"line\r.\r" + smuggled,
        b"a\r\n.\nMAIL FROM:<evil@x.test>\n",
        b".\r\n..\r\n.leading dot\r\n. \r\nlast line without end",
        b"bare\nlf\rand cr\r\n",
    ]
    txns = [txn(n, body=body) for n, body in enumerate(bodies)]
    aio(deliver_all(sink, txns))
    got = sink.messages
    assert len(got) == len(bodies)
    assert [m.data for m in got] == [canonical(t.message) for t in txns]
    assert all(m.mail_from == "a@x.test" for m in got)


def test_eight_bit_and_smtputf8(aio: Run, smtp_sink: Sink) -> None:
    sink = smtp_sink()
    body = "Subject: ä\r\n\r\nüñí\r\n".encode()
    results = aio(deliver_all(sink, [Transaction(Envelope("a@x.test", ("jürgen@bücher.test",)), body)]))
    assert results[0].recipients[0].delivered
    (got,) = sink.messages
    assert got.rcpt_tos == ("jürgen@bücher.test",) and got.data == body
    assert set(got.mail_options) >= {"BODY=8BITMIME", "SMTPUTF8"}


def test_no_smtputf8_refuses_locally_and_sends_nothing(aio: Run, smtp_sink: Sink) -> None:
    sink = smtp_sink(smtputf8=False)
    (result,) = aio(deliver_all(sink, [txn(0, "jürgen@bücher.test")]))
    reply = result.recipients[0].reply
    assert (reply.code, str(reply.enhanced), reply.local) == (553, "5.6.7", True)
    assert sink.messages == [] and "MAIL" not in [verb for _, verb in sink.commands]


def test_size_over_the_announced_limit_is_refused_before_mail(aio: Run, smtp_sink: Sink) -> None:
    sink = smtp_sink(size_limit=200)
    results = aio(deliver_all(sink, [txn(0, body=b"x" * 300 + b"\r\n"), txn(1)]))
    assert results[0].recipients[0].reply.code == 552 and results[0].recipients[0].reply.local
    assert results[1].recipients[0].delivered
    assert [m.data for m in sink.messages] == [message(1)]


def test_noop(aio: Run, smtp_sink: Sink) -> None:
    async def scenario(sink: RecordingSink) -> None:
        session = await connect(sink)
        reply = await session.noop()
        assert reply.code == 250 and reply.command == "NOOP"
        await session.quit()

    sink = smtp_sink()
    aio(scenario(sink))
    assert [verb for _, verb in sink.commands] == ["NOOP", "QUIT"]


# -- STARTTLS ------------------------------------------------------------------------------


def tls_sink(smtp_sink: Sink, test_ca: TestCa, *names: str) -> RecordingSink:
    return smtp_sink(tls_context=test_ca.server_context(*(names or ("mx.test",))), hide=("SIZE",))


@pytest.mark.parametrize("policy", ["opportunistic", "required"])
def test_starttls_without_verification(aio: Run, smtp_sink: Sink, test_ca: TestCa, policy: str) -> None:
    sink = tls_sink(smtp_sink, test_ca, "some.other.name")  # not verified: the name does not matter

    async def scenario() -> None:
        session = await connect(sink, tls_policy=policy)
        assert session.tls_active and not session.tls_fallback
        assert not session.capabilities.starttls  # capabilities come from the EHLO after TLS
        await session.submit(txn(0))
        await session.quit()

    aio(scenario())
    assert sink.messages[0].tls


def test_starttls_verify_ok_with_ca_file(aio: Run, smtp_sink: Sink, test_ca: TestCa, tmp_path: Any) -> None:
    sink = tls_sink(smtp_sink, test_ca, "mx.test")
    config = replace(CONFIG, tls_policy="verify", ca_file=test_ca.ca_file(tmp_path))

    async def scenario() -> None:
        session = await connect(sink, config)
        assert session.tls_active
        await session.submit(txn(0))
        await session.quit()

    aio(scenario())
    assert sink.messages[0].tls


def test_starttls_verify_ok_with_a_context_override(aio: Run, smtp_sink: Sink, test_ca: TestCa) -> None:
    sink = tls_sink(smtp_sink, test_ca, "mx.test")

    async def scenario() -> None:
        session = await connect(sink, tls_policy="verify", ssl_context=test_ca.client_context())
        assert session.tls_active
        await session.quit()

    aio(scenario())


@pytest.mark.parametrize("problem", ["wrong name", "unknown CA"])
def test_starttls_verify_bad_certificate_is_a_tls_error(
    aio: Run, smtp_sink: Sink, test_ca: TestCa, problem: str
) -> None:
    if problem == "wrong name":
        sink, context = tls_sink(smtp_sink, test_ca, "other.test"), test_ca.client_context()
    else:
        sink, context = tls_sink(smtp_sink, TestCa(), "mx.test"), test_ca.client_context()
    with pytest.raises(TlsError):
        aio(connect(sink, tls_policy="verify", ssl_context=context))
    assert sink.messages == []


def test_required_tls_without_starttls_offered(aio: Run, smtp_sink: Sink) -> None:
    sink = smtp_sink()
    with pytest.raises(TlsError, match="STARTTLS"):
        aio(connect(sink, tls_policy="required"))


def test_opportunistic_without_starttls_offered_stays_plain(aio: Run, smtp_sink: Sink) -> None:
    async def scenario(sink: RecordingSink) -> None:
        session = await connect(sink, tls_policy="opportunistic")
        assert not session.tls_active and not session.tls_fallback
        await session.quit()

    aio(scenario(smtp_sink()))


HANDSHAKE_FAILS = [
    GREETING,
    expect(b"EHLO"),
    send(b"250-scripted.test\r\n250 STARTTLS\r\n"),
    expect(b"STARTTLS"),
    send(b"220 go ahead\r\n"),
    read_any(),  # the ClientHello
    send(b"this is not a TLS record\r\n" * 4),
    close(),
]
PLAIN_SESSION = [GREETING, expect(b"EHLO"), send(b"250-scripted.test\r\n250 PIPELINING\r\n"), expect(b"QUIT"), send(b"221 bye\r\n")]


def test_opportunistic_handshake_failure_reconnects_in_plain_text(aio: Run) -> None:
    async def scenario() -> None:
        async with ScriptedServer(HANDSHAKE_FAILS, PLAIN_SESSION) as server:
            session = await connect(server, tls_policy="opportunistic")
            assert session.tls_fallback and not session.tls_active and session.usable
            await session.quit()
            assert server.connections == 2 and server.mismatches == []

    aio(scenario())


def test_required_handshake_failure_is_a_tls_error(aio: Run) -> None:
    async def scenario() -> None:
        async with ScriptedServer(HANDSHAKE_FAILS, PLAIN_SESSION) as server:
            with pytest.raises(TlsError):
                await connect(server, tls_policy="required")
            assert server.connections == 1

    aio(scenario())


@pytest.mark.parametrize("policy", ["opportunistic", "required"])
def test_starttls_response_injection_is_refused(aio: Run, policy: str) -> None:
    injection = [
        GREETING,
        expect(b"EHLO"),
        send(b"250-scripted.test\r\n250 STARTTLS\r\n"),
        expect(b"STARTTLS"),
        send(b"220 ready\r\n250 fake\r\n"),  # one segment: plaintext after the 220
        hang(),
    ]

    async def scenario() -> None:
        async with ScriptedServer(injection) as server:
            with pytest.raises(RemoteProtocolError, match="injection"):
                await connect(server, tls_policy=policy)
            assert server.connections == 1  # never a reason to fall back

    aio(scenario())


# -- faults ------------------------------------------------------------------------------------


def test_421_after_n_messages(aio: Run, smtp_sink: Sink) -> None:
    sink = smtp_sink(close_after=2)

    async def scenario() -> None:
        session = await connect(sink)
        futures = [session.submit(txn(n)) for n in range(4)]
        done = await asyncio.gather(*futures, return_exceptions=True)
        assert [r.recipients[0].delivered for r in done[:2]] == [True, True]  # type: ignore[union-attr]
        third = done[2]
        assert isinstance(third, TransactionResult) and third.recipients[0].reply.code == 421
        fourth = done[3]
        assert isinstance(fourth, SessionLost) and not fourth.unsure and fourth.reply is not None
        assert fourth.reply.code == 421
        assert not session.usable
        later = session.submit(txn(9))
        with pytest.raises(SessionLost):
            await later
        await session.quit()

    aio(scenario())
    assert len(sink.messages) == 2


@pytest.mark.parametrize(("drop_at", "unsure", "arrived"), [("RCPT", False, 0), ("DATA", False, 0), (".", True, 1)])
def test_disconnect_after_a_command(aio: Run, smtp_sink: Sink, drop_at: str, unsure: bool, arrived: int) -> None:
    sink = smtp_sink(drop_at=drop_at)

    async def scenario() -> None:
        session = await connect(sink)
        first, second = session.submit(txn(0)), session.submit(txn(1))
        with pytest.raises(SessionLost) as lost:
            await first
        assert lost.value.unsure is unsure
        with pytest.raises(SessionLost) as lost:
            await second
        assert not lost.value.unsure
        assert not session.usable
        await session.quit()

    aio(scenario())
    assert len(sink.messages) == arrived


def test_no_greeting_times_out(aio: Run) -> None:
    config = replace(CONFIG, timeouts=replace(CONFIG.timeouts, greeting=0.2))

    async def scenario() -> None:
        async with ScriptedServer([hang()]) as server:
            with pytest.raises(SmtpTimeout) as timeout:
                await connect(server, config)
            assert timeout.value.phase == "greeting"

    aio(scenario())


def test_stall_on_mail_times_out_and_leaves_the_transaction_undecided(aio: Run) -> None:
    config = replace(CONFIG, timeouts=replace(CONFIG.timeouts, mail=0.2))

    async def scenario() -> None:
        script = [GREETING, expect(b"EHLO"), send(b"250-scripted.test\r\n250 PIPELINING\r\n"), hang()]
        async with ScriptedServer(script) as server:
            session = await connect(server, config)
            with pytest.raises(SessionLost) as lost:
                await session.submit(txn(0))
            assert isinstance(lost.value.reason, SmtpTimeout) and lost.value.reason.phase == "mail"
            assert not lost.value.unsure and not session.usable
            await session.quit()

    aio(scenario())


def test_peer_that_stops_reading_trips_the_data_block_timeout(aio: Run) -> None:
    config = replace(CONFIG, timeouts=replace(CONFIG.timeouts, data_block=0.3))
    big = (b"x" * 900 + b"\r\n") * 16_000  # 14 MB: far more than the socket buffers below hold
    script = [
        GREETING,
        expect(b"EHLO"),
        send(b"250-scripted.test\r\n250 PIPELINING\r\n"),
        expect(b"MAIL"),
        expect(b"RCPT"),
        expect(b"DATA"),
        send(b"250 ok\r\n250 ok\r\n354 go\r\n"),
        stall(),
    ]

    async def scenario() -> None:
        async with ScriptedServer(script, rcvbuf=65536) as server:
            session = await connect(server, config)
            with pytest.raises(SessionLost) as lost:
                await session.submit(txn(0, body=big))
            assert isinstance(lost.value.reason, SmtpTimeout) and lost.value.reason.phase == "data_block"
            assert not lost.value.unsure  # the end of data never left the transport buffer
            await session.quit()

    aio(scenario())


@pytest.mark.parametrize(
    "garbage",
    [
        b"250-scripted.test\r\n251 mixed codes\r\n",
        b"HTTP/1.1 400 Bad Request\r\n",
        b"250 ok" + b"x" * 70_000,
    ],
)
def test_garbage_replies_are_a_remote_protocol_error(aio: Run, garbage: bytes) -> None:
    async def scenario() -> None:
        async with ScriptedServer([GREETING, expect(b"EHLO"), send(garbage), hang()]) as server:
            with pytest.raises(RemoteProtocolError):
                await connect(server)

    aio(scenario())


@pytest.mark.parametrize("greeting", [b"554 5.7.1 no service here\r\n", b"421 4.3.2 busy\r\n"])
def test_refused_greeting(aio: Run, greeting: bytes) -> None:
    async def scenario() -> None:
        async with ScriptedServer([send(greeting), hang()]) as server:
            with pytest.raises(SessionRefused) as refused:
                await connect(server)
            assert refused.value.reply is not None and refused.value.reply.code == int(greeting[:3])

    aio(scenario())


def test_helo_fallback(aio: Run) -> None:
    script = [
        GREETING,
        expect(b"EHLO"),
        send(b"502 5.5.2 EHLO not implemented\r\n"),
        expect(b"HELO client.test"),
        send(b"250 scripted.test\r\n"),
        expect(b"MAIL FROM:<a@x.test>\r\n"),  # no ESMTP parameter after HELO
        send(b"250 ok\r\n"),
        expect(b"RCPT TO:<b@y.test>\r\n"),
        send(b"250 ok\r\n"),
        expect(b"DATA"),
        send(b"354 go\r\n"),
        read_until(b"\r\n.\r\n"),
        send(b"250 queued\r\n"),
        expect(b"QUIT"),
        send(b"221 bye\r\n"),
    ]

    async def scenario() -> None:
        async with ScriptedServer(script) as server:
            session = await connect(server)
            assert not session.capabilities.esmtp
            result = await session.submit(txn(0))
            assert result.recipients[0].delivered
            await session.quit()
            assert server.mismatches == [] and server.lines[-2] == message(0) + b".\r\n"

    aio(scenario())


def test_connection_refused_is_a_connect_error(aio: Run, free_port: Callable[..., int]) -> None:
    port = free_port("127.0.0.2")
    with pytest.raises(ConnectError):
        aio(SmtpSession.connect("127.0.0.2", port, server_name="mx.test", config=CONFIG))


def test_local_address(aio: Run, smtp_sink: Sink) -> None:
    async def scenario(sink: RecordingSink) -> None:
        session = await connect(sink, local_address="127.0.0.3")
        await session.submit(txn(0))
        await session.quit()

    sink = smtp_sink()
    aio(scenario(sink))
    assert sink.messages[0].peer[0] == "127.0.0.3"
