"""Render a job's message for one recipient: RFC 5322 bytes, canonical CRLF, lines <= 998.

A ``MessageTemplate`` is compiled once per job per worker; ``render`` then costs a few
microseconds for a 2 KB personalised message (PERFORMANCE.md: a byte-template join is 2.3x
faster than ``str.format`` and ``email.message`` per recipient costs more than all the SMTP
work). Nothing here reads a clock: the caller formats ``Date`` once per second.

Layout of a rendered message::

    From, Date, Message-ID, To, Subject, custom headers (in the job's order),
    MIME-Version, Content-Type [, Content-Transfer-Encoding], empty line, body

* ``Message-ID`` is ``<{job_id}.{index}@{msgid_domain}>``: a retry of the same recipient
  carries the same id, so receivers and our own bounce matching can de-duplicate;
* ``To`` is the recipient's address unless the job gives a ``To`` header (fixed or
  templated);
* with both ``text`` and ``html`` the body is ``multipart/alternative`` with a fixed boundary
  that starts with ``=_`` (never produced by quoted-printable; a 7bit part that happens to
  contain it is re-encoded as quoted-printable).

An *identical* template (a raw message, or no placeholder anywhere and a fixed ``To``)
gives every recipient the same bytes, so the worker can put many recipients in one
transaction; its Message-ID is then ``<{job_id}@{msgid_domain}>``, one per job, and
``render`` returns the same bytes as ``render_shared``. A raw message is returned exactly as
given (already checked at submit time, see ``engine.rawmessage``).

The SMTP client dot-stuffs; this module does not. What ``render`` returns for a template
(not a raw message) is canonical by construction, so the worker tells the client so
(``Transaction.canonical``) and it skips proving it again per message: static pieces are made
CRLF when compiled, header values are encoded or folded (``engine.headers``), body values go
through ``crlf`` and their lines are measured (``engine.bodypart``), and quoted-printable
keeps lines under 76 octets. ``tests/unit/test_message.py`` checks it on arbitrary templates.
"""

from __future__ import annotations

import re
from typing import Any

from engine.bodypart import BodyPart, Lookup
from engine.errors import InputError
from engine.headers import encode_field
from engine.job import JobSpec, Recipient
from engine.template import split_template

__all__ = ["MessageTemplate", "BOUNDARY"]

BOUNDARY = b"=_bulkmail_alternative"
_JOB_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
_MSGID_DOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,253}[A-Za-z0-9])?")
_CTE = {b"7bit": b"7bit\r\n", b"quoted-printable": b"quoted-printable\r\n"}


class _Header:
    """One header field whose value has placeholders."""

    __slots__ = ("name", "literals", "names")

    def __init__(self, name: str, value: str) -> None:
        template = split_template(value)
        self.name = name
        self.literals = template.literals
        self.names = template.names

    def render(self, lookup: Lookup) -> bytes:
        literals = self.literals
        if len(self.names) == 1:
            value = literals[0] + lookup(self.names[0], "") + literals[1]
        else:
            parts = [literals[0]]
            for name, literal in zip(self.names, literals[1:], strict=True):
                parts.append(lookup(name, ""))
                parts.append(literal)
            value = "".join(parts)
        return encode_field(self.name, value)


# A header plan item: static bytes, a templated header, or None for the recipient's To.
_PlanItem = bytes | _Header | None


class MessageTemplate:
    __slots__ = ("identical", "_raw", "_head", "_msgid_head", "_msgid_tail", "_plan", "_parts", "_shared")

    def __init__(self, spec: JobSpec, *, job_id: str, msgid_domain: str) -> None:
        if not _JOB_ID.fullmatch(job_id):
            raise InputError("1 to 128 characters from A-Z a-z 0-9 . _ -", field="job_id")
        if not _MSGID_DOMAIN.fullmatch(msgid_domain) or ".." in msgid_domain:
            raise InputError("must be a host name", field="msgid_domain")
        self._raw = spec.message
        self._shared: bytes | None = None
        self._plan: list[_PlanItem] = []
        self._parts: list[BodyPart | bytes] = []
        self._head = f"From: {spec.sender}\r\nDate: ".encode()
        self._msgid_head = f"\r\nMessage-ID: <{job_id}".encode()
        self._msgid_tail = f"@{msgid_domain}>\r\n".encode()
        if self._raw is not None:
            self.identical = True
            return
        fixed_to, static = self._compile_headers(spec)
        self._compile_body(spec)
        self.identical = fixed_to and static and all(not isinstance(p, BodyPart) or p.fixed for p in self._parts)
        if self.identical:
            # Everything but the date is fixed: keep what follows it (Message-ID without index).
            self._shared = self._render(Recipient("", "", None), b"", b"")[len(self._head) :]

    @property
    def canonical(self) -> bool:
        """Whether every rendered message is canonical by construction (not for a raw message)."""
        return self._raw is None

    def render(self, rcpt: Recipient, index: int, date: bytes) -> bytes:
        """The full message for ``rcpt``, the ``index``-th recipient of the job."""
        if self.identical:
            return self.render_shared(date)
        return self._render(rcpt, b".%d" % index, date)

    def render_shared(self, date: bytes) -> bytes:
        """The bytes every recipient of an identical template gets."""
        if self._raw is not None:
            return self._raw
        if self._shared is None:
            raise ValueError("render_shared needs an identical template (check .identical)")
        return b"".join((self._head, date, self._shared))

    def _render(self, rcpt: Recipient, msgid: bytes, date: bytes) -> bytes:
        to = rcpt.to
        # template.ADDRESS_NAMES: the address wins over vars of the same name.
        values = {**rcpt.vars, "email": to, "to": to} if rcpt.vars else {"email": to, "to": to}
        lookup = values.get
        out = [self._head, date, self._msgid_head, msgid, self._msgid_tail]
        for item in self._plan:
            if isinstance(item, bytes):
                out.append(item)
            elif item is None:
                out.append(f"To: {to}\r\n".encode())
            else:
                out.append(item.render(lookup))
        for part in self._parts:
            if isinstance(part, bytes):
                out.append(part)
            else:
                cte, pieces = part.render_pieces(lookup)
                out.append(_CTE[cte])
                out.append(b"\r\n")
                out += pieces
        return b"".join(out)

    def _compile_headers(self, spec: JobSpec) -> tuple[bool, bool]:
        """Fill the header plan; return (a To header is given, no header has placeholders)."""
        fields: list[tuple[str, str]] = []
        to_field = next(((n, v) for n, v in spec.headers if n.lower() == "to"), None)
        fields.append(to_field or ("To", ""))
        if spec.subject is not None:
            fields.append(("Subject", spec.subject))
        fields.extend((n, v) for n, v in spec.headers if n.lower() != "to")
        static = True
        for i, (name, value) in enumerate(fields):
            header = _Header(name, value)
            if i == 0 and to_field is None:
                self._plan.append(None)
            elif header.names:
                static = False
                self._plan.append(header)
            else:
                self._append(self._plan, encode_field(name, value))
        return to_field is not None, static

    def _compile_body(self, spec: JobSpec) -> None:
        mime = b"MIME-Version: 1.0\r\n"
        if spec.text is not None and spec.html is not None:
            boundary = BOUNDARY
            self._append(self._plan, mime)
            self._parts = [
                b'Content-Type: multipart/alternative; boundary="%s"\r\n\r\n' % boundary,
            ]
            for subtype, text in (("plain", spec.text), ("html", spec.html)):
                self._append(
                    self._parts,
                    b"--%s\r\nContent-Type: text/%s; charset=utf-8\r\nContent-Transfer-Encoding: "
                    % (boundary, subtype.encode()),
                )
                self._parts.append(BodyPart(text, is_html=subtype == "html", boundary=boundary))
                self._parts.append(b"\r\n")
            self._append(self._parts, b"--%s--\r\n" % boundary)
        else:
            is_html = spec.text is None
            body = spec.html if is_html else spec.text
            assert body is not None  # parse_job guarantees text or html
            content_type = b"Content-Type: text/%s; charset=utf-8\r\n" % (b"html" if is_html else b"plain")
            self._append(self._plan, mime + content_type)
            self._parts = [b"Content-Transfer-Encoding: ", BodyPart(body, is_html=is_html, boundary=None)]

    @staticmethod
    def _append(items: list[Any], data: bytes) -> None:
        """Append bytes, merged with a preceding bytes item so render joins fewer pieces."""
        if items and type(items[-1]) is bytes:
            items[-1] += data
        else:
            items.append(data)
