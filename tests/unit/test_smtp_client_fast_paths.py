"""The shortcuts taken for speed write the same bytes and report the same values as the long way.

``ClientConnection.submit`` writes a pipelined group at once when nothing is
queued (instead of going through the queue), results are built without the
frozen dataclass ``__init__``, events can be taken in one call, and
``progress`` tells the driver when to recompute the deadline.
"""

from __future__ import annotations

import dataclasses

import pytest

from engine.config import SmtpConfig, SmtpTimeouts
from engine.smtp import (
    ClientConnection,
    EnhancedCode,
    Envelope,
    RecipientResult,
    Reply,
    Transaction,
    TransactionDone,
    TransactionResult,
)

CONFIG = SmtpConfig(helo="client.example", timeouts=SmtpTimeouts(data_block=181.0))
GREETING = b"220 mx.example ESMTP\r\n"
EHLO = b"250-mx.example\r\n250-PIPELINING\r\n250-SIZE 1000000\r\n250 ENHANCEDSTATUSCODES\r\n"
GROUP_OK = b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n354 go ahead\r\n"


def ready() -> ClientConnection:
    conn = ClientConnection(CONFIG)
    conn.receive_data(GREETING)
    conn.receive_data(EHLO)
    conn.events()
    conn.data_to_send()
    return conn


def written(conn: ClientConnection) -> bytes:
    return b"".join(conn.data_to_send())


def txn(n: int) -> Transaction:
    return Transaction(Envelope("a@x.example", (f"b{n}@y", f"c{n}@y")), b"Subject: %d\r\n\r\nhi\r\n" % n)


def test_a_group_submitted_behind_an_end_of_data_is_written_at_once_and_exactly() -> None:
    conn = ready()
    first, second = txn(1), txn(2)
    conn.submit(first)
    written(conn)
    conn.receive_data(GROUP_OK)
    assert written(conn) == first.message + b".\r\n"  # end of data in flight: the next group may follow
    conn.submit(second)
    assert written(conn) == (
        b"MAIL FROM:<a@x.example> SIZE=18\r\nRCPT TO:<b2@y>\r\nRCPT TO:<c2@y>\r\nDATA\r\n"
    )
    conn.receive_data(b"250 2.0.0 Ok: queued as A1\r\n" + GROUP_OK)
    assert written(conn) == second.message + b".\r\n"
    conn.receive_data(b"250 2.0.0 Ok: queued as A2\r\n")
    results = [e.result for e in conn.events() if isinstance(e, TransactionDone)]
    final = Reply(250, ("Ok: queued as A2",), EnhancedCode(2, 0, 0), ".")
    mail = Reply(250, ("Ok",), EnhancedCode(2, 1, 0), "MAIL")
    data = Reply(354, ("go ahead",), None, "DATA")
    assert results[1] == TransactionResult(
        second,
        (RecipientResult("b2@y", final, True), RecipientResult("c2@y", final, True)),
        mail,
        data,
        final,
    )
    assert type(results[1]) is TransactionResult and type(results[1].recipients[0]) is RecipientResult


def test_events_takes_every_event_in_order() -> None:
    conn = ready()
    conn.submit(txn(1))
    conn.submit(Transaction(Envelope("a@x", ("bad\r\n@y",)), b"x\r\n"))  # refused locally: an event now
    conn.noop()
    written(conn)
    conn.receive_data(GROUP_OK)
    conn.receive_data(b"250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n")
    events = conn.events()
    assert [type(e).__name__ for e in events] == ["TransactionDone", "TransactionDone", "NoopDone"]
    assert conn.events() == () and conn.next_event() is None


def test_progress_moves_when_the_deadline_to_enforce_may_have_changed() -> None:
    conn = ready()
    mark = conn.progress
    conn.submit(txn(1))  # a wait begins
    assert conn.progress == mark + 1
    conn.submit(txn(2))  # queued behind DATA: the wait for MAIL's reply is the same one
    assert conn.progress == mark + 1
    conn.receive_data(b"250 2.1.0 Ok\r\n250 2.1.5")  # a reply, and half of one
    assert conn.progress == mark + 2
    conn.receive_data(b" Ok\r\n")
    assert conn.progress == mark + 3
    conn.writing_paused(True)
    assert conn.progress == mark + 4 and conn.waiting_for() == ("data_block", 181.0)
    conn.writing_paused(True)
    assert conn.progress == mark + 4
    conn.writing_paused(False)
    assert conn.progress == mark + 5


def test_envelope_keeps_every_dataclass_behaviour_with_its_faster_init() -> None:
    envelope = Envelope("a@x", ("b@y",), "FULL", envid="id1", notify=("NEVER",), orcpt=(None,))
    assert (envelope.mail_from, envelope.recipients, envelope.ret) == ("a@x", ("b@y",), "FULL")
    assert (envelope.envid, envelope.notify, envelope.orcpt) == ("id1", ("NEVER",), (None,))
    assert Envelope("a@x", ("b@y",)) == Envelope(mail_from="a@x", recipients=("b@y",))
    assert hash(Envelope("a@x", ("b@y",))) == hash(Envelope("a@x", ("b@y",)))
    assert dataclasses.replace(envelope, ret=None).ret is None
    assert repr(Envelope("a@x", ("b@y",))).startswith("Envelope(mail_from='a@x', recipients=('b@y',), ret=None")
    with pytest.raises(dataclasses.FrozenInstanceError):
        envelope.ret = "HDRS"  # type: ignore[misc]


@pytest.mark.parametrize(
    "message",
    [b"Subject: x\r\n\r\n.dot\r\n..two\r\n", b".first\r\n", b"lone\nLF and lone\rCR", b"no final line end"],
)
def test_a_message_vouched_canonical_is_written_as_the_checked_one_would_be(message: bytes) -> None:
    """``Transaction.canonical`` skips scans, never dot-stuffing; a message that breaks the
    promise visibly (no final CRLF) gets the full treatment."""
    wires = []
    for canonical in (False, True):
        conn = ready()
        conn.submit(Transaction(Envelope("a@x.example", ("b@y",)), message, canonical=canonical))
        head = written(conn)
        conn.receive_data(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go ahead\r\n")
        wires.append(head + written(conn))
    assert wires[0] == wires[1]
    if message.endswith(b"\r\n"):
        assert b"\r\n..dot\r\n...two\r\n" in wires[1] or b"\r\n..first\r\n" in wires[1]


def test_a_vouched_message_with_a_nul_is_still_refused_before_a_byte_is_written() -> None:
    conn = ready()
    conn.submit(Transaction(Envelope("a@x.example", ("b@y",)), b"Subject: x\r\n\r\n\x00\r\n", canonical=True))
    assert written(conn) == b""
    (done,) = conn.events()
    assert isinstance(done, TransactionDone)
    assert done.result.recipients[0].reply.code == 554 and not done.result.recipients[0].delivered
