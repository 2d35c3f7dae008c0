"""ReplyParser: every fixture fed whole, one byte at a time, and with trailing data (h11 style)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.config import SmtpLimits
from engine.errors import RemoteProtocolError
from engine.smtp.replies import EnhancedCode, Reply, ReplyParser, new_reply, split_enhanced

E = EnhancedCode

# (wire bytes, [(code, lines, enhanced), ...])
FIXTURES: list[tuple[bytes, list[tuple[int, tuple[str, ...], EnhancedCode | None]]]] = [
    (b"250 2.0.0 Ok\r\n", [(250, ("Ok",), E(2, 0, 0))]),
    (b"220 mx.example ESMTP Postfix\r\n", [(220, ("mx.example ESMTP Postfix",), None)]),
    (
        b"250-mx.example\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250 8BITMIME\r\n",
        [(250, ("mx.example", "PIPELINING", "SIZE 10240000", "8BITMIME"), None)],
    ),
    (b"250 ok\n", [(250, ("ok",), None)]),  # bare LF
    (b"250-a\n250 b\r\n", [(250, ("a", "b"), None)]),
    ("550 5.1.1 Benutzer unbekannt ä\r\n".encode(), [(550, ("Benutzer unbekannt ä",), E(5, 1, 1))]),
    (b"550 \xff\xfe\r\n", [(550, ("\ufffd\ufffd",), None)]),  # not UTF-8: replaced, never an error
    (b"250\r\n", [(250, ("",), None)]),  # code alone
    (b"250 5.0.0 weird\r\n", [(250, ("5.0.0 weird",), None)]),  # class does not match the code
    (b"220 1.2.3.4 ESMTP\r\n", [(220, ("1.2.3.4 ESMTP",), None)]),  # an address, not a code
    (b"250 2.1.5\r\n", [(250, ("",), E(2, 1, 5))]),
    (b"250 2.1.5Ok\r\n", [(250, ("2.1.5Ok",), None)]),  # no space after: not clearly a code
    (
        b"550-5.7.1 first\r\n550-5.7.1 second\r\n550 5.7.1 third\r\n",
        [(550, ("first", "second", "third"), E(5, 7, 1))],
    ),
    (b"421 4.7.0 try later\r\n", [(421, ("try later",), E(4, 7, 0))]),
    (
        b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n",
        [
            (250, ("Ok",), E(2, 1, 0)),
            (250, ("Ok",), E(2, 1, 5)),
            (354, ("End data with <CR><LF>.<CR><LF>",), None),
        ],
    ),
]


def parse_all(parser: ReplyParser) -> list[Reply]:
    replies = []
    while (reply := parser.next_reply("MAIL")) is not None:
        replies.append(reply)
    return replies


def as_tuples(replies: list[Reply]) -> list[tuple[int, tuple[str, ...], EnhancedCode | None]]:
    return [(r.code, r.lines, r.enhanced) for r in replies]


@pytest.mark.parametrize(("wire", "expected"), FIXTURES)
def test_whole(wire: bytes, expected: list) -> None:
    parser = ReplyParser(SmtpLimits())
    parser.feed(wire)
    assert as_tuples(parse_all(parser)) == expected
    assert parser.buffered == 0


@pytest.mark.parametrize(("wire", "expected"), FIXTURES)
def test_byte_by_byte(wire: bytes, expected: list) -> None:
    parser = ReplyParser(SmtpLimits())
    replies = []
    for i in range(len(wire)):
        parser.feed(wire[i : i + 1])
        replies.extend(parse_all(parser))
    assert as_tuples(replies) == expected


@pytest.mark.parametrize(("wire", "expected"), FIXTURES)
def test_with_trailing_data(wire: bytes, expected: list) -> None:
    parser = ReplyParser(SmtpLimits())
    parser.feed(wire + b"250-partial\r\n250 still")
    assert as_tuples(parse_all(parser)) == expected
    assert parser.buffered == len(b"250-partial\r\n250 still")
    parser.feed(b" coming\r\n")
    assert as_tuples(parse_all(parser)) == [(250, ("partial", "still coming"), None)]


def test_reply_names_the_command_and_identical_lines_share_one_value() -> None:
    parser = ReplyParser(SmtpLimits())
    parser.feed(b"250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n250 2.0.0 Ok\r\n")
    first, second, third = parser.next_reply("MAIL"), parser.next_reply("MAIL"), parser.next_reply("RCPT")
    assert first is second
    assert first is not None and first.command == "MAIL"
    assert third is not None and third.command == "RCPT" and third.code == 250


@pytest.mark.parametrize(
    "wire",
    [
        b"abc\r\n",
        b"25\r\n",
        b"250x\r\n",
        b"2500 ok\r\n",
        b"650 six\r\n",
        b"150 one\r\n",
        b"\r\n",
        b"250-a\r\n251 b\r\n",  # the code changes inside a multi-line reply
        b" 250 ok\r\n",
    ],
)
def test_garbage_is_a_remote_protocol_error(wire: bytes) -> None:
    parser = ReplyParser(SmtpLimits())
    parser.feed(wire)
    with pytest.raises(RemoteProtocolError):
        parse_all(parser)


def test_line_length_is_bounded_even_without_a_line_end() -> None:
    parser = ReplyParser(SmtpLimits(max_reply_line=16))
    parser.feed(b"250 " + b"x" * 12 + b"\r\n")  # exactly 16 octets: fine
    assert parse_all(parser)[0].lines == ("x" * 12,)
    parser.feed(b"250 " + b"x" * 20)
    with pytest.raises(RemoteProtocolError, match="longer than 16"):
        parse_all(parser)


def test_lines_per_reply_and_reply_size_are_bounded() -> None:
    parser = ReplyParser(SmtpLimits(max_reply_lines=3))
    parser.feed(b"250-a\r\n" * 4)
    with pytest.raises(RemoteProtocolError):
        parse_all(parser)
    parser = ReplyParser(SmtpLimits(max_reply_bytes=40))
    parser.feed(b"250-aaaaaaaaaa\r\n" * 3)
    with pytest.raises(RemoteProtocolError):
        parse_all(parser)


def test_endless_continuation_keeps_memory_bounded() -> None:
    limits = SmtpLimits(max_reply_line=64, max_reply_lines=1000, max_reply_bytes=4096)
    parser = ReplyParser(limits)
    with pytest.raises(RemoteProtocolError):
        for _ in range(10_000):
            parser.feed(b"250-" + b"y" * 40 + b"\r\n")
            parse_all(parser)
            assert parser.buffered <= limits.max_reply_bytes + limits.max_reply_line


@pytest.mark.parametrize(
    ("code", "text", "enhanced", "rest"),
    [
        (250, "2.0.0 Ok", E(2, 0, 0), "Ok"),
        (550, "5.1.10 null MX", E(5, 1, 10), "null MX"),
        (450, "4.7.1   spaces", E(4, 7, 1), "spaces"),
        (550, "4.7.1 wrong class", None, "4.7.1 wrong class"),
        (250, "2.0 short", None, "2.0 short"),
        (250, "2.0.0000 long", None, "2.0.0000 long"),
        (250, "", None, ""),
    ],
)
def test_split_enhanced(code: int, text: str, enhanced: EnhancedCode | None, rest: str) -> None:
    assert split_enhanced(code, text) == (enhanced, rest)


@given(st.lists(st.binary(max_size=40), max_size=20))
def test_arbitrary_bytes_give_replies_or_remote_protocol_error(chunks: list[bytes]) -> None:
    limits = SmtpLimits(max_reply_line=32, max_reply_lines=4, max_reply_bytes=100)
    parser = ReplyParser(limits)
    try:
        for chunk in chunks:
            parser.feed(chunk)
            for reply in parse_all(parser):
                assert 200 <= reply.code <= 599
            assert parser.buffered <= limits.max_reply_bytes + limits.max_reply_line + 2
    except RemoteProtocolError:
        pass


@given(st.lists(st.sampled_from([f[0] for f in FIXTURES]), min_size=1, max_size=6), st.data())
def test_any_split_gives_the_same_replies(wires: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(wires)
    whole = ReplyParser(SmtpLimits())
    whole.feed(stream)
    expected = as_tuples(parse_all(whole))
    cuts = sorted(data.draw(st.sets(st.integers(0, len(stream)), max_size=8)))
    parser = ReplyParser(SmtpLimits())
    got = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        parser.feed(stream[start:end])
        got.extend(as_tuples(parse_all(parser)))
    assert got == expected


def test_unique_replies_do_not_push_the_common_ones_out_of_the_cache() -> None:
    parser = ReplyParser(SmtpLimits())
    parser.feed(b"250 2.0.0 Ok\r\n")
    common = parser.next_reply(".")
    for n in range(500):  # "queued as" ids: every one different
        parser.feed(b"250 2.0.0 Ok: queued as 4Q%05X\r\n250 2.0.0 Ok\r\n" % n)
        unique, again = parser.next_reply("."), parser.next_reply(".")
        assert unique is not None and unique.text == f"Ok: queued as 4Q{n:05X}"
        assert again is common
    assert parser.buffered == 0


def test_a_chunk_fed_as_a_bytearray_is_not_read_after_it_changes() -> None:
    parser = ReplyParser(SmtpLimits())
    chunk = bytearray(b"250 Ok\r\n")
    parser.feed(chunk)  # type: ignore[arg-type]
    chunk[0:3] = b"550"
    reply = parser.next_reply("MAIL")
    assert reply is not None and reply.code == 250


def test_new_reply_is_the_same_value_as_the_constructor() -> None:
    built = new_reply(550, ("no",), E(5, 1, 1), "RCPT")
    assert built == Reply(550, ("no",), E(5, 1, 1), "RCPT")
    assert hash(built) == hash(Reply(550, ("no",), E(5, 1, 1), "RCPT")) and not built.local
