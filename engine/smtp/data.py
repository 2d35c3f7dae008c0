"""A message -> the bytes sent after DATA's 354 (RFC 5321 sections 2.3.8, 4.5.2, 4.5.3.1.6).

What comes out is always safe to put on the wire:

* every lone CR and every lone LF becomes CRLF (RFC 5321 2.3.8: CR and LF are
  sent only as CRLF), *before* dot-stuffing, so none of the SMTP smuggling
  sequences (RELIABILITY.md 3.1: ``\\n.\\n``, ``\\r.\\r``, ``\\r.\\n``...) survive;
* every line that starts with "." gets one more;
* the end of data is exactly CRLF "." CRLF (a CRLF is added when the message
  does not end with one), so the only ``\\r\\n.\\r\\n`` is the last five octets.

Refused with a local reply (``LocalRefusal``, command "DATA", 554 5.6.0, the
RFC 3463 "other media error"), never repaired: a NUL anywhere (it can hide an
end of data from some receivers, RELIABILITY.md 3.1), and a line longer than
998 octets (RFC 5322 2.1.1). Folding a raw line like Postfix does would change
a message someone may have signed; the renderer should encode such parts.

Fast path: a message already in canonical form with no line starting with "."
is not copied: the chunks are ``[message, terminator]`` for
``transport.writelines``.
"""

from __future__ import annotations

import re

from engine.smtp.replies import LocalRefusal

MAX_LINE = 998  # octets, not counting CRLF
_DOT_CRLF = b".\r\n"
_CRLF_DOT_CRLF = b"\r\n.\r\n"
_DOT_LINE = re.compile(rb"\n\.")  # sre's literal-prefix scan beats bytes.find for this needle


def encode(message: bytes) -> tuple[list[bytes], int]:
    """Return (chunks to write, RFC 1870 size: canonical octets without stuffing or terminator)."""
    if b"\x00" in message:
        raise LocalRefusal(554, "5.6.0", "message contains a NUL octet", "DATA")
    lines = message.split(b"\n")
    breaks = len(lines) - 1
    if message.count(b"\r\n") == breaks and message.count(b"\r") == breaks:
        _check_lines(lines, 1)
        if message[:1] != b"." and _DOT_LINE.search(message) is None:
            if not message or message[-2:] == b"\r\n":
                return [message, _DOT_CRLF], len(message)
            return [message, _CRLF_DOT_CRLF], len(message) + 2
        body = message
    else:
        # \r\n -> \n, then the lone \r -> \n, then every \n -> \r\n: the same
        # pairing as the regex \r\n|\r|\n, in three C-speed passes
        body = message.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
        _check_lines(body.split(b"\r\n"), 0)
    size = len(body)
    terminator = _DOT_CRLF
    if body and body[-2:] != b"\r\n":
        terminator = _CRLF_DOT_CRLF
        size += 2
    if body[:1] == b".":
        body = b"." + body
    return [body.replace(b"\r\n.", b"\r\n.."), terminator], size


def _check_lines(lines: list[bytes], cr: int) -> None:
    """``cr`` is 1 when the lines still end in CR (split on LF only)."""
    if max(map(len, lines)) > MAX_LINE + cr and any(
        len(line) - (cr if line[-1:] == b"\r" else 0) > MAX_LINE for line in lines
    ):
        raise LocalRefusal(
            554, "5.6.0", f"message has a line longer than {MAX_LINE} octets", "DATA"
        )
