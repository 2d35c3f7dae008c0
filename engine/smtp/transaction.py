"""What the engine asks an SMTP session to do, and what it gets back.

Per-recipient results are values. Exceptions are kept for a session that can
no longer be used (``SessionLost``) or never became usable (``SessionRefused``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from engine.errors import BulkmailError, TransportError
from engine.smtp.replies import Reply


@dataclass(frozen=True, slots=True)
class Envelope:
    mail_from: str  # "" is the null reverse-path
    recipients: tuple[str, ...]
    ret: Literal["FULL", "HDRS"] | None = None  # RFC 3461 DSN parameters, sent only when announced
    envid: str | None = None
    notify: tuple[str, ...] | None = None  # same NOTIFY for every recipient
    orcpt: tuple[str | None, ...] | None = None  # per recipient, same length as recipients


@dataclass(slots=True, eq=False)
class Transaction:
    """One mail transaction. ``message`` is RFC 5322 bytes with any line endings:
    the client makes them canonical and dot-stuffs them. ``tag`` is the caller's."""

    envelope: Envelope
    message: bytes
    tag: object = None


@dataclass(frozen=True, slots=True)
class RecipientResult:
    recipient: str
    reply: Reply  # the reply that decided this recipient (RCPT's, MAIL's, DATA's or the final one)
    delivered: bool  # True only after a 2xx to the end of data


@dataclass(frozen=True, slots=True)
class TransactionResult:
    transaction: Transaction
    recipients: tuple[RecipientResult, ...]
    mail_reply: Reply | None = None
    data_reply: Reply | None = None
    final_reply: Reply | None = None


class SessionRefused(BulkmailError):
    """The server would not start a session: 4xx/5xx greeting, EHLO and HELO refused,
    or STARTTLS required by policy and not possible. Try the next MX."""

    def __init__(self, reply: Reply | None, message: str | None = None) -> None:
        self.reply = reply
        super().__init__(message or f"session refused: {reply}")


class SessionLost(TransportError):
    """The connection died before this transaction's result was known.

    ``unsure`` is True when the end of data was written and its reply never
    came: the message may have been delivered (the RFC 1047 duplicate window).
    ``reply`` is set when the server said why (e.g. 421).
    """

    def __init__(self, reason: BaseException | None, *, unsure: bool = False, reply: Reply | None = None) -> None:
        self.reason = reason
        self.unsure = unsure
        self.reply = reply
        super().__init__(f"session lost ({'after end of data' if unsure else 'before end of data'}): {reply or reason}")
