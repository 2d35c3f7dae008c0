"""Checks on a pre-built RFC 5322 message, made once at submit time.

A raw message is sent exactly as given (the SMTP client only makes line endings canonical
and dot-stuffs), so whatever would make it undeliverable or unsafe is refused here, with
the line number, instead of failing once per recipient later (RELIABILITY.md 3.3):

* it must start with a header section: header fields (``Name: value``) and their
  continuation lines up to the first empty line or the end;
* no line may be longer than 998 octets (RFC 5322 2.1.1): we do not fold someone else's
  message, which could break a signature or MIME structure;
* no NUL anywhere (RFC 5321 forbids it in DATA);
* no ``Bcc`` header: every recipient gets the same bytes, so it would disclose the list.

Lines are counted from 1, and CRLF, a lone CR and a lone LF each end a line, as they will
on the wire once the client makes them canonical.
"""

from __future__ import annotations

import re

from engine.errors import InputError

__all__ = ["check_raw_message", "MAX_LINE"]

MAX_LINE = 998

_LONG_LINE = re.compile(rb"[^\r\n]{%d}" % (MAX_LINE + 1))
_LINE = re.compile(rb"([^\r\n]*)(?:\r\n|\r|\n|\Z)")
_EOL = re.compile(rb"\r\n|\r|\n")
_FIELD = re.compile(rb"([!-9;-~]+)[ \t]*:")


def check_raw_message(message: bytes, field: str = "message") -> None:
    """Raise ``InputError(field=field)`` naming the first offending line."""
    if not message.strip():
        raise InputError("the message is empty", field=field)
    long_line = _LONG_LINE.search(message)
    if long_line is not None:
        length = len(_LINE.match(message, long_line.start()).group(1))  # type: ignore[union-attr]
        raise InputError(
            f"line {_line_number(message, long_line.start())} is {length} octets long "
            f"(at most {MAX_LINE}; encode the body as quoted-printable or base64)",
            field=field,
        )
    nul = message.find(b"\x00")
    if nul >= 0:
        raise InputError(f"line {_line_number(message, nul)} contains a NUL octet", field=field)
    _check_header_section(message, field)


def _check_header_section(message: bytes, field: str) -> None:
    for number, match in enumerate(_LINE.finditer(message), start=1):
        line = match.group(1)
        if not line:
            if number == 1:
                raise InputError("the message must start with its header fields", field=field)
            return
        if line[:1] in (b" ", b"\t"):
            if number == 1:
                raise InputError("line 1 is a continuation line, not a header field", field=field)
            continue
        header = _FIELD.match(line)
        if header is None:
            raise InputError(
                f"line {number} is not a header field (an empty line must separate the headers from the body)",
                field=field,
            )
        if header.group(1).lower() == b"bcc":
            raise InputError(f"line {number}: a Bcc header would be sent to every recipient", field=field)
        if match.end() >= len(message):
            return


def _line_number(message: bytes, pos: int) -> int:
    return len(_EOL.findall(message, 0, pos)) + 1
