"""bulkmail's SMTP client (``SmtpSession``) against Postfix's own peers.

(a) ``smtp-sink``: rejects, 421, silent disconnects, a slow DATA reply and hidden extensions give
the right per-recipient results and connection behaviour. (b) a real Postfix with
``smtpd_forbid_bare_newline = reject``: every SMTP smuggling sequence of RELIABILITY.md 3.1 in a
body gives exactly one message at Postfix's relay target, with the smuggled commands inside its
body and nothing for the victim; NUL sequences are refused locally, before any byte is written.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any

import pytest

from engine.config import SmtpConfig, SmtpTimeouts
from engine.errors import SmtpTimeout
from engine.net.smtp_protocol import SmtpSession
from engine.smtp.transaction import (
    Envelope,
    SessionLost,
    SessionRefused,
    Transaction,
    TransactionResult,
)
from tests.support.postfix import PostfixInstance, SinkTransaction, SmtpSinkProcess
from tests.support.waiting import wait_until

pytestmark = pytest.mark.postfix

Run = Callable[[Coroutine[Any, Any, Any]], Any]
SinkFactory = Callable[..., SmtpSinkProcess]
MtaFactory = Callable[..., PostfixInstance]
CONFIG = SmtpConfig(helo="client.test", tls_policy="none", timeouts=SmtpTimeouts(*([10.0] * 12)))
SMUGGLED = b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@y.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n"


def txn(n: int, *recipients: str, body: bytes = b"hello\r\n.dot line\r\n") -> Transaction:
    message = b"From: a@x.test\r\nTo: b@y.test\r\nSubject: interop %d\r\n\r\n" % n + body
    return Transaction(Envelope("a@x.test", recipients or (f"r{n}@y.test",)), message, tag=n)


def as_dumped(message: bytes) -> bytes:
    """The canonical form of ``message`` as smtp-sink dumps it: one LF per line end."""
    lf = re.sub(rb"\r\n|\r|\n", b"\n", message)
    return lf if lf.endswith(b"\n") else lf + b"\n"


async def session_for(address: tuple[str, int], config: SmtpConfig = CONFIG) -> SmtpSession:
    return await SmtpSession.connect(*address, server_name="mx.test", config=config)


async def run_all(address: tuple[str, int], *txns: Transaction, config: SmtpConfig = CONFIG) -> list[TransactionResult | BaseException]:
    """Submit everything on one session (pipelined when offered); results or exceptions, in order."""
    session = await session_for(address, config)
    outcomes = await asyncio.gather(*(session.submit(t) for t in txns), return_exceptions=True)
    await session.quit()
    return list(outcomes)


def codes(result: TransactionResult | BaseException) -> list[tuple[int, bool]]:
    assert isinstance(result, TransactionResult), result
    return [(r.reply.code, r.delivered) for r in result.recipients]


# -- (a) smtp-sink ---------------------------------------------------------------------------


@pytest.mark.parametrize("pipelining", [True, False])
def test_messages_arrive_once_in_order_with_their_envelopes(aio: Run, smtp_sink_process: SinkFactory, pipelining: bool) -> None:
    sink = smtp_sink_process(dump=True, pipelining=pipelining)
    txns = [txn(n, f"r{n}@y.test", f"s{n}@y.test") for n in range(5)]

    async def scenario() -> list[TransactionResult | BaseException]:
        session = await session_for(sink.address)
        assert session.capabilities.pipelining is pipelining
        outcomes = await asyncio.gather(*(session.submit(t) for t in txns))
        await session.quit()
        return list(outcomes)

    results = aio(scenario())
    assert all(codes(r) == [(250, True), (250, True)] for r in results)
    dumped = sink.wait_for_messages(len(txns))
    assert [(d.sender, d.recipients, d.message) for d in dumped] == [
        ("a@x.test", t.envelope.recipients, as_dumped(t.message)) for t in txns
    ]
    # smtp-sink counts a session when it has seen its end, which may come after the dump
    counted = wait_until(lambda: sink.counters().sessions, 10, what="smtp-sink to count the session")
    assert counted == 1


def test_soft_rejected_recipients_are_deferred_and_no_data_is_sent(aio: Run, smtp_sink_process: SinkFactory) -> None:
    sink = smtp_sink_process(soft_reject=("RCPT",), soft_reply="451 4.7.1 Greylisted, try later")
    (result,) = aio(run_all(sink.address, txn(1, "a@y.test", "b@y.test")))
    assert codes(result) == [(451, False), (451, False)]
    assert isinstance(result, TransactionResult)
    reply = result.recipients[0].reply
    assert (str(reply.enhanced), reply.command, reply.text) == ("4.7.1", "RCPT", "Greylisted, try later")
    assert result.data_reply is None
    assert sink.counters().messages == 0


@pytest.mark.parametrize(("stage", "command"), [("MAIL", "MAIL"), ("DATA", "DATA"), (".", ".")])
def test_a_hard_reject_at_each_stage_bounces_every_recipient(aio: Run, smtp_sink_process: SinkFactory, stage: str, command: str) -> None:
    sink = smtp_sink_process(hard_reject=(stage,))
    results = aio(run_all(sink.address, txn(1, "a@y.test", "b@y.test"), txn(2)))
    for result in results:  # the session stays usable after a refused transaction
        assert isinstance(result, TransactionResult)
        assert codes(result) == [(500, False)] * len(result.recipients)
        assert all(r.reply.command == command for r in result.recipients)


def test_a_soft_reject_of_the_end_of_data_defers_after_the_body_was_sent(aio: Run, smtp_sink_process: SinkFactory) -> None:
    sink = smtp_sink_process(soft_reject=(".",), dump=True)
    (result,) = aio(run_all(sink.address, txn(1)))
    assert codes(result) == [(450, False)]
    (dumped,) = sink.wait_for_messages(1)  # the sink saw the whole message, then refused it
    assert dumped.recipients == ("r1@y.test",)


def test_a_421_mid_session_ends_the_transaction_and_loses_the_queued_one(aio: Run, smtp_sink_process: SinkFactory) -> None:
    sink = smtp_sink_process(close_421=("RCPT",))
    first, second = aio(run_all(sink.address, txn(1, "a@y.test"), txn(2)))
    assert codes(first) == [(421, False)]
    assert isinstance(second, SessionLost) and not second.unsure
    assert sink.counters().messages == 0


def test_a_421_greeting_refuses_the_session(aio: Run, smtp_sink_process: SinkFactory) -> None:
    sink = smtp_sink_process(close_421=("CONNECT",))
    with pytest.raises(SessionRefused) as refused:
        aio(session_for(sink.address))
    assert refused.value.reply is not None and refused.value.reply.code == 421


def test_a_silent_disconnect_before_the_end_of_data_leaves_the_transaction_undecided(aio: Run, smtp_sink_process: SinkFactory) -> None:
    sink = smtp_sink_process(drop=("DATA",))
    (lost,) = aio(run_all(sink.address, txn(1)))
    assert isinstance(lost, SessionLost) and not lost.unsure


def test_a_silent_disconnect_after_the_end_of_data_is_the_duplicate_window(aio: Run, smtp_sink_process: SinkFactory) -> None:
    sink = smtp_sink_process(drop=(".",), dump=True)
    (lost,) = aio(run_all(sink.address, txn(1)))
    assert isinstance(lost, SessionLost) and lost.unsure  # delivered or not: nobody knows
    assert len(sink.wait_for_messages(1)) == 1


def test_a_slow_data_reply_within_the_timeout_still_delivers(aio: Run, smtp_sink_process: SinkFactory) -> None:
    sink = smtp_sink_process(data_delay=1, dump=True)
    (result,) = aio(run_all(sink.address, txn(1)))
    assert codes(result) == [(250, True)]


def test_a_data_reply_slower_than_the_timeout_is_a_timeout_before_the_body(aio: Run, smtp_sink_process: SinkFactory) -> None:
    # Lock-step: smtp-sink holds pipelined MAIL/RCPT replies until its (delayed) DATA reply, so the
    # client would still be in its "mail" phase; without PIPELINING it is in "data" when it waits.
    sink = smtp_sink_process(data_delay=5, pipelining=False)
    config = replace(CONFIG, timeouts=replace(CONFIG.timeouts, data=0.2))
    (lost,) = aio(run_all(sink.address, txn(1), config=config))
    assert isinstance(lost, SessionLost) and not lost.unsure
    assert isinstance(lost.reason, SmtpTimeout)


def test_without_esmtp_the_client_falls_back_to_helo(aio: Run, smtp_sink_process: SinkFactory) -> None:
    sink = smtp_sink_process(esmtp=False, dump=True)
    results = aio(run_all(sink.address, txn(1), txn(2)))
    assert [codes(r) for r in results] == [[(250, True)], [(250, True)]]
    dumped: list[SinkTransaction] = sink.wait_for_messages(2)
    assert [(d.proto, d.helo) for d in dumped] == [("SMTP", "client.test")] * 2


def test_hidden_extensions_are_not_used(aio: Run, smtp_sink_process: SinkFactory) -> None:
    sink = smtp_sink_process(pipelining=False, enhanced_status=False, eightbitmime=False, dsn=False, dump=True)

    async def scenario() -> TransactionResult:
        session = await session_for(sink.address)
        caps = session.capabilities
        assert not (caps.pipelining or caps.eightbitmime or caps.enhancedstatuscodes or caps.dsn)
        result = await session.submit(txn(1))
        await session.quit()
        return result

    assert codes(aio(scenario())) == [(250, True)]
    (dumped,) = sink.wait_for_messages(1)
    assert dumped.mail_args == "<a@x.test>"  # no BODY=8BITMIME, RET= or ENVID=


# -- (b) SMTP smuggling into a real Postfix ------------------------------------------------------

SEQUENCES = [b"\n.\n", b"\r.\r", b"\r.\n", b"\n.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\r\n.\r"]
NUL_SEQUENCES = [b"\r\n\x00.\r\n", b"\r\n.\x00\r\n"]


@pytest.mark.parametrize("sequence", SEQUENCES, ids=repr)
def test_a_smuggling_sequence_yields_exactly_one_message(aio: Run, postfix_mta: MtaFactory, sequence: bytes) -> None:
    mta = postfix_mta()
    assert mta.forbid_bare_newline == "reject"  # a bare LF on the wire would be refused with 550
    body = b"body" + sequence + SMUGGLED
    (result,) = aio(run_all(mta.address, txn(1, "legit@dest.test", body=body)))
    assert codes(result) == [(250, True)]

    assert mta.relay_sink is not None
    (relayed,) = mta.relay_sink.wait_for_messages(1)
    mta.wait_until_queue_empty()
    assert len(mta.relay_sink.transactions()) == 1
    assert relayed.recipients == ("legit@dest.test",)
    # every lone CR/LF became a line end: the smuggled commands are plain body lines
    assert relayed.message.endswith(b"\n\nbody\n.\nMAIL FROM:<evil@x.test>\nRCPT TO:<victim@y.test>\nDATA\n"
                                    b"Subject: smuggled\n\nevil\n")
    assert "bare <LF>" not in mta.log() and "victim@y.test" not in mta.log()


@pytest.mark.parametrize("sequence", NUL_SEQUENCES, ids=repr)
def test_a_nul_sequence_is_refused_locally_and_never_reaches_postfix(aio: Run, postfix_mta: MtaFactory, sequence: bytes) -> None:
    mta = postfix_mta()
    body = b"body" + sequence + SMUGGLED
    refused, clean = aio(run_all(mta.address, txn(1, "legit@dest.test", body=body), txn(2, "clean@dest.test")))
    assert isinstance(refused, TransactionResult)
    reply = refused.recipients[0].reply
    assert (reply.local, reply.code, str(reply.enhanced), refused.recipients[0].delivered) == (True, 554, "5.6.0", False)
    assert refused.mail_reply is None and refused.data_reply is None  # nothing was written for it
    assert codes(clean) == [(250, True)]

    assert mta.relay_sink is not None
    (relayed,) = mta.relay_sink.wait_for_messages(1)
    mta.wait_until_queue_empty()
    assert len(mta.relay_sink.transactions()) == 1 and relayed.recipients == ("clean@dest.test",)
    assert "legit@dest.test" not in mta.log()
