"""Classification of failures: category, fault, permanence, throttle, phase."""

from __future__ import annotations

import pytest

from engine import bounce_rules as r
from engine.classify import (
    Verdict,
    category_from_text,
    classify,
    from_error,
    from_reply,
    is_too_many_recipients,
)
from engine.errors import ConnectError, DnsPermanent, DnsTemporary, SmtpTimeout, TlsError
from engine.outcome import BOUNCED, DEFERRED, DELIVERED
from engine.smtp.replies import EnhancedCode, Reply


def reply(code: int, text: str, command: str = "RCPT", enhanced: str | None = None) -> Reply:
    return Reply(code, (text,), EnhancedCode.parse(enhanced) if enhanced else None, command)


@pytest.mark.parametrize(
    ("code", "enhanced", "text", "phase", "category", "fault"),
    [
        (550, "5.1.1", "<a@example.com>: Recipient address rejected: User unknown in local table", "RCPT", r.BAD_MAILBOX, r.RECIPIENT),
        (550, "5.1.1", "The email account that you tried to reach does not exist.", "RCPT", r.BAD_MAILBOX, r.RECIPIENT),
        (550, "5.1.2", "Host unknown", "RCPT", r.BAD_DOMAIN, r.RECIPIENT),
        (552, "5.2.2", "The email account that you tried to reach is over quota", "RCPT", r.MAILBOX_FULL, r.RECIPIENT),
        (452, "4.2.2", "Mailbox full", "RCPT", r.MAILBOX_FULL, r.RECIPIENT),
        (552, "5.3.4", "Message size exceeds fixed maximum message size", ".", r.MESSAGE_TOO_BIG, r.MESSAGE),
        (550, "5.7.1", "Message rejected as spam by Content Filtering", ".", r.CONTENT, r.MESSAGE),
        (554, "5.7.1", "Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org", "RCPT", r.REPUTATION, r.SENDER),
        (421, "4.7.0", "Try again later, closing connection. (EHLO) very low reputation of the sending IP", "EHLO", r.REPUTATION, r.SENDER),
        (421, "4.7.28", "Our system has detected an unusual rate of unsolicited mail; rate limited", "RCPT", r.RATE_LIMITED, r.SENDER),
        (421, "", "Too many concurrent SMTP connections; please try again later", "CONNECT", r.RATE_LIMITED, r.SENDER),
        (550, "5.7.26", "Unauthenticated email from example.org is not accepted due to domain's DMARC policy", ".", r.AUTH, r.SENDER),
        (530, "5.7.0", "Must issue a STARTTLS command first", "MAIL", r.TLS, r.RECEIVER),
        (554, "5.7.1", "<a@example.com>: Relay access denied", "RCPT", r.POLICY, r.SENDER),
        (451, "4.3.0", "Temporary local problem - please try later", "RCPT", r.NETWORK, r.RECEIVER),
        (550, "", "", "RCPT", r.BAD_MAILBOX, r.RECIPIENT),
    ],
)
def test_categories(code: int, enhanced: str, text: str, phase: str, category: str, fault: str) -> None:
    c = classify(code, enhanced, text, phase)
    assert (c.category, c.fault) == (category, fault)
    assert c.permanent is (code >= 500)


def test_permanence_comes_from_the_code_not_the_words() -> None:
    text = "The user you are trying to contact is receiving mail at a rate that prevents additional messages"
    assert not classify(450, "4.2.1", text, "RCPT").permanent
    assert classify(550, "5.2.1", text, "RCPT").permanent
    assert classify(0, "5.1.1", "", "").permanent  # no reply code: the enhanced code's class
    assert not classify(0, "", "whatever", "").permanent


def test_a_5xx_to_mail_is_about_the_sender_never_the_recipient() -> None:
    c = classify(550, "5.1.1", "user unknown", "MAIL")  # a lazy server reusing 5.1.1 for the sender
    assert c.category == r.POLICY and c.fault == r.SENDER
    assert classify(553, "5.1.8", "Domain of sender address does not exist", "MAIL").fault == r.SENDER
    assert classify(550, "", "", "MAIL").fault == r.SENDER


def test_a_refused_greeting_is_about_the_connecting_ip() -> None:
    assert classify(554, "", "No SMTP service here", "CONNECT").category == r.BAD_DOMAIN  # said plainly
    assert classify(554, "", "Access denied", "CONNECT").category == r.REPUTATION
    assert classify(550, "5.1.1", "", "EHLO").category == r.REPUTATION


def test_an_unexplained_refusal_of_the_message_is_about_the_message() -> None:
    assert classify(554, "5.0.0", "Transaction failed", ".").category == r.NETWORK  # said plainly
    assert classify(554, "", "", ".").category == r.CONTENT
    assert classify(552, "", "", ".").category == r.MESSAGE_TOO_BIG
    assert classify(552, "", "", "RCPT").category == r.MAILBOX_FULL


def test_a_precise_code_beats_vague_words_and_clear_words_beat_a_code() -> None:
    assert classify(550, "5.7.26", "Recipient address rejected", "RCPT").category == r.AUTH
    assert classify(550, "5.2.2", "Invalid address", "RCPT").category == r.MAILBOX_FULL
    assert classify(550, "5.7.1", "User unknown", "RCPT").category == r.BAD_MAILBOX
    assert classify(550, "5.1.1", "Refused due to recipient preferences RCP-P2", "RCPT").category == r.BAD_MAILBOX


def test_provider_codes_and_fragments() -> None:
    assert classify(554, "", "IP blocked AUP#CXBL", "CONNECT").category == r.REPUTATION  # Cox
    assert classify(550, "", "Mail rejected. ofr_506 [506]", ".").category == r.CONTENT  # Orange
    fragment = "The SPF record of the sending domain has one or more suspicious entries"
    assert classify(550, "5.7.24", fragment, ".").category == r.AUTH


def test_addresses_in_the_text_are_not_read_as_words() -> None:
    assert category_from_text("<blocked@example.org>... rejected")[0] == r.POLICY
    assert category_from_text("<mailboxfull@example.org>: ok")[0] == ""


def test_throttle_and_suppress_flags() -> None:
    rate = from_reply(reply(421, "4.7.0 Too many connections from your IP"), False)
    assert rate.throttle and not rate.suppress and rate.status == DEFERRED
    gone = from_reply(reply(550, "User unknown", enhanced="5.1.1"), False)
    assert gone.suppress and not gone.throttle and gone.status == BOUNCED
    full = from_reply(reply(452, "Mailbox full", enhanced="4.2.2"), False)
    assert not full.suppress  # temporary: never suppressed
    blocked = from_reply(reply(550, "blocked using zen.spamhaus.org", enhanced="5.7.1"), False)
    assert not blocked.suppress and blocked.throttle  # a reputation block is not the recipient's fault


def test_verdict_keeps_its_original_positional_api() -> None:
    v = Verdict(BOUNCED, 0, "5.6.0", "message could not be built")
    assert (v.category, v.fault, v.permanent, v.throttle) == ("", "", False, False)
    ok = from_reply(reply(250, "2.0.0 Ok: queued", "."), True)
    assert ok.status == DELIVERED and ok.category == "" and ok.code == 250
    assert from_reply(reply(550, "", "MAIL"), False).category == r.POLICY  # the phase is Reply.command
    assert from_reply(reply(550, "", "MAIL"), False, phase="RCPT").category == r.BAD_MAILBOX  # or given


@pytest.mark.parametrize(
    ("error", "status", "category", "fault"),
    [
        (DnsPermanent("NXDOMAIN", domain="x.test"), BOUNCED, r.BAD_DOMAIN, r.RECIPIENT),
        (DnsPermanent("null MX", domain="x.test", enhanced="5.1.10"), BOUNCED, r.BAD_DOMAIN, r.RECIPIENT),
        (DnsTemporary("SERVFAIL"), DEFERRED, r.NETWORK, r.RECEIVER),
        (SmtpTimeout("rcpt", 300), DEFERRED, r.NETWORK, r.RECEIVER),
        (TlsError("certificate verify failed"), DEFERRED, r.TLS, r.RECEIVER),
        (ConnectError("refused"), DEFERRED, r.NETWORK, r.RECEIVER),
        (ConnectionResetError(), DEFERRED, r.NETWORK, r.RECEIVER),
        (RuntimeError("bug"), DEFERRED, r.OTHER, r.RECEIVER),
    ],
)
def test_errors_without_a_reply(error: BaseException, status: str, category: str, fault: str) -> None:
    v = from_error(error)
    assert (v.status, v.category, v.fault) == (status, category, fault)
    assert v.permanent is (status == BOUNCED)


def test_too_many_recipients_is_not_a_failure() -> None:
    assert is_too_many_recipients(reply(452, "4.5.3 Too many recipients", enhanced="4.5.3"))
    assert is_too_many_recipients(reply(452, "Too many recipients"))
    assert not is_too_many_recipients(reply(452, "Too many recipients", "MAIL"))


def test_every_category_has_a_fault_and_the_mapping_covers_the_corpus_reasons() -> None:
    assert set(r.FAULT_OF) == set(r.CATEGORIES)
    assert set(r.SISIMAI_REASONS.values()) <= set(r.CATEGORIES)
    reasons = {"userunknown", "mailboxfull", "filtered", "rejected", "expired", "blocked", "hostunknown",
               "systemerror", "suspend", "spamdetected", "networkerror", "authfailure", "policyviolation",
               "requireptr", "mailererror", "hasmoved", "notaccept", "toomanyconn", "securityerror", "onhold",
               "notcompliantrfc", "exceedlimit", "norelaying", "contenterror", "mesgtoobig", "syntaxerror",
               "undefined", "speeding", "badreputation", "virusdetected", "failedstarttls"}  # fmt: skip
    assert reasons <= set(r.SISIMAI_REASONS)
