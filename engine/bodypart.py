"""One text/plain or text/html body part, compiled once per job into byte pieces.

The fast path (ASCII values without controls, every line at most 998 octets) is a list copy,
one ``encode`` per placeholder and one ``b"".join``: the part is sent as ``7bit``. Anything
else (non-ASCII text, long lines, line breaks or controls inside a value, the multipart
boundary appearing in the text) takes the slow path: join as str, make line breaks CRLF,
encode UTF-8, then ``7bit`` when that is still valid, or quoted-printable through
``binascii.b2a_qp`` (C), which also keeps every line under 76 octets.

Line lengths on the fast path are checked without scanning the output: at compile time each
line that holds placeholders is reduced to (literal octets on that line, its slots); at
render time the values' lengths are added. A cheap upper bound (all values on the longest
such line) usually settles it in one comparison.
"""

from __future__ import annotations

import binascii
import html
import re
from collections.abc import Callable

from engine.template import split_template

__all__ = ["BodyPart", "SEVEN_BIT", "QUOTED_PRINTABLE", "crlf"]

MAX_LINE = 998
SEVEN_BIT = b"7bit"
QUOTED_PRINTABLE = b"quoted-printable"

_UNSAFE = re.compile(r"[^\t\x20-\x7e]")  # anything that may not go into a 7bit line as is
_HTML_SPECIAL = re.compile(r"[&<>\"']")
_LONG_LINE = re.compile(rb"[^\r\n]{%d}" % (MAX_LINE + 1))

Lookup = Callable[[str, str], str]


def crlf(text: str) -> str:
    """Every CRLF, lone CR and lone LF becomes CRLF (RELIABILITY.md 3.1)."""
    if "\r" in text or "\n" in text:
        return text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n")
    return text


class BodyPart:
    """``render(lookup) -> (transfer encoding, body bytes ending in CRLF)``."""

    __slots__ = ("literals", "names", "escape", "any_escape", "pieces", "groups", "max_group", "fast", "boundary", "fixed")

    def __init__(self, text: str, *, is_html: bool, boundary: bytes | None) -> None:
        template = split_template(text)
        literals = [crlf(literal) for literal in template.literals]
        if not literals[-1].endswith("\r\n"):
            literals[-1] += "\r\n"
        self.literals = tuple(literals)
        self.names = template.names
        self.escape = tuple(is_html and not raw for raw in template.raw)
        self.any_escape = any(self.escape)
        self.boundary = boundary
        self.pieces: list[bytes] = []
        for i, literal in enumerate(literals):
            self.pieces.append(literal.encode("utf-8", "replace"))
            if i < len(self.names):
                self.pieces.append(b"")
        self.groups = _line_groups(literals)
        self.max_group = max((size for size, _ in self.groups), default=0)
        joined = "".join(literals)
        self.fast = (
            not _UNSAFE.search(joined.replace("\r\n", ""))
            and max(map(len, joined.split("\r\n"))) <= MAX_LINE
            and (boundary is None or boundary.decode() not in joined)
        )
        self.fixed: tuple[bytes, bytes] | None = None
        if not self.names:
            self.fixed = self.render(lambda name, default: default)

    def render(self, lookup: Lookup) -> tuple[bytes, bytes]:
        if self.fixed is not None:
            return self.fixed
        if self.any_escape:
            values = []
            for name, escape in zip(self.names, self.escape, strict=True):
                value = lookup(name, "")
                if escape and _HTML_SPECIAL.search(value):
                    value = html.escape(value)
                values.append(value)
        else:
            values = [lookup(name, "") for name in self.names]
        if self.fast:
            joined = "".join(values)
            if _UNSAFE.search(joined) is None and (
                len(joined) + self.max_group <= MAX_LINE or self._lines_fit(values)
            ):
                pieces = self.pieces.copy()
                for i, value in enumerate(values, 1):
                    pieces[2 * i - 1] = value.encode("ascii")
                body = b"".join(pieces)
                if self.boundary is None or self.boundary not in body:
                    return SEVEN_BIT, body
        return self._render_slow(values)

    def _lines_fit(self, values: list[str]) -> bool:
        return all(size + sum(len(values[i]) for i in slots) <= MAX_LINE for size, slots in self.groups)

    def _render_slow(self, values: list[str]) -> tuple[bytes, bytes]:
        parts = [self.literals[0]]
        for value, literal in zip(values, self.literals[1:], strict=True):
            parts.append(crlf(value))
            parts.append(literal)
        data = "".join(parts).encode("utf-8", "replace")
        if (
            data.isascii()
            and b"\x00" not in data
            and not _LONG_LINE.search(data)
            and (self.boundary is None or self.boundary not in data)
        ):
            return SEVEN_BIT, data
        return QUOTED_PRINTABLE, binascii.b2a_qp(data, istext=True)


def _line_groups(literals: list[str]) -> tuple[tuple[int, tuple[int, ...]], ...]:
    """For each output line holding placeholders: (its literal length, its slot indexes)."""
    groups: list[tuple[int, tuple[int, ...]]] = []
    size = 0
    slots: list[int] = []
    for i, literal in enumerate(literals):
        lines = literal.split("\r\n")
        size += len(lines[0].encode("utf-8", "replace"))
        if len(lines) > 1:
            if slots:
                groups.append((size, tuple(slots)))
            size, slots = len(lines[-1].encode("utf-8", "replace")), []
        if i < len(literals) - 1:
            slots.append(i)
    if slots:
        groups.append((size, tuple(slots)))
    return tuple(groups)
