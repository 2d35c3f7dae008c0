"""EHLO reply -> Capabilities."""

from __future__ import annotations

from engine.smtp.extensions import HELO_CAPABILITIES, Capabilities
from engine.smtp.replies import Reply


def ehlo(*lines: str) -> Capabilities:
    return Capabilities.from_ehlo(Reply(250, ("mx.example greets you", *lines)))


def test_postfix_like_reply() -> None:
    caps = ehlo(
        "PIPELINING",
        "SIZE 10240000",
        "VRFY",
        "ETRN",
        "STARTTLS",
        "ENHANCEDSTATUSCODES",
        "8BITMIME",
        "DSN",
        "SMTPUTF8",
        "CHUNKING",
    )
    assert caps == Capabilities(
        esmtp=True,
        pipelining=True,
        size=10240000,
        eightbitmime=True,
        smtputf8=True,
        starttls=True,
        enhancedstatuscodes=True,
        dsn=True,
        chunking=True,
    )


def test_keywords_are_case_insensitive_and_unknown_ones_ignored() -> None:
    caps = ehlo("pipelining", "X-EXPS GSSAPI", "8bitmime")
    assert caps.pipelining and caps.eightbitmime and not caps.dsn


def test_size_without_a_number_means_no_fixed_limit() -> None:
    assert ehlo("SIZE").size == 0
    assert ehlo("SIZE 0").size == 0
    assert ehlo("SIZE abc").size == 0
    assert ehlo("8BITMIME").size is None


def test_auth_both_spellings_deduplicated() -> None:
    assert ehlo("AUTH PLAIN LOGIN", "AUTH=LOGIN CRAM-MD5").auth == ("PLAIN", "LOGIN", "CRAM-MD5")


def test_the_first_line_is_never_a_keyword() -> None:
    caps = Capabilities.from_ehlo(Reply(250, ("PIPELINING",)))
    assert caps == Capabilities(esmtp=True)


def test_helo_capabilities_announce_nothing() -> None:
    assert not HELO_CAPABILITIES.esmtp and HELO_CAPABILITIES.size is None
