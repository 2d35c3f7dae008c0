"""ClientConnection, byte for byte: what it writes for each reply, and the events it reports.

Each ``data_to_send()`` call stands for one ``transport.writelines``: a
pipelined group must come out of a single call.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.config import SmtpConfig, SmtpTimeouts
from engine.errors import (
    LocalProtocolError,
    RemoteProtocolError,
    SmtpTimeout,
    TlsError,
    TransportError,
)
from engine.smtp import (
    Capabilities,
    ClientConnection,
    Closed,
    Envelope,
    NoopDone,
    Ready,
    Refused,
    StartTlsNow,
    Transaction,
    TransactionDone,
    TransactionResult,
)
from engine.smtp.client import StartTls
from engine.smtp.states import Event, State

CONFIG = SmtpConfig(helo="client.example", timeouts=SmtpTimeouts(mail=31.0, data_end=601.0, data_block=181.0))
GREETING = b"220 mx.example ESMTP\r\n"
EHLO_PIPELINING = b"250-mx.example\r\n250-PIPELINING\r\n250-SIZE 1000000\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n"
EHLO_LOCKSTEP = b"250-mx.example\r\n250-SIZE\r\n250 8BITMIME\r\n"
BODY = b"Subject: hi\r\n\r\nhello\r\n"


class Wire:
    """A ClientConnection and the server side of the conversation, in bytes."""

    def __init__(self, starttls: StartTls = "never", config: SmtpConfig = CONFIG) -> None:
        self.conn = ClientConnection(config, starttls=starttls)

    def feed(self, data: bytes) -> Wire:
        self.conn.receive_data(data)
        return self

    def written(self) -> bytes:
        """Everything one driver write would carry."""
        return b"".join(self.conn.data_to_send())

    def events(self) -> list[Event]:
        found = []
        while (event := self.conn.next_event()) is not None:
            found.append(event)
        return found

    def ready(self, ehlo: bytes = EHLO_PIPELINING) -> Capabilities:
        assert self.feed(GREETING).written() == b"EHLO client.example\r\n"
        events = self.feed(ehlo).events()
        assert len(events) == 1 and isinstance(events[0], Ready)
        return events[0].capabilities

    def results(self) -> list[TransactionResult]:
        return [e.result for e in self.events() if isinstance(e, TransactionDone)]

    def closed(self) -> Closed:
        events = [e for e in self.events() if isinstance(e, Closed)]
        assert len(events) == 1
        return events[0]


def txn(*recipients: str, sender: str = "a@x.example", body: bytes = BODY) -> Transaction:
    return Transaction(Envelope(sender, tuple(recipients)), body)


def summary(result: TransactionResult) -> list[tuple[str, int, str, bool]]:
    return [(r.recipient, r.reply.code, r.reply.command, r.delivered) for r in result.recipients]


# -- session setup ---------------------------------------------------------------------


def test_greeting_ehlo_ready() -> None:
    wire = Wire()
    assert wire.conn.waiting_for() == ("greeting", 300.0)
    caps = wire.ready()
    assert caps.pipelining and caps.size == 1000000 and caps.enhancedstatuscodes
    assert wire.conn.state is State.READY and wire.conn.waiting_for() is None
    assert wire.conn.greeting is not None and wire.conn.greeting.command == "CONNECT"


def test_helo_fallback_after_5xx_to_ehlo() -> None:
    wire = Wire()
    assert wire.feed(GREETING).written() == b"EHLO client.example\r\n"
    assert wire.feed(b"502 5.5.2 what?\r\n").written() == b"HELO client.example\r\n"
    events = wire.feed(b"250 mx.example\r\n").events()
    assert events == [Ready(Capabilities())]
    wire.conn.submit(txn("b@y"))
    assert wire.written() == b"MAIL FROM:<a@x.example>\r\n"  # no ESMTP parameter after HELO


@pytest.mark.parametrize(
    ("greeting", "quit_written"),
    [(b"554 5.7.1 no service\r\n", True), (b"450 busy\r\n", True), (b"421 4.3.2 go away\r\n", False)],
)
def test_refused_greeting(greeting: bytes, quit_written: bool) -> None:
    wire = Wire().feed(greeting)
    events = wire.events()
    assert isinstance(events[0], Refused) and events[0].reply.code == int(greeting[:3])
    assert isinstance(events[1], Closed) and events[1].error is None
    assert wire.written() == (b"QUIT\r\n" if quit_written else b"")
    assert wire.conn.state is State.CLOSED


def test_ehlo_and_helo_refused() -> None:
    wire = Wire().feed(GREETING)
    wire.written()
    wire.feed(b"500 no\r\n").written()
    events = wire.feed(b"550 5.7.1 not you\r\n").events()
    assert isinstance(events[0], Refused) and events[0].reply.command == "HELO"


def test_4xx_to_ehlo_is_a_refusal_not_a_fallback() -> None:
    wire = Wire().feed(GREETING)
    wire.written()
    events = wire.feed(b"451 later\r\n").events()
    assert isinstance(events[0], Refused)
    assert wire.written() == b"QUIT\r\n"


def test_greeting_that_is_not_smtp_is_a_protocol_error() -> None:
    closed = Wire().feed(b"SSH-2.0-OpenSSH_9.6\r\n").closed()
    assert isinstance(closed.error, RemoteProtocolError)


# -- STARTTLS ----------------------------------------------------------------------------


def starttls_wire(policy: StartTls) -> Wire:
    wire = Wire(starttls=policy)
    assert wire.feed(GREETING).written() == b"EHLO client.example\r\n"
    wire.feed(b"250-mx.example\r\n250-PIPELINING\r\n250-SIZE 100\r\n250 STARTTLS\r\n")
    assert wire.events() == []
    assert wire.conn.data_to_send() == [b"STARTTLS\r\n"]  # alone in its write
    return wire


def test_starttls_then_ehlo_again_with_capabilities_forgotten() -> None:
    wire = starttls_wire("offered")
    assert wire.feed(b"220 2.0.0 Ready to start TLS\r\n").events() == [StartTlsNow()]
    assert wire.written() == b""
    assert wire.conn.waiting_for() is None  # the driver bounds the handshake
    wire.conn.start_tls_done()
    assert wire.written() == b"EHLO client.example\r\n"
    (ready,) = wire.feed(b"250-mx.example\r\n250 8BITMIME\r\n").events()
    assert isinstance(ready, Ready) and ready.capabilities.size is None and not ready.capabilities.pipelining
    assert wire.conn.tls_active
    wire.conn.submit(txn("b@y"))
    assert wire.written() == b"MAIL FROM:<a@x.example>\r\n"  # SIZE was announced only in plain text


def test_starttls_response_injection_in_the_same_segment_is_refused() -> None:
    wire = starttls_wire("offered")
    closed = wire.feed(b"220 ready\r\n250 fake\r\n").closed()
    assert isinstance(closed.error, RemoteProtocolError) and "injection" in str(closed.error)
    assert wire.written() == b""


def test_starttls_response_injection_in_a_later_segment_is_refused() -> None:
    wire = starttls_wire("required")
    assert wire.feed(b"220 ready\r\n").events() == [StartTlsNow()]
    closed = wire.feed(b"250 fake\r\n").closed()
    assert isinstance(closed.error, RemoteProtocolError)


def test_starttls_partial_line_after_220_is_injection_too() -> None:
    closed = starttls_wire("offered").feed(b"220 ready\r\n2").closed()
    assert isinstance(closed.error, RemoteProtocolError)


def test_starttls_refused_goes_on_in_plain_text_when_only_offered() -> None:
    events = starttls_wire("offered").feed(b"454 4.7.0 TLS not available\r\n").events()
    assert isinstance(events[0], Ready) and events[0].capabilities.size == 100


def test_starttls_refused_when_required_is_a_tls_error() -> None:
    wire = starttls_wire("required")
    closed = wire.feed(b"454 4.7.0 TLS not available\r\n").closed()
    assert isinstance(closed.error, TlsError)
    assert wire.written() == b"QUIT\r\n"


def test_starttls_required_but_not_offered() -> None:
    wire = Wire(starttls="required").feed(GREETING)
    wire.written()
    closed = wire.feed(EHLO_PIPELINING).closed()
    assert isinstance(closed.error, TlsError) and "does not offer" in str(closed.error)
    assert wire.written() == b"QUIT\r\n"


def test_starttls_not_sent_when_policy_is_never() -> None:
    wire = Wire(starttls="never")
    caps = wire.ready(b"250-mx\r\n250 STARTTLS\r\n")
    assert caps.starttls and wire.written() == b""


def test_start_tls_done_out_of_turn_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        Wire().conn.start_tls_done()


# -- pipelined transactions -------------------------------------------------------------


def test_pipelined_group_then_body_end_of_data_and_next_group_in_one_write() -> None:
    wire = Wire()
    wire.ready()
    first, second = txn("b@y", "c@y"), txn("d@y", body=b"second\r\n")
    wire.conn.submit(first)
    assert wire.conn.data_to_send() == [
        b"MAIL FROM:<a@x.example> SIZE=22\r\n",
        b"RCPT TO:<b@y>\r\n",
        b"RCPT TO:<c@y>\r\n",
        b"DATA\r\n",
    ]
    wire.conn.submit(second)
    assert wire.written() == b""  # DATA is in flight: nothing may follow it
    assert wire.conn.waiting_for() == ("mail", 31.0)
    wire.feed(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 unknown\r\n354 go ahead\r\n")
    out = wire.conn.data_to_send()
    assert out[0] is first.message  # the body is not copied
    assert b"".join(out) == BODY + b".\r\nMAIL FROM:<a@x.example> SIZE=8\r\nRCPT TO:<d@y>\r\nDATA\r\n"
    assert wire.conn.waiting_for() == ("data_end", 601.0)
    wire.feed(b"250 2.0.0 Ok: queued as A1\r\n")
    (result,) = wire.results()
    assert summary(result) == [("b@y", 250, ".", True), ("c@y", 550, "RCPT", False)]
    assert result.final_reply is not None and result.final_reply.text == "Ok: queued as A1"
    wire.feed(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n")
    assert wire.written() == b"second\r\n.\r\n"
    wire.feed(b"250 2.0.0 Ok\r\n")
    assert summary(wire.results()[0]) == [("d@y", 250, ".", True)]
    assert wire.conn.waiting_for() is None


def test_all_replies_in_one_segment() -> None:
    wire = Wire()
    wire.ready()
    wire.conn.submit(txn("b@y"))
    wire.written()
    wire.feed(b"250 Ok\r\n250 Ok\r\n354 go\r\n")
    assert wire.written() == BODY + b".\r\n"
    wire.feed(b"250 Ok\r\n")
    assert summary(wire.results()[0]) == [("b@y", 250, ".", True)]
    assert wire.conn.replies == 4 + 2  # greeting, EHLO, MAIL, RCPT, DATA, end of data


def test_mail_refused_gives_every_recipient_the_mail_reply() -> None:
    wire = Wire()
    wire.ready()
    wire.conn.submit(txn("b@y", "c@y"))
    wire.written()
    wire.feed(b"550 5.7.1 sender rejected\r\n503 5.5.1 need MAIL\r\n503 5.5.1 need MAIL\r\n503 need RCPT\r\n")
    (result,) = wire.results()
    assert summary(result) == [("b@y", 550, "MAIL", False), ("c@y", 550, "MAIL", False)]
    wire.conn.submit(txn("d@y"))
    assert wire.written().startswith(b"RSET\r\nMAIL FROM:")  # lazy RSET, pipelined with the group


def test_data_refused_gives_accepted_recipients_the_data_reply() -> None:
    wire = Wire()
    wire.ready()
    wire.conn.submit(txn("b@y", "c@y"))
    wire.written()
    wire.feed(b"250 ok\r\n250 ok\r\n450 4.2.1 busy\r\n451 4.3.0 no data now\r\n")
    assert summary(wire.results()[0]) == [("b@y", 451, "DATA", False), ("c@y", 450, "RCPT", False)]


def test_354_with_no_accepted_recipient_sends_only_the_terminator_then_rset() -> None:
    wire = Wire()
    wire.ready()
    wire.conn.submit(txn("b@y"))
    wire.written()
    wire.conn.submit(txn("c@y"))
    wire.feed(b"250 ok\r\n550 5.1.1 no\r\n354 go\r\n")
    assert wire.written() == b".\r\nRSET\r\nMAIL FROM:<a@x.example> SIZE=22\r\nRCPT TO:<c@y>\r\nDATA\r\n"
    wire.feed(b"554 5.5.1 no valid recipients\r\n")
    assert summary(wire.results()[0]) == [("b@y", 550, "RCPT", False)]
    wire.feed(b"250 reset\r\n250 ok\r\n250 ok\r\n354 go\r\n")
    wire.written()
    wire.feed(b"250 ok\r\n")
    assert summary(wire.results()[0]) == [("c@y", 250, ".", True)]
    wire.conn.submit(txn("d@y"))
    assert wire.written().startswith(b"MAIL FROM:")  # one RSET was enough


@pytest.mark.parametrize("final", [b"250 2.0.0 ok\r\n", b"554 5.7.1 spam\r\n"])
def test_no_rset_after_a_reply_to_the_end_of_data(final: bytes) -> None:
    """2xx or not, that reply ended the transaction (RFC 5321 4.1.1.4)."""
    wire = Wire()
    wire.ready()
    wire.conn.submit(txn("b@y"))
    wire.written()
    wire.feed(b"250 ok\r\n250 ok\r\n354 go\r\n")
    wire.written()
    wire.feed(final)
    assert summary(wire.results()[0]) == [("b@y", int(final[:3]), ".", final.startswith(b"2"))]
    wire.conn.submit(txn("c@y"))
    assert wire.written().startswith(b"MAIL FROM:")


# -- lock-step (no PIPELINING) ------------------------------------------------------------


def test_lockstep_writes_one_command_per_round_trip() -> None:
    wire = Wire()
    wire.ready(EHLO_LOCKSTEP)
    wire.conn.submit(txn("b@y", "c@y"))
    wire.conn.submit(txn("d@y"))
    assert wire.written() == b"MAIL FROM:<a@x.example> SIZE=22\r\n"
    assert wire.feed(b"250 ok\r\n").written() == b"RCPT TO:<b@y>\r\n"
    assert wire.feed(b"550 no\r\n").written() == b"RCPT TO:<c@y>\r\n"
    assert wire.feed(b"250 ok\r\n").written() == b"DATA\r\n"
    assert wire.feed(b"354 go\r\n").written() == BODY + b".\r\n"
    assert wire.feed(b"250 ok\r\n").written() == b"MAIL FROM:<a@x.example> SIZE=22\r\n"
    assert summary(wire.results()[0]) == [("b@y", 550, "RCPT", False), ("c@y", 250, ".", True)]


def test_lockstep_mail_refused_stops_the_transaction() -> None:
    wire = Wire()
    wire.ready(EHLO_LOCKSTEP)
    wire.conn.submit(txn("b@y", "c@y"))
    wire.written()
    assert wire.feed(b"451 4.3.0 later\r\n").written() == b""
    assert summary(wire.results()[0]) == [("b@y", 451, "MAIL", False), ("c@y", 451, "MAIL", False)]


def test_lockstep_all_rcpt_refused_sends_no_data_and_rsets_first() -> None:
    wire = Wire()
    wire.ready(EHLO_LOCKSTEP)
    wire.conn.submit(txn("b@y"))
    wire.conn.submit(txn("c@y"))
    wire.written()
    wire.feed(b"250 ok\r\n")
    wire.written()
    assert wire.feed(b"550 no\r\n").written() == b"RSET\r\n"  # waits for RSET's reply
    assert summary(wire.results()[0]) == [("b@y", 550, "RCPT", False)]
    assert wire.feed(b"250 reset\r\n").written() == b"MAIL FROM:<a@x.example> SIZE=22\r\n"


# -- local refusals: nothing written ------------------------------------------------------


@pytest.mark.parametrize(
    ("transaction", "code", "enhanced"),
    [
        (txn("b@y", sender="a\r\nRCPT TO:<v@z>@x"), 553, "5.1.7"),
        (txn("b@y", body=b"x\x00y"), 554, "5.6.0"),
        (txn("b@y", body=b"y" * 1200), 554, "5.6.0"),
        (txn("b@y", body=b"y" * 990 + b"\r\n" + b"z" * 990 + b"\r\n"), 552, "5.3.4"),
        (txn("jürgen@y"), 553, "5.6.7"),
        (txn("b@y>\r\nDATA"), 553, "5.1.3"),
    ],
)
def test_local_refusals_happen_before_any_write(transaction: Transaction, code: int, enhanced: str) -> None:
    wire = Wire()
    wire.ready(b"250-mx\r\n250-PIPELINING\r\n250 SIZE 1500\r\n")
    wire.conn.submit(transaction)
    assert wire.written() == b""
    (result,) = wire.results()
    for recipient in result.recipients:
        assert (recipient.reply.code, str(recipient.reply.enhanced), recipient.reply.local) == (code, enhanced, True)
    assert wire.conn.usable


def test_one_bad_recipient_does_not_stop_the_others() -> None:
    wire = Wire()
    wire.ready()
    wire.conn.submit(txn("bad\n@y", "good@y"))
    assert wire.written() == b"MAIL FROM:<a@x.example> SIZE=22\r\nRCPT TO:<good@y>\r\nDATA\r\n"
    wire.feed(b"250 ok\r\n250 ok\r\n354 go\r\n").written()
    wire.feed(b"250 ok\r\n")
    assert summary(wire.results()[0]) == [("bad\n@y", 553, "RCPT", False), ("good@y", 250, ".", True)]


def test_eight_bit_and_smtputf8_through_the_machine() -> None:
    wire = Wire()
    wire.ready(b"250-mx\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n")
    wire.conn.submit(txn("jürgen@bücher.example", body="Subject: ä\r\n\r\nü\r\n".encode()))
    assert wire.written() == (
        "MAIL FROM:<a@x.example> BODY=8BITMIME SMTPUTF8\r\nRCPT TO:<jürgen@bücher.example>\r\nDATA\r\n"
    ).encode()


@given(st.text(alphabet=st.sampled_from("ab@\r\n\x00<>\x7f"), min_size=1, max_size=8))
def test_injected_addresses_never_reach_the_wire(address: str) -> None:
    wire = Wire()
    wire.ready()
    wire.conn.submit(txn(address, sender=address))
    out = wire.written()
    if out:
        assert out.count(b"\r\n") == out.count(b"\n") == 3  # MAIL, RCPT, DATA and nothing else


def test_submit_needs_ready_and_a_recipient() -> None:
    wire = Wire()
    with pytest.raises(LocalProtocolError):
        wire.conn.submit(txn("b@y"))
    wire.ready()
    with pytest.raises(LocalProtocolError):
        wire.conn.submit(txn())


# -- 421, EOF, timeouts: unusable, and which transactions are undecided or unsure ----------


def test_421_to_rcpt_decides_that_transaction_and_leaves_the_next_undecided() -> None:
    wire = Wire()
    wire.ready()
    first, second = txn("b@y", "c@y"), txn("d@y")
    wire.conn.submit(first)
    wire.conn.submit(second)
    wire.written()
    wire.feed(b"250 ok\r\n421 4.7.0 too many errors\r\n")
    events = wire.events()
    assert isinstance(events[0], TransactionDone)
    assert summary(events[0].result) == [("b@y", 421, "RCPT", False), ("c@y", 421, "RCPT", False)]
    closed = events[1]
    assert isinstance(closed, Closed) and closed.error is None and closed.unsure is None
    assert closed.undecided == (second,) and closed.reply is not None and closed.reply.code == 421
    assert not wire.conn.usable and wire.written() == b""


def test_421_to_the_end_of_data_is_that_transaction_s_reply() -> None:
    wire = Wire()
    wire.ready()
    wire.conn.submit(txn("b@y"))
    wire.written()
    wire.feed(b"250 ok\r\n250 ok\r\n354 go\r\n").written()
    wire.feed(b"421 4.3.0 shutting down\r\n")
    events = wire.events()
    assert isinstance(events[0], TransactionDone) and summary(events[0].result) == [("b@y", 421, ".", False)]
    assert isinstance(events[1], Closed) and events[1].unsure is None


def test_unsolicited_421_when_idle_closes() -> None:
    wire = Wire()
    wire.ready()
    closed = wire.feed(b"421 4.4.2 idle too long\r\n").closed()
    assert closed.error is None and closed.reply is not None and closed.reply.code == 421


def test_unsolicited_other_reply_is_a_protocol_error() -> None:
    wire = Wire()
    wire.ready()
    assert isinstance(wire.feed(b"250 surprise\r\n").closed().error, RemoteProtocolError)


def eof_after_end_of_data() -> tuple[Wire, Transaction, Transaction]:
    wire = Wire()
    wire.ready()
    first, second = txn("b@y"), txn("c@y")
    wire.conn.submit(first)
    wire.conn.submit(second)
    wire.written()
    wire.feed(b"250 ok\r\n250 ok\r\n354 go\r\n")
    assert wire.written().endswith(b".\r\nMAIL FROM:<a@x.example> SIZE=22\r\nRCPT TO:<c@y>\r\nDATA\r\n")
    return wire, first, second


def test_eof_after_end_of_data_makes_that_transaction_unsure() -> None:
    wire, first, second = eof_after_end_of_data()
    closed = wire.feed(b"").closed()
    assert isinstance(closed.error, TransportError)
    assert closed.unsure is first and closed.undecided == (second,)


def test_timeout_waiting_for_the_end_of_data_reply() -> None:
    wire, first, second = eof_after_end_of_data()
    assert wire.conn.waiting_for() == ("data_end", 601.0)
    wire.conn.timeout()
    closed = wire.closed()
    assert isinstance(closed.error, SmtpTimeout) and closed.error.phase == "data_end"
    assert closed.unsure is first and closed.undecided == (second,)
    assert wire.conn.waiting_for() is None


def test_end_of_data_not_handed_out_is_undecided_not_unsure() -> None:
    wire = Wire()
    wire.ready()
    first = txn("b@y")
    wire.conn.submit(first)
    wire.written()
    wire.conn.writing_paused(True)
    wire.feed(b"250 ok\r\n250 ok\r\n354 go\r\n")  # the body waits in the machine
    assert wire.conn.waiting_for() == ("data_block", 181.0)
    wire.conn.timeout()
    closed = wire.closed()
    assert isinstance(closed.error, SmtpTimeout) and closed.error.phase == "data_block"
    assert closed.unsure is None and closed.undecided == (first,)


def test_end_of_data_stuck_behind_a_paused_transport_is_not_unsure() -> None:
    wire, first, second = eof_after_end_of_data()  # handed out...
    wire.conn.writing_paused(True)  # ...but the transport is over its high-water mark
    wire.conn.timeout()
    closed = wire.closed()
    assert closed.unsure is None and closed.undecided == (first, second)


def test_eof_before_anything_is_a_transport_error() -> None:
    closed = Wire().feed(b"").closed()
    assert isinstance(closed.error, TransportError) and closed.undecided == ()


def test_greeting_timeout() -> None:
    wire = Wire()
    wire.conn.timeout()
    closed = wire.closed()
    assert isinstance(closed.error, SmtpTimeout) and closed.error.phase == "greeting"


def test_connection_lost_with_an_error_keeps_it() -> None:
    wire = Wire()
    wire.ready()
    wire.conn.submit(first := txn("b@y"))
    wire.written()
    error = TransportError("reset")
    wire.conn.connection_lost(error)
    closed = wire.closed()
    assert closed.error is error and closed.undecided == (first,)


# -- NOOP and QUIT --------------------------------------------------------------------------


def test_noop() -> None:
    wire = Wire()
    wire.ready()
    wire.conn.noop()
    assert wire.written() == b"NOOP\r\n" and wire.conn.waiting_for() == ("noop", 20.0)
    (event,) = wire.feed(b"250 2.0.0 Ok\r\n").events()
    assert isinstance(event, NoopDone) and event.reply.command == "NOOP"


def test_quit_after_the_outstanding_transaction() -> None:
    wire = Wire()
    wire.ready()
    wire.conn.submit(txn("b@y"))
    wire.conn.quit()
    assert not wire.conn.usable
    assert wire.written().endswith(b"DATA\r\n")  # QUIT may not follow DATA
    assert wire.feed(b"250 ok\r\n250 ok\r\n354 go\r\n").written() == BODY + b".\r\nQUIT\r\n"
    wire.feed(b"250 ok\r\n")
    assert len(wire.results()) == 1
    wire.feed(b"221 2.0.0 Bye\r\n")
    assert wire.closed() == Closed(None)


def test_eof_after_quit_is_a_clean_close() -> None:
    wire = Wire()
    wire.ready()
    wire.conn.quit()
    assert wire.written() == b"QUIT\r\n"
    assert wire.feed(b"").closed() == Closed(None)


# -- anything from the server: events or RemoteProtocolError, never another exception -------


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=30) | st.sampled_from([b"250 ok\r\n", b"354 go\r\n", b"421 bye\r\n"]), max_size=12))
def test_arbitrary_server_bytes_never_raise(chunks: list[bytes]) -> None:
    wire = Wire(starttls="offered")
    wire.feed(GREETING)
    wire.feed(EHLO_PIPELINING)
    wire.conn.submit(txn("b@y", "c@y"))
    wire.conn.submit(txn("d@y"))
    for chunk in chunks:
        wire.feed(chunk)
        wire.written()
    for event in wire.events():
        if isinstance(event, Closed):
            assert event.error is None or isinstance(event.error, RemoteProtocolError | TransportError)
