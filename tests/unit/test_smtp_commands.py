"""Command bytes, ESMTP parameters only when announced, injection refused before any write."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import LocalProtocolError
from engine.smtp import commands
from engine.smtp.extensions import HELO_CAPABILITIES, Capabilities
from engine.smtp.replies import LocalRefusal, Reply
from engine.smtp.transaction import Envelope

ESMTP = Capabilities(esmtp=True)
ALL = Capabilities(esmtp=True, pipelining=True, size=0, eightbitmime=True, smtputf8=True, dsn=True)
BAD = ["\r", "\n", "\r\n", "\x00", "\x7f", "\x01", "\x1b", "\t", "<", ">"]


def build(
    envelope: Envelope, caps: Capabilities = ESMTP, size: int = 100, eight_bit: bool = False
) -> tuple[bytes, list[bytes | Reply]]:
    return commands.envelope_commands(envelope, caps, size, eight_bit)


def test_plain_commands() -> None:
    mail, rcpts = build(Envelope("a@x.example", ("b@y.example", "c@y.example")))
    assert mail == b"MAIL FROM:<a@x.example>\r\n"
    assert rcpts == [b"RCPT TO:<b@y.example>\r\n", b"RCPT TO:<c@y.example>\r\n"]


def test_null_reverse_path() -> None:
    assert build(Envelope("", ("b@y",)))[0] == b"MAIL FROM:<>\r\n"


@pytest.mark.parametrize(
    ("caps", "eight_bit", "expected"),
    [
        (HELO_CAPABILITIES, True, b"MAIL FROM:<a@x>\r\n"),
        (ESMTP, True, b"MAIL FROM:<a@x>\r\n"),  # no 8BITMIME announced: sent as is, no BODY=
        (Capabilities(esmtp=True, size=0), False, b"MAIL FROM:<a@x> SIZE=1234\r\n"),
        (Capabilities(esmtp=True, size=5000), False, b"MAIL FROM:<a@x> SIZE=1234\r\n"),
        (Capabilities(esmtp=True, eightbitmime=True), False, b"MAIL FROM:<a@x>\r\n"),
        (Capabilities(esmtp=True, eightbitmime=True), True, b"MAIL FROM:<a@x> BODY=8BITMIME\r\n"),
        (ALL, True, b"MAIL FROM:<a@x> SIZE=1234 BODY=8BITMIME\r\n"),
    ],
)
def test_mail_parameters_only_when_announced(caps: Capabilities, eight_bit: bool, expected: bytes) -> None:
    assert build(Envelope("a@x", ("b@y",)), caps, 1234, eight_bit)[0] == expected


def test_size_over_the_announced_limit_is_refused_locally() -> None:
    with pytest.raises(LocalRefusal) as refused:
        build(Envelope("a@x", ("b@y",)), Capabilities(esmtp=True, size=1000), 1001)
    reply = refused.value.reply
    assert (reply.code, str(reply.enhanced), reply.command, reply.local) == (552, "5.3.4", "MAIL", True)


def test_smtputf8_is_added_when_an_address_needs_it_and_it_is_announced() -> None:
    mail, rcpts = build(Envelope("a@x", ("b@y", "jürgen@bücher.example")), ALL)
    assert mail == b"MAIL FROM:<a@x> SIZE=100 SMTPUTF8\r\n"
    assert rcpts[1] == "RCPT TO:<jürgen@bücher.example>\r\n".encode()
    assert build(Envelope("ä@x", ("b@y",)), ALL)[0] == "MAIL FROM:<ä@x> SIZE=100 SMTPUTF8\r\n".encode()


def test_non_ascii_without_smtputf8_is_refused_never_mangled() -> None:
    mail, rcpts = build(Envelope("a@x", ("b@y", "jürgen@x")))
    assert mail == b"MAIL FROM:<a@x>\r\n"  # no SMTPUTF8: the ASCII recipient goes on
    refusal = rcpts[1]
    assert isinstance(refusal, Reply)
    assert (refusal.code, str(refusal.enhanced), refusal.command) == (553, "5.6.7", "RCPT")
    with pytest.raises(LocalRefusal) as refused:
        build(Envelope("jürgen@x", ("b@y",)))
    assert (refused.value.reply.code, str(refused.value.reply.enhanced)) == (553, "5.6.7")


def test_dsn_parameters_sent_only_when_announced() -> None:
    envelope = Envelope(
        "a@x",
        ("b@y", "c@y"),
        ret="HDRS",
        envid="job+42=x y",
        notify=("success", "FAILURE"),
        orcpt=("rfc822;b@y", None),
    )
    mail, rcpts = build(envelope, Capabilities(esmtp=True, dsn=True))
    assert mail == b"MAIL FROM:<a@x> RET=HDRS ENVID=job+2B42+3Dx+20y\r\n"
    assert rcpts == [
        b"RCPT TO:<b@y> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@y\r\n",
        b"RCPT TO:<c@y> NOTIFY=SUCCESS,FAILURE\r\n",
    ]
    mail, rcpts = build(envelope, ESMTP)
    assert mail == b"MAIL FROM:<a@x>\r\n"
    assert rcpts == [b"RCPT TO:<b@y>\r\n", b"RCPT TO:<c@y>\r\n"]


def test_orcpt_without_type_is_rfc822_and_xtext_encoded() -> None:
    envelope = Envelope("a@x", ("b@y",), orcpt=("Some+One=@y",))
    assert build(envelope, Capabilities(esmtp=True, dsn=True))[1] == [
        b"RCPT TO:<b@y> ORCPT=rfc822;Some+2BOne+3D@y\r\n"
    ]


@pytest.mark.parametrize(
    "envelope",
    [
        Envelope("a@x", ("b@y",), ret="ALL"),  # type: ignore[arg-type]
        Envelope("a@x", ("b@y",), envid="bad\r\nRCPT TO:<v@z>"),
        Envelope("a@x", ("b@y",), envid="x" * 101),
        Envelope("a@x", ("b@y",), notify=("NEVER", "SUCCESS")),
        Envelope("a@x", ("b@y",), notify=("SOMETIMES",)),
        Envelope("a@x", ("b@y",), notify=()),
        Envelope("a@x", ("b@y",), orcpt=("x", "y")),
    ],
)
def test_bad_dsn_parameters_are_refused_even_when_dsn_is_not_announced(envelope: Envelope) -> None:
    with pytest.raises(LocalRefusal) as refused:
        build(envelope)
    assert (refused.value.reply.code, str(refused.value.reply.enhanced)) == (501, "5.5.4")


def test_bad_orcpt_refuses_that_recipient_only() -> None:
    envelope = Envelope("a@x", ("b@y", "c@y"), orcpt=("rfc822;b@y\r\nDATA", "rfc822;c@y"))
    rcpts = build(envelope, Capabilities(esmtp=True, dsn=True))[1]
    assert isinstance(rcpts[0], Reply) and rcpts[0].code == 501
    assert rcpts[1] == b"RCPT TO:<c@y> ORCPT=rfc822;c@y\r\n"


@pytest.mark.parametrize("bad", BAD)
def test_injection_in_the_sender_is_refused(bad: str) -> None:
    for position in (0, 1, 3):
        address = "a@x"[:position] + bad + "a@x"[position:]
        with pytest.raises(LocalRefusal) as refused:
            build(Envelope(address, ("b@y",)))
        assert (refused.value.reply.code, str(refused.value.reply.enhanced)) == (553, "5.1.7")


@pytest.mark.parametrize("bad", BAD)
def test_injection_in_a_recipient_refuses_that_recipient(bad: str) -> None:
    mail, rcpts = build(Envelope("a@x", ("ok@y", f"v{bad}@y")))
    assert rcpts[0] == b"RCPT TO:<ok@y>\r\n"
    assert isinstance(rcpts[1], Reply)
    assert (rcpts[1].code, str(rcpts[1].enhanced), rcpts[1].command) == (553, "5.1.3", "RCPT")


def test_empty_recipient_is_refused() -> None:
    assert isinstance(build(Envelope("a@x", ("",)))[1][0], Reply)


@given(st.text(alphabet=st.sampled_from("ab@.\r\n\x00\x7f<>\t é"), max_size=12))
def test_no_generated_address_ever_puts_a_control_on_the_wire(address: str) -> None:
    try:
        mail, rcpts = build(Envelope(address, (address, "ok@y")), ALL)
    except LocalRefusal:
        return
    for line in [mail, *(r for r in rcpts if isinstance(r, bytes))]:
        body = line[:-2]
        assert line.endswith(b"\r\n")
        assert not any(c < 32 or c == 127 for c in body)
        assert body.count(b"<") == 1 and body.count(b">") == 1


@pytest.mark.parametrize("name", ["", "a b", "bad\r\nMAIL", "ünï", "x>"])
def test_bad_helo_name_is_a_local_error(name: str) -> None:
    with pytest.raises(LocalProtocolError):
        commands.hello("EHLO", name)


def test_hello() -> None:
    assert commands.hello("EHLO", "mta.example") == b"EHLO mta.example\r\n"


def test_xtext() -> None:
    assert commands.xtext("a+b=c d\x7f~!") == "a+2Bb+3Dc+20d+7F~!"


ADDRESS = st.text(alphabet=st.sampled_from("ab@.-+_~!é\x7f\x01<> "), max_size=10)
CAPS = st.sampled_from([HELO_CAPABILITIES, ESMTP, ALL, Capabilities(esmtp=True, size=64, eightbitmime=True)])


@given(ADDRESS, st.lists(ADDRESS, min_size=1, max_size=3), CAPS, st.integers(0, 100), st.booleans())
def test_the_usual_envelope_path_writes_exactly_what_the_general_path_does(
    sender: str, recipients: list[str], caps: Capabilities, size: int, eight_bit: bool
) -> None:
    envelope = Envelope(sender, tuple(recipients))
    try:
        expected: object = commands.envelope_commands(envelope, caps, size, eight_bit)
    except LocalRefusal as refusal:
        expected = refusal.reply
    try:
        fast: object = commands._plain_envelope(envelope, caps, size, eight_bit)
    except LocalRefusal as refusal:
        fast = refusal.reply
    usual = all(plain_ascii(a) for a in (sender, *recipients)) and all(recipients)
    if usual:
        assert fast == expected
    else:  # a control, a bracket, non-ASCII or an empty recipient: the general path decides
        assert fast is None


def plain_ascii(address: str) -> bool:
    return all(32 <= ord(c) < 127 and c not in "<>" for c in address)


def test_the_usual_envelope_path_is_not_taken_with_dsn_parameters() -> None:
    envelope = Envelope("a@x", ("b@y",), notify=("NEVER",))
    assert commands._plain_envelope(envelope, ALL, 10, False) is None
    assert build(envelope, ALL)[1] == [b"RCPT TO:<b@y> NOTIFY=NEVER\r\n"]
