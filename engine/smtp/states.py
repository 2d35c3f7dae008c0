"""Session states, the commands that wait for replies, and the transition table.

Theory of operation (the rules, h11 style):

Rule 1: every change of ``State`` goes through ``transition``, so this table is
the whole session life cycle::

    GREETING -> EHLO -> READY <-> (transactions) -> QUIT -> CLOSED
                 |  \\-> HELO -> READY            (5xx to EHLO: RFC 821 fallback)
                 \\-> STARTTLS -> HANDSHAKE -> EHLO (capabilities forgotten)

A refusal during setup (4xx/5xx greeting, EHLO and HELO refused, TLS
required and impossible) is ``LOST``: a QUIT is written out of politeness and
its reply is not awaited.

An input missing from a state's row is a bug in the client and raises
``LocalProtocolError``, never a silent no-op.

Rule 2: transactions do not have session states. While READY (or QUIT with
transactions still ahead of the QUIT), the client keeps a FIFO of written
commands (``Cmd``) and pairs each reply with the oldest one. That FIFO is what
makes PIPELINING (RFC 2920) natural.

Rule 3: the machine reports what happened as events (``Ready``,
``StartTlsNow``, ``TransactionDone``, ``NoopDone``, ``Refused``, ``Closed``),
defined at the end of this file next to the states that produce them.

Rule 4: each ``Cmd`` names the ``SmtpTimeouts`` field that bounds the wait for
its reply (``Cmd.phase``) and the ``Reply.command`` its reply carries.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar

from engine.errors import LocalProtocolError
from engine.smtp.extensions import Capabilities
from engine.smtp.replies import Reply
from engine.smtp.transaction import Transaction, TransactionResult


class State(enum.Enum):
    GREETING = "greeting"  # connected, waiting for the 220
    EHLO = "ehlo"  # EHLO written
    HELO = "helo"  # HELO written after a 5xx to EHLO
    STARTTLS = "starttls"  # STARTTLS written
    HANDSHAKE = "handshake"  # 220 to STARTTLS: the driver runs the TLS handshake
    READY = "ready"  # transactions may be submitted
    QUIT = "quit"  # QUIT queued or written; no new work
    CLOSED = "closed"  # nothing more will happen on this connection


class Input(enum.Enum):
    ACCEPTED = "accepted"  # positive reply
    FALLBACK = "fallback"  # 5xx to EHLO: try HELO
    TLS = "tls"  # EHLO accepted and STARTTLS wanted
    TLS_GO = "tls_go"  # 220 to STARTTLS
    PLAIN = "plain"  # STARTTLS refused and TLS only wanted if offered: go on in plain text
    TLS_DONE = "tls_done"  # the driver finished the handshake
    QUIT = "quit"  # we asked to end the session
    LOST = "lost"  # 421, timeout, protocol error, EOF, abort


_ENDS = {Input.QUIT: State.QUIT, Input.LOST: State.CLOSED}

TRANSITIONS: dict[State, dict[Input, State]] = {
    State.GREETING: {Input.ACCEPTED: State.EHLO, **_ENDS},
    State.EHLO: {
        Input.ACCEPTED: State.READY,
        Input.TLS: State.STARTTLS,
        Input.FALLBACK: State.HELO,
        **_ENDS,
    },
    State.HELO: {Input.ACCEPTED: State.READY, **_ENDS},
    State.STARTTLS: {Input.TLS_GO: State.HANDSHAKE, Input.PLAIN: State.READY, **_ENDS},
    State.HANDSHAKE: {Input.TLS_DONE: State.EHLO, **_ENDS},
    State.READY: dict(_ENDS),
    State.QUIT: {Input.LOST: State.CLOSED},
    State.CLOSED: {Input.LOST: State.CLOSED},
}


def transition(state: State, event: Input) -> State:
    try:
        return TRANSITIONS[state][event]
    except KeyError:
        raise LocalProtocolError(f"no transition from {state.name} on {event.name}") from None


class Cmd:
    """A command waiting for its reply: the ``Reply.command`` it gets and its ``SmtpTimeouts`` field.

    Plain slotted instances rather than an Enum: ``cmd.verb`` is read for every
    reply, and Enum ``.value`` costs several times an attribute read.
    """

    __slots__ = ("verb", "phase")
    GREETING: ClassVar[Cmd]
    EHLO: ClassVar[Cmd]
    HELO: ClassVar[Cmd]
    STARTTLS: ClassVar[Cmd]
    MAIL: ClassVar[Cmd]
    RCPT: ClassVar[Cmd]
    DATA: ClassVar[Cmd]
    DOT: ClassVar[Cmd]
    RSET: ClassVar[Cmd]
    NOOP: ClassVar[Cmd]
    QUIT: ClassVar[Cmd]
    ALL: ClassVar[tuple[Cmd, ...]]

    def __init__(self, verb: str, phase: str) -> None:
        self.verb = verb
        self.phase = phase

    def __repr__(self) -> str:
        return f"Cmd.{self.verb}"


Cmd.GREETING = Cmd("CONNECT", "greeting")
Cmd.EHLO = Cmd("EHLO", "ehlo")
Cmd.HELO = Cmd("HELO", "ehlo")
Cmd.STARTTLS = Cmd("STARTTLS", "starttls")
Cmd.MAIL = Cmd("MAIL", "mail")
Cmd.RCPT = Cmd("RCPT", "rcpt")
Cmd.DATA = Cmd("DATA", "data")
Cmd.DOT = Cmd(".", "data_end")
Cmd.RSET = Cmd("RSET", "rset")
Cmd.NOOP = Cmd("NOOP", "noop")
Cmd.QUIT = Cmd("QUIT", "quit")
Cmd.ALL = tuple(c for c in vars(Cmd).values() if isinstance(c, Cmd))


# -- what the machine reports (ClientConnection.next_event) --------------------
#
# ``Refused`` (greeting, or EHLO and HELO, refused) is followed by ``Closed``.
# ``Closed``: the connection is unusable. ``error`` is None after QUIT or a
# refusal; a 421 is in ``reply``; ``unsure`` is the transaction whose end of
# data was handed out with no reply, the transport not paused (it may have
# been delivered);
# ``undecided`` are the others not finished, in submission order.


@dataclass(frozen=True, slots=True)
class Ready:
    capabilities: Capabilities


@dataclass(frozen=True, slots=True)
class StartTlsNow:
    """Write what ``data_to_send`` holds, run the TLS handshake, then ``start_tls_done()``."""


@dataclass(frozen=True, slots=True)
class TransactionDone:
    result: TransactionResult


def new_transaction_done(result: TransactionResult) -> TransactionDone:
    """``TransactionDone(result)`` without the frozen ``__init__`` (one per transaction)."""
    event = _new(TransactionDone)
    _set_result(event, result)
    return event


_new = object.__new__
_set_result = vars(TransactionDone)["result"].__set__


@dataclass(frozen=True, slots=True)
class NoopDone:
    reply: Reply


@dataclass(frozen=True, slots=True)
class Refused:
    reply: Reply


@dataclass(frozen=True, slots=True)
class Closed:
    error: BaseException | None
    unsure: Transaction | None = None
    undecided: tuple[Transaction, ...] = ()
    reply: Reply | None = None


Event = Ready | StartTlsNow | TransactionDone | NoopDone | Refused | Closed
