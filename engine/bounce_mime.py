"""A bounded, forgiving view of a received message, for the bounce parsers.

Bounces are written by every kind of software, some of it broken: CRLF, bare LF
or bare CR line endings, undeclared or wrong charsets, truncated MIME, the
delivery-status part sent as text/plain. ``view_message`` never raises on such
input; it normalises line endings, cuts the input at ``ParseLimits.max_bytes``,
walks at most ``max_depth`` levels and ``max_parts`` parts, and decodes text
with the declared charset, then UTF-8, then Latin-1 (which cannot fail).

What comes out separates the parts the reporting system wrote (its human
readable text, its delivery-status or feedback-report fields) from the returned
original message, whose headers say what we sent (our trace header, To:).
"""

from __future__ import annotations

import base64
import binascii
import email
import html
import quopri
import re
from dataclasses import dataclass, field
from email.header import decode_header
from email.message import Message
from email.policy import compat32
from typing import Any

Fields = tuple[tuple[str, str], ...]

_STATUS_TYPES = frozenset(
    {"message/delivery-status", "message/global-delivery-status", "text/delivery-status"}
)
_HEADERS_TYPES = frozenset({"text/rfc822-headers", "message/rfc822-headers", "text/rfc822-header"})
_ORIGINAL_TYPES = frozenset({"message/rfc822", "message/global", "message/partial"})
_TAG = re.compile(r"<(?:br|p|div|tr|li|h\d)\b[^>]*>|<[^>]{0,2000}>", re.IGNORECASE)
_FIELD = re.compile(r"^([A-Za-z][A-Za-z0-9-]{0,60})[ \t]*:[ \t]*(.*)$")


@dataclass(frozen=True, slots=True)
class ParseLimits:
    max_bytes: int = 10 * 1024 * 1024
    max_depth: int = 8  # nested MIME levels walked
    max_parts: int = 200
    max_text: int = 256 * 1024  # characters of report text kept


@dataclass(slots=True)
class MailView:
    headers: Fields = ()
    texts: list[str] = field(default_factory=list)  # what the reporting system wrote
    status_groups: list[Fields] = field(default_factory=list)  # message/delivery-status
    feedback: Fields = ()  # message/feedback-report
    original: Fields = ()  # headers of the returned message
    original_text: str = ""  # start of the returned message's own text
    content_type: str = ""
    truncated: bool = False
    inner: Message | None = None  # the first returned message, in case it is itself the report

    def header(self, name: str) -> str:
        return first(self.headers, name)

    def original_header(self, name: str) -> str:
        return first(self.original, name)


def first(fields: Fields, name: str) -> str:
    """The value of the first field called ``name`` (any case), or ""."""
    name = name.lower()
    return next((value for key, value in fields if key == name), "")


def normalise(data: bytes, limits: ParseLimits) -> tuple[bytes, bool]:
    truncated = len(data) > limits.max_bytes
    data = data[: limits.max_bytes]
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return data, truncated


def decode_text(raw: bytes, charset: str | None) -> str:
    for candidate in (charset, "utf-8"):
        if not candidate:
            continue
        try:
            return raw.decode(candidate)
        except (LookupError, UnicodeError, ValueError):
            continue
    return raw.decode("latin-1")


def header_text(value: Any) -> str:
    """An RFC 2047-decoded, surrogate-free header value; never raises."""
    if not isinstance(value, str):
        value = str(value) if value is not None else ""
    value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if "=?" not in value:
        return " ".join(value.split())
    try:
        chunks = []
        for data, charset in decode_header(value):
            chunks.append(decode_text(data, charset) if isinstance(data, bytes) else data)
        return " ".join("".join(chunks).split())
    except Exception:  # noqa: BLE001 - a broken encoded-word leaves the raw text
        return " ".join(value.split())


def parse_fields(text: str) -> list[Fields]:
    """Header-like blocks separated by blank lines (delivery-status, feedback-report)."""
    groups: list[Fields] = []
    current: list[tuple[str, str]] = []
    for line in text.split("\n"):
        if not line.strip():
            if current:
                groups.append(tuple(current))
                current = []
            continue
        if line[:1] in (" ", "\t") and current:
            name, value = current[-1]
            current[-1] = (name, f"{value} {line.strip()}")
            continue
        m = _FIELD.match(line)
        if m:
            current.append((m.group(1).lower(), m.group(2).strip()))
    if current:
        groups.append(tuple(current))
    return groups


def html_to_text(markup: str) -> str:
    return html.unescape(_TAG.sub("\n", markup))


def _part_bytes(part: Message) -> bytes:
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        return payload
    raw = part.get_payload()
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogateescape")
    return b""


def _part_text(part: Message) -> str:
    text = decode_text(_part_bytes(part), part.get_content_charset())
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _headers(msg: Message) -> Fields:
    return tuple((str(k).lower(), header_text(v)) for k, v in msg.items())


def _status_groups(part: Message) -> list[Fields]:
    payload = part.get_payload()
    if isinstance(payload, list) and all(isinstance(p, Message) for p in payload):
        groups = [_headers(p) for p in payload if isinstance(p, Message)]
        encoding = str(part.get("content-transfer-encoding", "")).lower()
        if not any(g for g in groups) or encoding in ("base64", "quoted-printable"):
            return parse_fields(decode_text(_raw_of(part), "utf-8"))
        return [g for g in groups if g]
    return parse_fields(_part_text(part))


def _raw_of(part: Message) -> bytes:
    try:
        body = part.as_bytes().split(b"\n\n", 1)
    except Exception:  # noqa: BLE001 - a part that cannot be serialised is skipped
        return b""
    raw = body[1] if len(body) > 1 else b""
    encoding = str(part.get("content-transfer-encoding", "")).lower()
    if encoding == "base64":
        try:
            return base64.b64decode(raw, validate=False)
        except (binascii.Error, ValueError):
            return raw
    if encoding == "quoted-printable":
        return quopri.decodestring(raw)
    return raw


def _children(part: Message, ctype: str) -> list[Message]:
    subs = [p for p in part.get_payload() or [] if isinstance(p, Message)]
    if ctype == "multipart/alternative":
        plain = [p for p in subs if p.get_content_type() == "text/plain"]
        return plain[:1] or subs[:1]
    return subs


class _Walker:
    def __init__(self, view: MailView, limits: ParseLimits) -> None:
        self.view = view
        self.limits = limits
        self.parts = 0
        self.text_size = 0

    def walk(self, part: Message, depth: int, inside_original: bool) -> None:
        self.parts += 1
        if depth > self.limits.max_depth or self.parts > self.limits.max_parts:
            return
        ctype = part.get_content_type().lower()
        if ctype in _STATUS_TYPES and not inside_original:
            self.view.status_groups.extend(_status_groups(part))
        elif ctype == "message/feedback-report" and not inside_original:
            groups = _status_groups(part)
            self.view.feedback = tuple(f for g in groups for f in g)
        elif ctype in _HEADERS_TYPES:
            if not self.view.original:
                self.view.original = _headers(email.message_from_string(_part_text(part), policy=compat32))
        elif ctype in _ORIGINAL_TYPES:
            self._original(part, depth)
        elif part.is_multipart():
            for sub in _children(part, ctype):
                self.walk(sub, depth + 1, inside_original)
        elif ctype.startswith(("text/", "multipart/")) or depth == 0:  # multipart/*: broken, read as text
            self._text(part, ctype, inside_original)

    def _original(self, part: Message, depth: int) -> None:
        payload = part.get_payload()
        inner = payload[0] if isinstance(payload, list) and payload else None
        if isinstance(inner, Message):
            if not self.view.original:
                self.view.original = _headers(inner)
                self.view.inner = inner
            self.walk(inner, depth + 1, True)
        elif isinstance(payload, str) and not self.view.original:
            self.view.original = _headers(email.message_from_string(payload, policy=compat32))

    def _text(self, part: Message, ctype: str, inside_original: bool) -> None:
        text = _part_text(part)
        if ctype == "text/html":
            text = html_to_text(text)
        if inside_original:
            if len(self.view.original_text) < 4096:
                self.view.original_text += text[:4096]
            return
        room = self.limits.max_text - self.text_size
        if room > 0:
            self.view.texts.append(text[:room])
            self.text_size += min(len(text), room)


def view_message(data: bytes, limits: ParseLimits | None = None) -> MailView:
    limits = limits or ParseLimits()
    data, truncated = normalise(data, limits)
    view = view_of(email.message_from_bytes(data, policy=compat32), limits)
    view.truncated = truncated
    return view


def view_of(msg: Message, limits: ParseLimits) -> MailView:
    view = MailView(headers=_headers(msg), content_type=msg.get_content_type().lower())
    _Walker(view, limits).walk(msg, 0, False)
    return view
