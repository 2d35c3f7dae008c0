"""Header fields: name/value checks at submit time and encoding to wire bytes at render time.

Why not ``email.header``/``email.policy``: they build objects and cost tens of microseconds
per header (PERFORMANCE.md); a header here is usually one regex match and one ``encode``.

Encoding rules (RFC 5322, RFC 2047, RFC 6532):

* printable ASCII that fits in 998 octets is written as is (no folding at 78: that limit is
  a SHOULD and mail clients unfold anyway);
* unstructured fields (Subject, X-*, ...) with non-ASCII or control characters become
  RFC 2047 ``=?utf-8?b?...?=`` encoded-words of at most 75 characters, one per folded line;
  an over-long ASCII value is folded at its spaces, or encoded when it has none;
* address fields (To, Cc, Reply-To, Sender) are split into mailboxes at top-level commas,
  and only a non-ASCII display name is encoded (``"Jürgen" <j@x>``); a non-ASCII address
  itself stays UTF-8 (RFC 6532), which only SMTPUTF8 peers accept, as for the envelope.

CR, LF and NUL never reach the output: they are refused at submit time (``check_value``),
encoded inside encoded-words, or refused at render time in address fields.
"""

from __future__ import annotations

import base64
import re

from engine.errors import InputError

__all__ = [
    "ADDRESS_FIELDS",
    "check_name",
    "check_value",
    "encode_field",
    "encoded_words",
]

MAX_LINE = 998
FOLD_AT = 78
ADDRESS_FIELDS = frozenset({"to", "cc", "reply-to", "sender"})

_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 ftext: printable ASCII except ":"
_PRINTABLE = re.compile(r"[\t\x20-\x7e]*")
_CR_LF_NUL = re.compile(r"[\r\n\x00]")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_ENCODED_LINE = 76  # RFC 2047 section 2: a line holding encoded-words
_WORD_BYTES = 45  # 45 octets -> 60 base64 characters -> a 72-character word on a 73-character line
_MAILBOX = re.compile(r"(\s*)(.*?)(\s*<[^<>]*>\s*)", re.S)


def check_name(name: str, field: str) -> None:
    if not _NAME.fullmatch(name):
        raise InputError("header names are printable ASCII without ':' or spaces", field=field)


def check_value(value: str, field: str) -> None:
    bad = _CR_LF_NUL.search(value)
    if bad is not None:
        raise InputError(f"contains {bad.group()!r}: CR, LF and NUL are not allowed in headers", field=field)


def encode_field(name: str, value: str) -> bytes:
    """The whole ``Name: value CRLF`` line(s), every line at most 998 octets."""
    if len(name) + 2 + len(value) <= MAX_LINE and _PRINTABLE.fullmatch(value) and "=?" not in value:
        return f"{name}: {value}\r\n".encode("ascii")
    if name.lower() in ADDRESS_FIELDS:
        return _encode_addresses(name, value)
    if _PRINTABLE.fullmatch(value) and "=?" not in value:  # "=?" would read as an encoded-word
        folded = _fold(f"{name}: {value}", " ")
        if folded is not None:
            return folded
    return f"{name}: {encoded_words(value, len(name) + 2)}\r\n".encode("ascii")


def encoded_words(text: str, used: int = 0) -> str:
    """RFC 2047 B-encoded words joined by CRLF SP, never splitting a UTF-8 sequence.

    Each line holding encoded-words stays within 76 characters (RFC 2047 section 2);
    ``used`` is what precedes the first word on its line (``"Subject: "``).
    """
    words: list[str] = []
    chunk: list[str] = []
    size = 0
    budget = _word_budget(used)
    for char in text:
        width = len(char.encode("utf-8", "replace"))
        if chunk and size + width > budget:
            # Split after a space when there is one: some decoders (Python's own, in display
            # names) wrongly add a space between adjacent encoded-words.
            cut = len(chunk) - chunk[::-1].index(" ") if " " in chunk[1:] else len(chunk)
            words.append(_word("".join(chunk[:cut])))
            chunk = chunk[cut:]
            size = len("".join(chunk).encode("utf-8", "replace"))
            budget = _WORD_BYTES
        chunk.append(char)
        size += width
    if chunk or not words:
        words.append(_word("".join(chunk)))
    return "\r\n ".join(words)


def _word_budget(used: int) -> int:
    """Octets of text whose encoded-word fits after ``used`` characters on a 76-character line."""
    return max(3 * ((_ENCODED_LINE - used - len("=?utf-8?b??=")) // 4), 3)


def _word(text: str) -> str:
    data = base64.b64encode(text.encode("utf-8", "replace")).decode("ascii")
    return f"=?utf-8?b?{data}?="


def _fold(line: str, separator: str) -> bytes | None:
    """Fold at ``separator`` boundaries (CRLF goes before the whitespace that follows it).

    Returns None when some piece is still longer than 998 octets.
    """
    if separator == " ":
        pieces = re.split(r"(?= )", line)
    else:
        pieces = [p + separator for p in line.split(separator)]
        pieces[-1] = pieces[-1][: -len(separator)]
    lines: list[str] = []
    current = ""
    for piece in pieces:
        if current.strip() and len(current) + len(piece) > FOLD_AT:
            lines.append(current)
            current = piece if piece[:1].isspace() else " " + piece
        else:
            current += piece
    lines.append(current)
    encoded = [line.encode("utf-8", "replace") for line in lines]
    if any(len(line) > MAX_LINE for line in encoded):
        return None
    return b"\r\n".join(encoded) + b"\r\n"


def _encode_addresses(name: str, value: str) -> bytes:
    bad = _CONTROL.search(value)
    if bad is not None:
        raise InputError(f"contains a control character {bad.group()!r}", field=f"headers.{name}")
    mailboxes = [_encode_mailbox(m) for m in _split_mailboxes(value)]
    line = f"{name}: " + ",".join(mailboxes)
    folded = _fold(line, ",")
    if folded is None:
        raise InputError("an address header line is longer than 998 octets", field=f"headers.{name}")
    return folded


def _encode_mailbox(mailbox: str) -> str:
    match = _MAILBOX.fullmatch(mailbox)
    if match is None:
        return mailbox  # a bare address: left as is (UTF-8 if it is an EAI address)
    lead, phrase, addr = match.groups()
    if phrase.isascii() or not phrase:
        return mailbox
    if len(phrase) >= 2 and phrase[0] == phrase[-1] == '"':
        phrase = re.sub(r"\\(.)", r"\1", phrase[1:-1])
    return f"{lead}{encoded_words(phrase, 1)}{addr}"


def _split_mailboxes(value: str) -> list[str]:
    """Split at commas that are outside quoted strings, angle brackets and comments."""
    parts: list[str] = []
    start = 0
    quoted = escaped = False
    angle = comment = 0
    for i, char in enumerate(value):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"' and not comment:
            quoted = not quoted
        elif quoted:
            continue
        elif char == "(":
            comment += 1
        elif char == ")" and comment:
            comment -= 1
        elif char == "<":
            angle += 1
        elif char == ">" and angle:
            angle -= 1
        elif char == "," and not angle and not comment:
            parts.append(value[start:i])
            start = i + 1
    parts.append(value[start:])
    return parts
