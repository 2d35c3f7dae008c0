"""Parsing what arrives at the bounce address: DSNs, non-standard bounces,
auto-replies, complaints; bounded and never raising."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from engine import bounce_rules as r
from engine.bounce_mime import ParseLimits
from engine.dsn import ParsedMessage, diagnostic, parse_message

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "bounces"

DSN = b"""\
From: Mail Delivery System <MAILER-DAEMON@mx.example.net>
To: bounces+abcdefghij-7-job1@bounce.example.org
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

I'm sorry to have to inform you that your message could not be delivered.

<jane@example.com>: host mx.example.com[192.0.2.9] said: 550 5.1.1 <jane@example.com>:
    Recipient address rejected: User unknown (in reply to RCPT TO command)

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net

Final-Recipient: rfc822; jane@example.com
Original-Recipient: rfc822;jane@example.com
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx.example.com
Diagnostic-Code: smtp; 550 5.1.1 <jane@example.com>: Recipient address rejected:
    User unknown

--B
Content-Type: text/rfc822-headers

From: news@example.org
To: jane@example.com
Subject: Hello
X-Bulkmail-Trace: j=job1; i=7; r=amFuZUBleGFtcGxlLmNvbQ; m=0123456789abcdef

--B--
"""


def test_standard_dsn() -> None:
    parsed = parse_message(DSN)
    assert parsed.kind == "bounce" and parsed.error == ""
    (rec,) = parsed.records
    assert (rec.recipient, rec.action, rec.status, rec.code) == ("jane@example.com", "failed", "5.1.1", 550)
    assert (rec.category, rec.fault, rec.permanent, rec.suppress) == (r.BAD_MAILBOX, r.RECIPIENT, True, True)
    assert rec.remote_mta == "mx.example.com"
    assert parsed.trace.startswith("j=job1; i=7;") and parsed.original_to == ("jane@example.com",)


def test_line_endings_do_not_matter() -> None:
    lf = parse_message(DSN)
    assert parse_message(DSN.replace(b"\n", b"\r\n")) == lf
    assert parse_message(DSN.replace(b"\n", b"\r")) == lf


def test_delayed_and_delivered_reports() -> None:
    delayed = DSN.replace(b"Action: failed\nStatus: 5.1.1", b"Action: delayed\nStatus: 4.4.1")
    delayed = delayed.replace(b"550 5.1.1", b"451 4.4.1").replace(b"User unknown", b"Connection timed out")
    (rec,) = parse_message(delayed).records
    assert (rec.action, rec.status, rec.permanent, rec.suppress) == ("delayed", "4.4.1", False, False)
    assert rec.category == r.NETWORK
    success = DSN.replace(b"Action: failed\nStatus: 5.1.1", b"Action: delivered\nStatus: 2.0.0")
    assert parse_message(success).kind == "delivered" and parse_message(success).records == ()


def test_qmail_style_text_bounce() -> None:
    msg = b"""From: MAILER-DAEMON@mail.example.net
Subject: failure notice

Hi. This is the qmail-send program at mail.example.net.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<bob@example.com>:
192.0.2.3 does not like recipient.
Remote host said: 552 5.2.2 <bob@example.com>... Mailbox full
Giving up on 192.0.2.3.

<carol@example.net>:
Sorry, I couldn't find any host named example.net. (#5.1.2)

--- Below this line is a copy of the message.

Return-Path: <news@example.org>
From: news@example.org
To: someone.else@example.org
"""
    bob, carol = parse_message(msg).records
    assert (bob.recipient, bob.status, bob.category, bob.permanent) == ("bob@example.com", "5.2.2", r.MAILBOX_FULL, True)
    assert (carol.recipient, carol.category, carol.fault) == ("carol@example.net", r.BAD_DOMAIN, r.RECIPIENT)


def test_exim_failed_recipients_header_names_the_recipients() -> None:
    msg = b"""From: Mail Delivery System <Mailer-Daemon@mx.example.net>
X-Failed-Recipients: dave@example.com
Subject: Mail delivery failed: returning message to sender

  dave@example.com
    SMTP error from remote mail server after end of data:
    554 5.7.1 Message rejected: spam content detected

  see also postmaster@example.net and http://example.net/help
"""
    (rec,) = parse_message(msg).records
    assert (rec.recipient, rec.phase, rec.category, rec.fault) == ("dave@example.com", ".", r.CONTENT, r.MESSAGE)


def test_warning_without_a_code_is_temporary() -> None:
    msg = b"""From: postmaster@example.net
Subject: Warning: message delayed 24 hours

Your message could not be delivered to the following recipients yet:

   erin@example.com

Delivery attempts will continue to be made for 4 days.
"""
    (rec,) = parse_message(msg).records
    assert (rec.action, rec.status, rec.permanent) == ("delayed", "4.0.0", False)


def test_auto_replies_and_ordinary_mail_are_not_bounces() -> None:
    vacation = b"From: frank@example.com\nAuto-Submitted: auto-replied\nSubject: Out of office\n\nBack on Monday.\n"
    assert parse_message(vacation) == ParsedMessage("autoreply")
    oof = b"From: g@example.com\nSubject: Automatic reply: Hello\nX-Auto-Response-Suppress: All\n\nAway.\n"
    assert parse_message(oof).kind == "autoreply"
    note = b"From: h@example.com\nTo: i@example.org\nSubject: lunch?\n\nUser unknown is my favourite band.\n"
    assert parse_message(note).kind == "none"


def test_arf_complaint_with_the_trace_header() -> None:
    msg = b"""From: feedback@arf.example.net
To: fbl@bounce.example.org
Subject: FW: Hello
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="F"

--F
Content-Type: text/plain

This is an email abuse report.
--F
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: SomeFBL/1.0
Version: 1
Original-Mail-From: <bounces+abcdefghij-7-job1@bounce.example.org>
Original-Rcpt-To: <jane@example.com>
Source-IP: 192.0.2.1

--F
Content-Type: message/rfc822

From: news@example.org
To: redacted@example.com
X-Bulkmail-Trace: j=job1; i=7; r=amFuZUBleGFtcGxlLmNvbQ; m=0123456789abcdef
Subject: Hello

Hi
--F--
"""
    parsed = parse_message(msg)
    assert parsed.kind == "complaint" and parsed.records == ()
    c = parsed.complaint
    assert c is not None and c.feedback_type == "abuse" and c.recipients == ("jane@example.com",)
    assert c.original_mail_from == "bounces+abcdefghij-7-job1@bounce.example.org" and c.source_ip == "192.0.2.1"
    assert parsed.trace.startswith("j=job1")


def test_broken_mime_and_charsets() -> None:
    broken = (
        b"From: MAILER-DAEMON@example.net\nSubject: Undeliverable\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="X"\n\n--X\nContent-Type: text/plain; charset=x-no-such-charset\n'
        b"Content-Transfer-Encoding: base64\n\n!!!not base64!!!\n--X\nContent-Type: text/plain; charset=iso-8859-1\n\n"
        b"Delivery to k\xe4the@example.com failed: 550 5.1.1 user unknown\n"  # no closing boundary
    )
    parsed = parse_message(broken)
    assert parsed.error == "" and parsed.kind == "bounce"
    assert [x.category for x in parsed.records] == [r.BAD_MAILBOX]


def test_size_and_depth_are_bounded() -> None:
    head = b"From: MAILER-DAEMON@example.net\nSubject: failure notice\n\n<a@example.com>: 550 5.1.1 user unknown\n"
    parsed = parse_message(head + b"x" * 4096, ParseLimits(max_bytes=len(head) + 10))
    assert [x.recipient for x in parsed.records] == ["a@example.com"]
    nested = b"From: MAILER-DAEMON@example.net\nSubject: failure\nContent-Type: multipart/mixed; boundary=b0\n\n"
    for i in range(1, 300):
        nested += b"--b%d\nContent-Type: multipart/mixed; boundary=b%d\n\n" % (i - 1, i)
    assert isinstance(parse_message(nested, ParseLimits(max_depth=4)), ParsedMessage)


def test_diagnostic_code_phase_and_where_the_reply_starts() -> None:
    assert diagnostic("host x said: 550 5.1.1 <a@b.c>: nope (in reply to RCPT TO command)") == (550, "5.1.1", "RCPT", 13)
    assert diagnostic("SMTP error from remote mail server after end of data: 554 5.7.1 spam")[:3] == (554, "5.7.1", ".")
    assert diagnostic("Connected to 192.0.2.1 but sender was rejected.")[2] == "MAIL"
    assert diagnostic("version 2.0.12 greeting 220 ok") == (0, "", "", -1)  # never a 2xx, never a version


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    parsed = parse_message(data)
    assert isinstance(parsed.records, tuple) and parsed.error == ""


_SAMPLES = sorted(p for p in CORPUS.rglob("*") if p.suffix in (".eml", ".txt"))[::7]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(_SAMPLES), st.integers(0, 10**6), st.integers(0, 10**6), st.binary(max_size=40))
def test_truncated_or_garbled_real_bounces_never_raise(path: Path, cut: int, at: int, junk: bytes) -> None:
    data = path.read_bytes()
    data = data[: cut % (len(data) + 1)]
    where = at % (len(data) + 1)
    parsed = parse_message(data[:where] + junk + data[where:])
    assert isinstance(parsed, ParsedMessage) and parsed.error == ""
