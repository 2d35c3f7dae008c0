"""``ClientConnection``: the sans-IO SMTP client (RFC 5321, PIPELINING RFC 2920, STARTTLS RFC 3207).

No asyncio, no socket, no ssl, no clock: bytes and calls in, events and bytes
out, so every behaviour is testable byte for byte. The driver
(``engine.net.smtp_protocol``) is a thin loop around it::

    conn = ClientConnection(config, starttls="offered")
    conn.receive_data(data)     # bytes from the peer; b"" means EOF
    conn.next_event()           # -> Event | None: drain after every call
    conn.data_to_send()         # -> list[bytes] for transport.writelines
    conn.submit(txn)            # READY only; transactions are pipelined
    conn.noop(); conn.quit()
    conn.start_tls_done()       # after StartTlsNow, once the handshake succeeded
    conn.writing_paused(flag)   # transport flow control (the data_block timeout)
    conn.waiting_for()          # -> (phase, seconds) | None: the deadline to arm;
    conn.replies                #    re-arm it whenever this count moves
    conn.timeout()              # the deadline fired
    conn.connection_lost(exc)   # the transport died (exc None: EOF)

Events are defined in ``states`` (imported here as ``ev``). Protocol errors from the peer never raise:
they close with a ``RemoteProtocolError``. Misuse raises ``LocalProtocolError``.

Writes. With PIPELINING, [RSET] MAIL, every RCPT and DATA go in one write;
after the 354, the body, the end of data and the next transaction's group go
in one write (RFC 2920 lets DATA end a group and message content start one).
Without it, one command per round trip. RSET is lazy: written before the next
MAIL only when the previous transaction ended before its end of data (MAIL,
every RCPT or DATA refused) or ended with an empty one (354 with no recipient
accepted). A reply to a real end of data, 2xx or not, ends the transaction
(RFC 5321 4.1.1.4), so the next group can follow the "." at once. Nothing
follows STARTTLS in its write.
"""

from __future__ import annotations

from collections import deque
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
from engine.smtp import commands
from engine.smtp import states as ev
from engine.smtp.extensions import HELO_CAPABILITIES, Capabilities
from engine.smtp.replies import Reply, ReplyParser
from engine.smtp.states import Cmd, Input, State, transition
from engine.smtp.transaction import PendingTransaction, Transaction, TransactionResult

StartTls = Literal["never", "offered", "required"]
_Entry = tuple[Cmd, PendingTransaction | None, int]


class ClientConnection:
    def __init__(self, config: SmtpConfig, *, starttls: StartTls = "never") -> None:
        self._limits = config.limits
        self._timeouts = {f.name: getattr(config.timeouts, f.name) for f in fields(config.timeouts)}
        self._ehlo = commands.hello("EHLO", config.helo)
        self._helo = commands.hello("HELO", config.helo)
        self._starttls = starttls
        self._parser = ReplyParser(config.limits)
        self._state = State.GREETING
        self._inflight: deque[_Entry] = deque([(Cmd.GREETING, None, 0)])
        self._todo: deque[PendingTransaction | Cmd] = deque()
        self._out: list[bytes] = []
        self._events: deque[ev.Event] = deque()
        self.capabilities: Capabilities = HELO_CAPABILITIES
        self._rset = False
        self._paused = False
        self._dot_queued: PendingTransaction | None = None  # end of data in _out
        self._dot: PendingTransaction | None = None  # end of data handed out, no reply yet
        self.replies = 0
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
        return self._state is State.READY

    def next_event(self) -> ev.Event | None:
        return self._events.popleft() if self._events else None

    def data_to_send(self) -> list[bytes]:
        out = self._out
        if out:
            self._out = []
            if self._dot_queued is not None:
                self._dot, self._dot_queued = self._dot_queued, None
        return out

    def waiting_for(self) -> tuple[str, float] | None:
        """The phase whose reply we wait for and its timeout; None when idle."""
        if self._state is State.CLOSED or self._state is State.HANDSHAKE:
            return None  # the handshake is bounded by the driver (ssl_handshake_timeout)
        if self._paused:
            return ("data_block", self._timeouts["data_block"])
        if self._inflight:
            phase = self._inflight[0][0].phase
            return (phase, self._timeouts[phase])
        return None

    # -- what the driver tells ------------------------------------------------

    def receive_data(self, chunk: bytes) -> None:
        if self._state is State.CLOSED:
            return
        if not chunk:
            self.connection_lost(None)
            return
        if self._state is State.HANDSHAKE:
            self._close(RemoteProtocolError("plaintext after the 220 to STARTTLS (injection)"))
            return
        self._parser.feed(chunk)
        try:
            self._read_replies()
        except RemoteProtocolError as exc:
            self._close(exc)
            return
        self._pump()

    def _read_replies(self) -> None:
        parser = self._parser
        inflight = self._inflight
        while self._state is not State.CLOSED and self._state is not State.HANDSHAKE:
            if not inflight:
                reply = parser.next_reply("")
                if reply is None:
                    return
                if reply.code != 421:
                    raise RemoteProtocolError(f"reply with no command waiting for it: {reply}")
                self._close(None, reply=reply)
                return
            cmd, p, i = inflight[0]
            reply = parser.next_reply(cmd.verb)
            if reply is None:
                return
            inflight.popleft()
            self.replies += 1
            if reply.code == 421 and cmd is not Cmd.QUIT:
                self._on_421(cmd, p, i, reply)
            else:
                self._handlers[cmd](p, i, reply)

    def start_tls_done(self) -> None:
        if self._state is not State.HANDSHAKE:
            raise LocalProtocolError(f"start_tls_done() in state {self._state.name}")
        self._parser = ReplyParser(self._limits)
        self.tls_active = True
        # RFC 3207 4.2: forget everything learnt in plain text
        self.capabilities = HELO_CAPABILITIES
        self._to(Input.TLS_DONE)
        self._send(self._ehlo, Cmd.EHLO)

    def writing_paused(self, paused: bool) -> None:
        self._paused = paused

    def timeout(self) -> None:
        waiting = self.waiting_for()
        if waiting is not None:
            self._close(SmtpTimeout(*waiting))

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._state is State.CLOSED:
            return
        # after QUIT, EOF is the expected end (pump never leaves work queued behind an empty FIFO)
        if self._state is State.QUIT and all(cmd is Cmd.QUIT for cmd, _, _ in self._inflight):
            self._close(None)
        else:
            self._close(exc or TransportError("connection closed by the server"))

    # -- what the engine asks -------------------------------------------------

    def submit(self, txn: Transaction) -> None:
        if self._state is not State.READY:
            raise LocalProtocolError(f"submit() in state {self._state.name}")
        if not txn.envelope.recipients:
            raise LocalProtocolError("a transaction needs at least one recipient")
        prepared = commands.prepare(txn, self.capabilities)
        if isinstance(prepared, TransactionResult):  # refused locally: nothing to write
            self._events.append(ev.TransactionDone(prepared))
            return
        self._todo.append(prepared)
        self._pump()

    def noop(self) -> None:
        if self._state is not State.READY:
            raise LocalProtocolError(f"noop() in state {self._state.name}")
        self._todo.append(Cmd.NOOP)
        self._pump()

    def quit(self) -> None:
        """QUIT after what was submitted; before READY, QUIT and close at once."""
        if self._state is State.READY:
            self._to(Input.QUIT)
            self._todo.append(Cmd.QUIT)
            self._pump()
        elif self._state is not State.QUIT and self._state is not State.CLOSED:
            self._close(None, polite=self._state is not State.HANDSHAKE)

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

    # -- transactions -----------------------------------------------------------

    def _pump(self) -> None:
        """Write queued work as far as the rules above allow."""
        pipelining = self.capabilities.pipelining
        inflight = self._inflight
        todo = self._todo
        while todo and not (inflight and (not pipelining or inflight[-1][0] is Cmd.DATA)):
            item = todo.popleft()
            if item is Cmd.NOOP or item is Cmd.QUIT:
                self._send(commands.NOOP if item is Cmd.NOOP else commands.QUIT, item)
            elif isinstance(item, PendingTransaction):
                if self._rset:
                    self._rset = False
                    self._send(commands.RSET, Cmd.RSET)
                    if not pipelining:
                        todo.appendleft(item)
                        continue
                self._send(item.mail, Cmd.MAIL, item)
                if pipelining:  # the whole group: RCPT for each recipient not refused, DATA
                    for i, rcpt in enumerate(item.rcpts):
                        if isinstance(rcpt, bytes):
                            self._send(rcpt, Cmd.RCPT, item, i)
                    self._send(commands.DATA, Cmd.DATA, item)

    def _send_next(self, p: PendingTransaction) -> None:
        """Lock-step: the next RCPT, else DATA when a recipient was accepted, else done."""
        rcpt = p.next_rcpt()
        if rcpt is not None:
            self._send(rcpt[1], Cmd.RCPT, p, rcpt[0])
        elif p.accepted:
            self._send(commands.DATA, Cmd.DATA, p)
        else:
            self._finish(p)

    def _on_mail(self, p: PendingTransaction | None, i: int, reply: Reply) -> None:
        assert p is not None
        p.mail_reply = reply
        if not self.capabilities.pipelining:
            if reply.code // 100 == 2:
                self._send_next(p)
            else:
                self._finish(p)

    def _on_rcpt(self, p: PendingTransaction | None, i: int, reply: Reply) -> None:
        assert p is not None
        p.record("RCPT", i, reply)
        if not self.capabilities.pipelining:
            self._send_next(p)

    def _on_data(self, p: PendingTransaction | None, i: int, reply: Reply) -> None:
        assert p is not None
        p.data_reply = reply
        if reply.code != 354:
            self._finish(p)
            return
        mail = p.mail_reply
        if p.accepted and mail is not None and mail.code // 100 == 2:
            self._out.extend(p.chunks)
        else:
            # all recipients refused, yet 354: end the (empty) data at once (RFC 2920 3.1)
            p.empty = self._rset = True
            self._out.append(commands.END_OF_DATA)
        self._inflight.append((Cmd.DOT, p, 0))
        self._dot_queued = p

    def _on_data_end(self, p: PendingTransaction | None, i: int, reply: Reply) -> None:
        assert p is not None
        p.final_reply = reply
        self._dot = None
        self._finish(p)

    def _on_rset(self, p: PendingTransaction | None, i: int, reply: Reply) -> None:
        """Ignored: a refused RSET shows up in the next MAIL's reply."""

    def _on_noop(self, p: PendingTransaction | None, i: int, reply: Reply) -> None:
        self._events.append(ev.NoopDone(reply))

    def _on_quit(self, p: PendingTransaction | None, i: int, reply: Reply) -> None:
        self._close(None)

    def _on_421(self, cmd: Cmd, p: PendingTransaction | None, i: int, reply: Reply) -> None:
        """RFC 5321 3.8: the server is closing. The command it answered gets it, the rest is undecided."""
        if self._state not in (State.READY, State.QUIT):
            self._refused(reply)
            return
        if p is not None:
            p.record(cmd.verb, i, reply)
            self._dot = None if cmd is Cmd.DOT else self._dot
            self._finish(p, reply)
        elif cmd is Cmd.NOOP:
            self._events.append(ev.NoopDone(reply))
        self._close(None, reply=reply)

    def _finish(self, p: PendingTransaction, fallback: Reply | None = None) -> None:
        if p.final_reply is None:  # ended before its end of data: MAIL state may linger
            self._rset = True
        self._events.append(ev.TransactionDone(p.result(fallback)))

    # -- plumbing ---------------------------------------------------------------

    def _send(self, line: bytes, cmd: Cmd, p: PendingTransaction | None = None, i: int = 0) -> None:
        self._out.append(line)
        self._inflight.append((cmd, p, i))

    def _to(self, event: Input) -> None:
        self._state = transition(self._state, event)

    def _close(
        self, error: BaseException | None, *, reply: Reply | None = None, polite: bool = False
    ) -> None:
        """Become unusable: report the unsure and undecided transactions, once."""
        if self._state is State.CLOSED:
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
