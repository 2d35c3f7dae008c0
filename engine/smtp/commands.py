"""Command bytes, ESMTP parameters and the checks that keep injection off the wire.

Every byte of a command line passes through this module. An argument with CR,
LF, NUL, another C0 control, DEL, ``<`` or ``>`` never becomes a command: it
raises ``LocalRefusal`` (a ``LocalProtocolError`` carrying the reply to report),
before anything is written (RELIABILITY.md 3.2, nodemailer GHSA-c7w3-x93f-qmm8).

ESMTP parameters are sent only when the server announced the extension:
``SIZE=`` (RFC 1870), ``BODY=8BITMIME`` (RFC 6152) for a message with 8-bit
bytes, ``SMTPUTF8`` (RFC 6531) when an address needs it, and the DSN
parameters ``RET``/``ENVID``/``NOTIFY``/``ORCPT`` (RFC 3461, xtext-encoded).
DSN parameters are checked even when DSN is not announced, so bad input is
refused the same way whatever the peer.

8-bit messages to a server without 8BITMIME are sent as they are, without
BODY=: RFC 6152 would have us downgrade (re-encode MIME parts) or bounce, but
our renderer already emits 7bit/quoted-printable parts, a raw 8-bit message is
the submitter's explicit choice, and receivers in practice accept 8-bit data.
CHUNKING/BDAT is not used: PIPELINING already gives one round trip per message.

Local refusal codes, chosen as what a server would most likely have said:
553 5.1.7 bad sender, 553 5.1.3 bad recipient, 553 5.6.7 non-ASCII address
without SMTPUTF8 (RFC 6531 3.2), 501 5.5.4 bad DSN parameter, 552 5.3.4 message
larger than the announced SIZE (RFC 1870 6.1).
"""

from __future__ import annotations

import re

from engine.errors import LocalProtocolError
from engine.smtp import data
from engine.smtp.extensions import Capabilities
from engine.smtp.replies import LocalRefusal, Reply
from engine.smtp.transaction import (
    Envelope,
    PendingTransaction,
    Transaction,
    TransactionResult,
    refused_result,
)

DATA = b"DATA\r\n"
RSET = b"RSET\r\n"
QUIT = b"QUIT\r\n"
NOOP = b"NOOP\r\n"
STARTTLS = b"STARTTLS\r\n"
END_OF_DATA = b".\r\n"

_UNSAFE = re.compile(r"[\x00-\x1f\x7f<>]")
_PRINTABLE = re.compile(r"[\x20-\x7e]*")
_XTEXT_SAFE = frozenset(range(33, 127)) - {ord("+"), ord("=")}
_NOTIFY = frozenset({"SUCCESS", "FAILURE", "DELAY"})
_ADDR_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")


def hello(verb: str, name: str) -> bytes:
    """EHLO/HELO line; the name is configuration, so a bad one is a bug, not a refusal."""
    if not name or not name.isascii() or _UNSAFE.search(name) or " " in name:
        raise LocalProtocolError(f"invalid {verb} name {name!r}")
    return f"{verb} {name}\r\n".encode("ascii")


def xtext(value: str) -> str:
    """RFC 3461 section 4: "+" and "=" and anything outside 33..126 as +HH."""
    return "".join(c if ord(c) in _XTEXT_SAFE else f"+{ord(c):02X}" for c in value)


def _path(address: str, utf8: bool, command: str, bad: str) -> bytes:
    if _UNSAFE.search(address) is not None or (command == "RCPT" and not address):
        raise LocalRefusal(553, bad, f"invalid address {address!r}", command)
    if address.isascii():
        return address.encode("ascii")
    if not utf8:
        raise LocalRefusal(
            553, "5.6.7", "non-ASCII address and the server has no SMTPUTF8", command
        )
    return address.encode("utf-8")


def prepare(
    txn: Transaction, caps: Capabilities, encoder: data.Encoder | None = None
) -> PendingTransaction | TransactionResult:
    """Every byte the transaction will write, checked before any is; or its local refusal."""
    message = txn.message
    envelope = txn.envelope
    try:
        chunks, size = (data.encode if encoder is None else encoder.encode)(message, txn.canonical)
        eight_bit = not message.isascii()
        plain = _plain_envelope(envelope, caps, size, eight_bit)
        if plain is not None:
            return PendingTransaction(txn, chunks, plain[0], plain[1], [None] * len(plain[1]))
        mail, rcpts = envelope_commands(envelope, caps, size, eight_bit)
    except LocalRefusal as refusal:
        return refused_result(txn, refusal.reply)
    pending = PendingTransaction(txn, chunks, mail, rcpts)
    return pending if None in pending.replies else pending.result()  # all refused: nothing to write


def _plain_envelope(
    envelope: Envelope, caps: Capabilities, size: int, eight_bit: bool
) -> tuple[bytes, list[bytes | Reply]] | None:
    """``envelope_commands`` for the usual envelope, or None to take the general path.

    Usual: no DSN parameter and every address printable ASCII without ``<>``
    (for ASCII, ``isprintable`` is exactly "no C0 control and no DEL", the
    ``_UNSAFE`` class without the brackets). The same bytes as the general
    path, built with one f-string and one encode per line instead of a regex
    search and ``%`` formatting per address: 0.5 us instead of 1.1 us.
    """
    if (
        envelope.ret is not None
        or envelope.envid is not None
        or envelope.notify is not None
        or envelope.orcpt is not None
    ):
        return None
    sender = envelope.mail_from
    if not (sender.isascii() and sender.isprintable()) or "<" in sender or ">" in sender:
        return None
    rcpts: list[bytes | Reply] = []
    for address in envelope.recipients:
        if not (address and address.isascii() and address.isprintable()):
            return None
        if "<" in address or ">" in address:
            return None
        rcpts.append(f"RCPT TO:<{address}>\r\n".encode("ascii"))
    params = ""
    if caps.size is not None:
        if caps.size and size > caps.size:
            raise LocalRefusal(
                552, "5.3.4", f"message of {size} octets exceeds the server's {caps.size}", "MAIL"
            )
        params = f" SIZE={size}"
    if eight_bit and caps.eightbitmime:
        params += " BODY=8BITMIME"
    return f"MAIL FROM:<{sender}>{params}\r\n".encode("ascii"), rcpts


def envelope_commands(
    envelope: Envelope, caps: Capabilities, size: int, eight_bit: bool
) -> tuple[bytes, list[bytes | Reply]]:
    """MAIL, and per recipient either its RCPT line or the local reply refusing it.

    Raises ``LocalRefusal`` when the whole transaction must be refused (bad
    sender, bad DSN parameter). Every recipient may come back refused.
    """
    utf8_ok = caps.smtputf8
    sender = _path(envelope.mail_from, utf8_ok, "MAIL", "5.1.7")
    notify = _notify(envelope, caps)
    if envelope.orcpt is not None and len(envelope.orcpt) != len(envelope.recipients):
        raise LocalRefusal(501, "5.5.4", "ORCPT list does not match the recipients", "RCPT")
    rcpts: list[bytes | Reply] = []
    needs_utf8 = not envelope.mail_from.isascii()
    for i, address in enumerate(envelope.recipients):
        try:
            path = _path(address, utf8_ok, "RCPT", "5.1.3")
            rcpts.append(b"RCPT TO:<%b>%b%b\r\n" % (path, notify, _orcpt(envelope, caps, i)))
            needs_utf8 = needs_utf8 or not address.isascii()
        except LocalRefusal as refusal:
            rcpts.append(refusal.reply)
    params = _mail_params(envelope, caps, size, eight_bit, needs_utf8)
    return b"MAIL FROM:<%b>%b\r\n" % (sender, params), rcpts


def _mail_params(
    envelope: Envelope, caps: Capabilities, size: int, eight_bit: bool, utf8: bool
) -> bytes:
    params = ""
    if caps.size is not None:
        if caps.size and size > caps.size:
            raise LocalRefusal(
                552, "5.3.4", f"message of {size} octets exceeds the server's {caps.size}", "MAIL"
            )
        params += f" SIZE={size}"
    if eight_bit and caps.eightbitmime:
        params += " BODY=8BITMIME"
    if utf8:
        params += " SMTPUTF8"  # _path refused non-ASCII addresses unless announced
    if envelope.ret is not None:
        if envelope.ret not in ("FULL", "HDRS"):
            raise LocalRefusal(501, "5.5.4", f"invalid RET {envelope.ret!r}", "MAIL")
        if caps.dsn:
            params += f" RET={envelope.ret}"
    if envelope.envid is not None:
        if (
            not envelope.envid
            or len(envelope.envid) > 100
            or not _PRINTABLE.fullmatch(envelope.envid)
        ):
            raise LocalRefusal(501, "5.5.4", "invalid ENVID", "MAIL")
        if caps.dsn:
            params += f" ENVID={xtext(envelope.envid)}"
    return params.encode("ascii")


def _notify(envelope: Envelope, caps: Capabilities) -> bytes:
    if envelope.notify is None:
        return b""
    values = tuple(v.upper() for v in envelope.notify)
    if not (
        values == ("NEVER",)
        or (values and set(values) <= _NOTIFY and len(set(values)) == len(values))
    ):
        raise LocalRefusal(501, "5.5.4", f"invalid NOTIFY {envelope.notify!r}", "RCPT")
    return f" NOTIFY={','.join(values)}".encode("ascii") if caps.dsn else b""


def _orcpt(envelope: Envelope, caps: Capabilities, index: int) -> bytes:
    if envelope.orcpt is None:
        return b""
    value = envelope.orcpt[index]
    if value is None:
        return b""
    addr_type, sep, original = value.partition(";")
    if not sep or not _ADDR_TYPE.fullmatch(addr_type):
        addr_type, original = "rfc822", value
    if not original or not _PRINTABLE.fullmatch(original):
        raise LocalRefusal(501, "5.5.4", f"invalid ORCPT {value!r}", "RCPT")
    return f" ORCPT={addr_type};{xtext(original)}".encode("ascii") if caps.dsn else b""
