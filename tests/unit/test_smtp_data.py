"""Message -> DATA bytes: canonical CRLF, dot-stuffing, the one end of data, smuggling sequences."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.smtp import data
from engine.smtp.replies import LocalRefusal

# hannob/smtpsmug's list (RELIABILITY.md 3.1); the NUL ones are refused, the others made canonical
SMUGGLING = [b"\n.\n", b"\r.\r", b"\r.\n", b"\n.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\r\n.\r"]
SMUGGLING_NUL = [b"\r\n\x00.\r\n", b"\r\n.\x00\r\n"]
SMUGGLED = b"MAIL FROM:<evil@x>\r\nRCPT TO:<victim@y>\r\nDATA\r\nspoofed\r\n"


def wire(message: bytes) -> bytes:
    return b"".join(data.encode(message)[0])


def unstuff(stream: bytes) -> bytes:
    """What a receiver (RFC 5321 4.5.2) reconstructs from the bytes after 354."""
    assert stream.endswith(b".\r\n")
    lines = stream[:-3].split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


def canonical(message: bytes) -> bytes:
    body = re.sub(rb"\r\n|\r|\n", b"\r\n", message)
    return body if not body or body.endswith(b"\r\n") else body + b"\r\n"


def test_fast_path_does_not_copy_the_message() -> None:
    message = b"Subject: hi\r\n\r\nbody line\r\n"
    chunks, size = data.encode(message)
    assert chunks[0] is message
    assert chunks[1] == b".\r\n"
    assert size == len(message)


def test_fast_path_adds_the_missing_final_crlf_in_the_terminator() -> None:
    message = b"Subject: hi\r\n\r\nno final line end"
    chunks, size = data.encode(message)
    assert chunks == [message, b"\r\n.\r\n"]
    assert size == len(message) + 2


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (b"", b".\r\n"),
        (b"a\r\n", b"a\r\n.\r\n"),
        (b"a\nb\n", b"a\r\nb\r\n.\r\n"),
        (b"a\rb\r", b"a\r\nb\r\n.\r\n"),
        (b"a\r\r\nb", b"a\r\n\r\nb\r\n.\r\n"),
        (b"a\n\rb", b"a\r\n\r\nb\r\n.\r\n"),
        (b".", b"..\r\n.\r\n"),
        (b".\r\n", b"..\r\n.\r\n"),
        (b"..\r\n", b"...\r\n.\r\n"),
        (b".foo\r\n. \r\nx\r\n.", b"..foo\r\n.. \r\nx\r\n..\r\n.\r\n"),
        (b"a\n.\nb", b"a\r\n..\r\nb\r\n.\r\n"),
        (b"\n", b"\r\n.\r\n"),
        (b"\r", b"\r\n.\r\n"),
        (b"\r\n.\r\n", b"\r\n..\r\n.\r\n"),
    ],
)
def test_canonical_bytes(message: bytes, expected: bytes) -> None:
    assert wire(message) == expected
    assert unstuff(expected) == canonical(message)


@pytest.mark.parametrize("sequence", SMUGGLING)
@pytest.mark.parametrize("where", ["middle", "start", "end"])
def test_smuggling_sequences_come_out_canonical(sequence: bytes, where: str) -> None:
    body = {"middle": b"Subject: x\r\n\r\nhello" + sequence + SMUGGLED, "start": sequence + SMUGGLED}.get(
        where, b"Subject: x\r\n\r\nhello" + sequence
    )
    out = wire(body)
    assert_canonical(out)
    assert unstuff(out) == canonical(body)


@pytest.mark.parametrize("sequence", SMUGGLING_NUL)
def test_smuggling_sequences_with_nul_are_refused(sequence: bytes) -> None:
    with pytest.raises(LocalRefusal) as refused:
        data.encode(b"Subject: x\r\n\r\nhello" + sequence + SMUGGLED)
    reply = refused.value.reply
    assert (reply.code, str(reply.enhanced), reply.local, reply.command) == (554, "5.6.0", True, "DATA")


@pytest.mark.parametrize(
    ("line", "ok"),
    [(998, True), (999, False), (1000, False), (10_000, False)],
)
@pytest.mark.parametrize("ending", [b"\r\n", b"\n", b"\r"])
def test_line_length_limit(line: int, ok: bool, ending: bytes) -> None:
    message = b"Subject: x" + ending + ending + b"y" * line + ending + b"last" + ending
    if ok:
        assert unstuff(wire(message)) == canonical(message)
    else:
        with pytest.raises(LocalRefusal, match="998"):
            data.encode(message)


def test_a_long_line_that_needs_stuffing_is_still_refused() -> None:
    with pytest.raises(LocalRefusal):
        data.encode(b"." + b"z" * 998 + b"\r\n")


def assert_canonical(out: bytes) -> None:
    assert re.search(rb"\r(?!\n)", out) is None, "bare CR"
    assert re.search(rb"(?<!\r)\n", out) is None, "bare LF"
    assert out.endswith(b"\r\n.\r\n") or out == b".\r\n"
    assert (b"\r\n" + out).count(b"\r\n.\r\n") == 1, "exactly one end of data"


@given(st.binary(max_size=3000).map(lambda b: b.replace(b"\x00", b"")))
def test_arbitrary_bodies_encode_canonically_and_round_trip(body: bytes) -> None:
    try:
        chunks, size = data.encode(body)
    except LocalRefusal:
        assert max(map(len, canonical(body).split(b"\r\n"))) > data.MAX_LINE
        return
    out = b"".join(chunks)
    assert_canonical(out)
    assert unstuff(out) == canonical(body)
    assert size == len(canonical(body))


@given(st.lists(st.sampled_from([b"\r", b"\n", b".", b"x", b"\r\n", b"\x00"]), max_size=40))
def test_line_ending_and_dot_soup(parts: list[bytes]) -> None:
    body = b"".join(parts)
    if b"\x00" in body:
        with pytest.raises(LocalRefusal):
            data.encode(body)
        return
    out = wire(body)
    assert_canonical(out)
    assert unstuff(out) == canonical(body)


def test_a_long_last_line_without_a_line_end_is_refused() -> None:
    # the last line has no CRLF of its own; it counts all the same (the terminator adds one)
    with pytest.raises(LocalRefusal, match="998"):
        data.encode(b"Subject: x\r\n\r\n" + b"y" * 999)
    assert unstuff(wire(b"Subject: x\r\n\r\n" + b"y" * 998)) == canonical(b"Subject: x\r\n\r\n" + b"y" * 998)


LONG_LINE_PARTS = st.one_of(
    st.sampled_from([b"\r\n", b"\n", b"\r", b".", b"\r\n."]),
    st.integers(990, 1002).map(lambda n: b"y" * n),
    st.integers(0, 120).map(lambda n: b"z" * n),
)


@given(st.lists(LONG_LINE_PARTS, max_size=8))
def test_long_lines_are_found_whatever_the_line_ends(parts: list[bytes]) -> None:
    """The windowed search agrees with a length per canonical line, around 998 octets."""
    body = b"".join(parts)
    longest = max(map(len, re.split(rb"\r\n|\r|\n", body)))
    if longest > data.MAX_LINE:
        with pytest.raises(LocalRefusal, match="998"):
            data.encode(body)
    else:
        out = wire(body)
        assert_canonical(out)
        assert unstuff(out) == canonical(body)


def test_encoder_remembers_the_last_message_object() -> None:
    encoder = data.Encoder()
    message = b"Subject: hi\r\n\r\n.dotted\r\n"
    first = encoder.encode(message)
    assert encoder.encode(message) is first  # the same object: not scanned again
    copy = bytes(bytearray(message))
    assert copy is not message and encoder.encode(copy) == first
    assert first == data.encode(message)


def test_encoder_never_remembers_a_mutable_message() -> None:
    encoder = data.Encoder()
    message = bytearray(b"hello\r\n")
    assert b"".join(encoder.encode(message)[0]) == b"hello\r\n.\r\n"  # type: ignore[arg-type]
    message[0:1] = b"."
    assert b"".join(encoder.encode(message)[0]) == b"..ello\r\n.\r\n"  # type: ignore[arg-type]
    message[1:2] = b"\x00"
    with pytest.raises(LocalRefusal):
        encoder.encode(message)  # type: ignore[arg-type]


CANONICAL_LINES = st.lists(
    st.one_of(
        st.binary(max_size=120).map(lambda b: re.sub(rb"[\r\n\x00]", b"", b)),
        st.sampled_from([b".", b"..", b".x", b"", b"y" * 998]),
    ),
    min_size=1,
    max_size=30,
)


@given(CANONICAL_LINES)
def test_a_message_vouched_canonical_encodes_as_if_it_had_been_checked(lines: list[bytes]) -> None:
    message = b"\r\n".join(lines) + b"\r\n"
    assert data.encode(message, canonical=True) == data.encode(message)
    assert data.Encoder().encode(message, True) == data.encode(message)


@pytest.mark.parametrize("message", [b"no final line end", b"a\nb", b".", b""])
def test_a_vouched_message_without_its_final_crlf_gets_every_check(message: bytes) -> None:
    assert data.encode(message, canonical=True) == data.encode(message)


@pytest.mark.parametrize("sequence", SMUGGLING_NUL)
def test_nul_is_refused_even_in_a_vouched_message(sequence: bytes) -> None:
    with pytest.raises(LocalRefusal, match="NUL"):
        data.encode(b"Subject: x\r\n\r\n" + sequence, canonical=True)
