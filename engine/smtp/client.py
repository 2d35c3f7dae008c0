"""``ClientConnection``: the sans-IO SMTP client (RFC 5321, PIPELINING RFC 2920, STARTTLS RFC 3207).

No asyncio, no socket, no ssl, no clock: bytes and calls in, events and bytes
out, so every behaviour is testable byte for byte. The driver
(``engine.net.smtp_protocol``) is a thin loop around it::

    conn = ClientConnection(config, starttls="offered")
    conn.receive_data(data)     # bytes from the peer; b"" means EOF
    conn.events()               # -> every Event since the last call (or next_event() one by one)
    conn.data_to_send()         # -> list[bytes] for transport.writelines
    conn.submit(txn)            # READY only; transactions are pipelined
    conn.noop(); conn.quit()
    conn.start_tls_done()       # after StartTlsNow, once the handshake succeeded
    conn.writing_paused(flag)   # transport flow control (the data_block timeout)
    conn.waiting_for()          # -> (phase, seconds) | None: the deadline to enforce,
    conn.progress               #    counted from the last time this number moved
    conn.timeout()              # the deadline fired
    conn.connection_lost(exc)   # the transport died (exc None: EOF)

Events are defined in ``states`` (imported here as ``ev``). Protocol errors from the peer never raise:
they close with a ``RemoteProtocolError``. Misuse raises ``LocalProtocolError``.

How transactions are written and their replies handled is in ``pipeline``
(the ``Pipeline`` base class); session setup, the reply loop and the public
calls are here. Nothing follows STARTTLS in its write.

Speed: this runs for every message, so the hot path avoids what costs in
CPython 3.11 (measured, ``benchmarks/smtp_machine_bench.py``): Enum member
lookups (module aliases below), a call per MAIL/RCPT reply when pipelining
(handled inline in ``_read_replies``), the transaction queue when a group can
be written at once (``submit``), and re-scanning a message already encoded.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import fields
from typing import Literal

from engine.config import SmtpConfig
from engine.errors import (
    LocalProtocolError,
    RemoteProtocolError,
    SmtpTimeout,
    TlsError,
    TransportError,
)
from engine.smtp import commands, data
from engine.smtp import states as ev
from engine.smtp.extensions import HELO_CAPABILITIES, Capabilities
from engine.smtp.pipeline import Entry, Pipeline
from engine.smtp.replies import Reply, ReplyParser
from engine.smtp.states import Cmd, Input, State, transition
from engine.smtp.transaction import PendingTransaction, Transaction, TransactionResult

StartTls = Literal["never", "offered", "required"]
# Read on every reply: an Enum member costs ~65 ns per ``State.X`` lookup on 3.11, a module name ~6.
_READY, _CLOSED, _HANDSHAKE = State.READY, State.CLOSED, State.HANDSHAKE
_MAIL, _RCPT, _DATA, _QUIT = Cmd.MAIL, Cmd.RCPT, Cmd.DATA, Cmd.QUIT


class ClientConnection(Pipeline):
    def __init__(self, config: SmtpConfig, *, starttls: StartTls = "never") -> None:
        self._limits = config.limits
        self._timeouts = {f.name: getattr(config.timeouts, f.name) for f in fields(config.timeouts)}
        self._ehlo = commands.hello("EHLO", config.helo)
        self._helo = commands.hello("HELO", config.helo)
        self._starttls = starttls
        self._parser = ReplyParser(config.limits)
        self._state = State.GREETING
        self._inflight: deque[Entry] = deque([(Cmd.GREETING, None, 0)])
        self._todo: deque[PendingTransaction | Cmd] = deque()
        self._out: list[bytes] = []
        self._events: list[ev.Event] = []
        self.capabilities: Capabilities = HELO_CAPABILITIES
        self._rset = False
        self._paused = False
        self._dot_queued: PendingTransaction | None = None  # end of data in _out
        self._dot: PendingTransaction | None = None  # end of data handed out, no reply yet
        self._pipelining = False  # capabilities.pipelining, read for every reply
        self._encoder = data.Encoder()
        self.replies = 0
        # moves whenever the deadline to enforce may have changed (a reply, a command
        # written when none was waiting, writing paused or resumed): the driver
        # recomputes ``waiting_for`` only then
        self.progress = 0
        self.tls_active = False
        self.greeting: Reply | None = None
        # one handler per reply phase: _on_greeting, _on_ehlo (EHLO and HELO), _on_mail, ...
        self._handlers = {cmd: getattr(self, "_on_" + cmd.phase) for cmd in Cmd.ALL}

    def __repr__(self) -> str:
        return f"<ClientConnection {self._state.name} {len(self._inflight)} awaiting replies>"

    # -- what the driver reads ------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def usable(self) -> bool:
        return self._state is _READY

    def next_event(self) -> ev.Event | None:
        return self._events.pop(0) if self._events else None

    def events(self) -> Sequence[ev.Event]:
        """Every event not taken yet, oldest first: ``next_event`` until None, in one call."""
        events = self._events
        if not events:
            return ()
        self._events = []
        return events

    def data_to_send(self) -> list[bytes]:
        out = self._out
        if out:
            self._out = []
            if self._dot_queued is not None:
                self._dot, self._dot_queued = self._dot_queued, None
        return out

    def waiting_for(self) -> tuple[str, float] | None:
        """The phase whose reply we wait for and its timeout; None when idle."""
        if self._state is _CLOSED or self._state is _HANDSHAKE:
            return None  # the handshake is bounded by the driver (ssl_handshake_timeout)
        if self._paused:
            return ("data_block", self._timeouts["data_block"])
        if self._inflight:
            phase = self._inflight[0][0].phase
            return (phase, self._timeouts[phase])
        return None

    # -- what the driver tells ------------------------------------------------

    def receive_data(self, chunk: bytes) -> None:
        if self._state is _CLOSED:
            return
        if not chunk:
            self.connection_lost(None)
            return
        if self._state is _HANDSHAKE:
            self._close(RemoteProtocolError("plaintext after the 220 to STARTTLS (injection)"))
            return
        self._parser.feed(chunk)
        try:
            self._read_replies()
        except RemoteProtocolError as exc:
            self._close(exc)
            return
        if self._todo:
            self._pump()

    def _read_replies(self) -> None:
        parser = self._parser
        next_reply = parser.next_reply
        inflight = self._inflight
        handlers = self._handlers
        replies = self.replies
        try:
            while True:
                if not inflight:
                    reply = parser.next_reply("")
                    if reply is None:
                        return
                    if reply.code != 421:
                        raise RemoteProtocolError(f"reply with no command waiting for it: {reply}")
                    self._close(None, reply=reply)
                    return
                cmd, p, i = inflight[0]
                reply = next_reply(cmd.verb)
                if reply is None:
                    return
                inflight.popleft()
                replies += 1
                code = reply.code
                if code == 421 and cmd is not _QUIT:
                    self._on_421(cmd, p, i, reply)
                elif cmd is _RCPT and self._pipelining:  # the hot replies, inline (no call)
                    assert p is not None
                    p.replies[i] = reply
                    if 200 <= code < 300:
                        p.accepted += 1
                elif cmd is _MAIL and self._pipelining:
                    assert p is not None
                    p.mail_reply = reply
                else:
                    handlers[cmd](p, i, reply)
                    if self._state is _CLOSED or self._state is _HANDSHAKE:
                        return
        finally:
            if replies != self.replies:
                self.replies = replies
                self.progress += 1

    def start_tls_done(self) -> None:
        if self._state is not _HANDSHAKE:
            raise LocalProtocolError(f"start_tls_done() in state {self._state.name}")
        self._parser = ReplyParser(self._limits)
        self.tls_active = True
        # RFC 3207 4.2: forget everything learnt in plain text
        self.capabilities = HELO_CAPABILITIES
        self._pipelining = False
        self._to(Input.TLS_DONE)
        self._send(self._ehlo, Cmd.EHLO)

    def writing_paused(self, paused: bool) -> None:
        if paused is not self._paused:
            self._paused = paused
            self.progress += 1

    def timeout(self) -> None:
        waiting = self.waiting_for()
        if waiting is not None:
            self._close(SmtpTimeout(*waiting))

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._state is _CLOSED:
            return
        # after QUIT, EOF is the expected end (pump never leaves work queued behind an empty FIFO)
        if self._state is State.QUIT and all(cmd is Cmd.QUIT for cmd, _, _ in self._inflight):
            self._close(None)
        else:
            self._close(exc or TransportError("connection closed by the server"))

    # -- what the engine asks -------------------------------------------------

    def submit(self, txn: Transaction) -> None:
        if self._state is not _READY:
            raise LocalProtocolError(f"submit() in state {self._state.name}")
        if not txn.envelope.recipients:
            raise LocalProtocolError("a transaction needs at least one recipient")
        prepared = commands.prepare(txn, self.capabilities, self._encoder)
        if isinstance(prepared, TransactionResult):  # refused locally: nothing to write
            self._events.append(ev.TransactionDone(prepared))
            return
        inflight = self._inflight
        if (
            self._pipelining
            and not self._todo
            and not self._rset
            and (not inflight or inflight[-1][0] is not _DATA)
        ):  # the usual pipelined case, what _pump would do, without the queue
            self._write_group(prepared)
        else:
            self._todo.append(prepared)
            self._pump()

    def noop(self) -> None:
        if self._state is not _READY:
            raise LocalProtocolError(f"noop() in state {self._state.name}")
        self._todo.append(Cmd.NOOP)
        self._pump()

    def quit(self) -> None:
        """QUIT after what was submitted; before READY, QUIT and close at once."""
        if self._state is _READY:
            self._to(Input.QUIT)
            self._todo.append(Cmd.QUIT)
            self._pump()
        elif self._state is not State.QUIT and self._state is not _CLOSED:
            self._close(None, polite=self._state is not _HANDSHAKE)

    # -- session setup ----------------------------------------------------------

    def _on_greeting(self, p: PendingTransaction | None, i: int, reply: Reply) -> None:
        self.greeting = reply
        if reply.code == 220:
            self._to(Input.ACCEPTED)
            self._send(self._ehlo, Cmd.EHLO)
        elif reply.code >= 400:
            self._refused(reply)
        else:
            raise RemoteProtocolError(f"unexpected greeting: {reply}")

    def _on_ehlo(self, p: PendingTransaction | None, i: int, reply: Reply) -> None:
        if reply.code // 100 == 2:
            self._established(
                Capabilities.from_ehlo(reply) if self._state is State.EHLO else HELO_CAPABILITIES
            )
        elif reply.code >= 500 and self._state is State.EHLO:
            self._to(Input.FALLBACK)
            self._send(self._helo, Cmd.HELO)
        else:
            self._refused(reply)

    def _established(self, caps: Capabilities) -> None:
        self.capabilities = caps
        self._pipelining = caps.pipelining
        if not self.tls_active and self._starttls != "never":
            if caps.starttls:
                self._to(Input.TLS)
                self._send(commands.STARTTLS, Cmd.STARTTLS)
                return
            if self._starttls == "required":
                self._close(TlsError("the server does not offer STARTTLS"), polite=True)
                return
        self._to(Input.ACCEPTED)
        self._events.append(ev.Ready(caps))

    def _on_starttls(self, p: PendingTransaction | None, i: int, reply: Reply) -> None:
        if reply.code == 220:
            if self._parser.buffered:
                raise RemoteProtocolError("bytes after the 220 to STARTTLS (response injection)")
            self._to(Input.TLS_GO)
            self._events.append(ev.StartTlsNow())
        elif self._starttls == "required":
            self._close(TlsError(f"STARTTLS refused: {reply}"), polite=True)
        else:
            self._to(Input.PLAIN)
            self._events.append(ev.Ready(self.capabilities))

    def _refused(self, reply: Reply) -> None:
        self._events.append(ev.Refused(reply))
        self._close(None, reply=reply, polite=reply.code != 421)

    # -- plumbing ---------------------------------------------------------------

    def _to(self, event: Input) -> None:
        self._state = transition(self._state, event)

    def _close(
        self, error: BaseException | None, *, reply: Reply | None = None, polite: bool = False
    ) -> None:
        """Become unusable: report the unsure and undecided transactions, once."""
        if self._state is _CLOSED:
            return
        # While the transport is paused it holds more than its high-water mark, so the last
        # bytes handed out (the end of data, then at most a small command group) never left.
        unsure = None if self._paused else self._dot
        undecided: list[Transaction] = []
        for _, p, _ in self._inflight:
            if p is not None and not p.done and p is not unsure and p.txn not in undecided:
                undecided.append(p.txn)
        undecided.extend(t.txn for t in self._todo if isinstance(t, PendingTransaction))
        self._inflight.clear()
        self._todo.clear()
        self._out = [commands.QUIT] if polite else []
        self._dot = self._dot_queued = None
        self._state = transition(self._state, Input.LOST)
        self._events.append(
            ev.Closed(error, unsure.txn if unsure else None, tuple(undecided), reply)
        )
