"""engine.bodypart: the fast and slow paths agree with a plain whole-text encoding."""

from __future__ import annotations

import binascii

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.bodypart import QUOTED_PRINTABLE, SEVEN_BIT, BodyPart, crlf
from engine.message import BOUNDARY

pieces = st.sampled_from(["a", " ", "\t", ".", "=", "é", "😀", "\n", "\r", "\r\n", "x" * 120, "From ", "{{v}}", "{{w}}"])
values = st.lists(
    st.sampled_from(["b", " ", "\n", "\r", "ü", "=", ".", "\x00", "y" * 500, "--" + BOUNDARY.decode()]), max_size=8
).map("".join)


def expected_text(template: str, v: str, w: str) -> str:
    """Each template literal and each value gets its line breaks made CRLF on its own."""
    out = []
    for i, literal in enumerate(template.split("{{")):
        if i:
            name, literal = literal[0], literal[3:]
            out.append(crlf(v if name == "v" else w))
        out.append(crlf(literal))
    text = "".join(out)
    return text if crlf(template).endswith("\r\n") else text + "\r\n"


@settings(max_examples=300, deadline=None)
@given(st.lists(pieces, max_size=25).map("".join), values, values, st.booleans())
def test_render_matches_whole_text_encoding(template: str, v: str, w: str, multipart: bool) -> None:
    part = BodyPart(template, is_html=False, boundary=BOUNDARY if multipart else None)
    cte, body = part.render({"v": v, "w": w}.get)
    data = expected_text(template, v, w).encode("utf-8")
    if cte == SEVEN_BIT:
        assert body == data
        assert data.isascii() and b"\x00" not in data
        assert max(len(line) for line in data.split(b"\r\n")) <= 998
        assert not multipart or BOUNDARY not in data
    else:
        assert cte == QUOTED_PRINTABLE
        assert body == binascii.b2a_qp(data, istext=True)
        assert binascii.a2b_qp(body) == data
        # RFC 2045 says 76; binascii.b2a_qp can reach 77 when it encodes a space at the end of
        # a line right after a soft break. Receivers accept it; 998 is the hard limit.
        assert max(len(line) for line in body.split(b"\r\n")) <= 78


def test_static_part_is_rendered_once() -> None:
    part = BodyPart("no placeholders é\n", is_html=False, boundary=None)
    assert part.fixed is not None
    assert part.render({}.get) is part.fixed
