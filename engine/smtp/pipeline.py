"""Transactions on a READY session: what is written when, and what each reply does.

``Pipeline`` is the half of ``ClientConnection`` (``client``) that runs
transactions; it holds no state of its own (the attributes below are the
connection's) and is never used alone.

Writes. With PIPELINING, [RSET] MAIL, every RCPT and DATA go in one write;
after the 354, the body, the end of data and the next transaction's group go
in one write (RFC 2920 lets DATA end a group and message content start one).
Without it, one command per round trip. RSET is lazy: written before the next
MAIL only when the previous transaction ended before its end of data (MAIL,
every RCPT or DATA refused) or ended with an empty one (354 with no recipient
accepted). A reply to a real end of data, 2xx or not, ends the transaction
(RFC 5321 4.1.1.4), so the next group can follow the "." at once.

Replies. Each written command waits in ``_inflight`` with its transaction and
recipient index; the reply loop (``ClientConnection._read_replies``) pairs the
oldest with each reply and calls ``_on_<phase>``. With PIPELINING, MAIL and
RCPT replies are recorded inline in that loop (the same two lines as
``_on_mail`` and ``_on_rcpt``), saving a call per reply.
"""

from __future__ import annotations

from collections import deque

from engine.smtp import commands
from engine.smtp import states as ev
from engine.smtp.replies import Reply
from engine.smtp.states import Cmd, State
from engine.smtp.transaction import PendingTransaction

Entry = tuple[Cmd, PendingTransaction | None, int]  # a command waiting for its reply
_MAIL, _RCPT, _DATA = Cmd.MAIL, Cmd.RCPT, Cmd.DATA


class Pipeline:
    """The transaction half of ``ClientConnection``: queue, writes, reply handlers."""

    _state: State
    _pipelining: bool
    _inflight: deque[Entry]
    _todo: deque[PendingTransaction | Cmd]
    _out: list[bytes]
    _events: list[ev.Event]
    _rset: bool
    _dot_queued: PendingTransaction | None
    _dot: PendingTransaction | None
    progress: int

    def _close(
        self, error: BaseException | None, *, reply: Reply | None = None, polite: bool = False
    ) -> None:
        raise NotImplementedError

    def _refused(self, reply: Reply) -> None:
        raise NotImplementedError

    def _pump(self) -> None:
        """Write queued work as far as the rules above allow."""
        pipelining = self._pipelining
        inflight = self._inflight
        todo = self._todo
        while todo and not (inflight and (not pipelining or inflight[-1][0] is Cmd.DATA)):
            item = todo.popleft()
            if item is Cmd.NOOP or item is Cmd.QUIT:
                self._send(commands.NOOP if item is Cmd.NOOP else commands.QUIT, item)
                continue
            assert isinstance(item, PendingTransaction)
            if self._rset:
                self._rset = False
                self._send(commands.RSET, Cmd.RSET)
                if not pipelining:
                    todo.appendleft(item)
                    continue
            if pipelining:
                self._write_group(item)
            else:
                self._send(item.mail, Cmd.MAIL, item)

    def _write_group(self, p: PendingTransaction) -> None:
        """PIPELINING: MAIL, RCPT for each recipient not refused locally, and DATA."""
        out = self._out
        inflight = self._inflight
        if not inflight:  # a new wait begins: its deadline counts from now
            self.progress += 1
        out.append(p.mail)
        inflight.append((_MAIL, p, 0))
        for i, rcpt in enumerate(p.rcpts):
            if type(rcpt) is bytes:
                out.append(rcpt)
                inflight.append((_RCPT, p, i))
        out.append(commands.DATA)
        inflight.append((_DATA, p, 0))

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
        if not self._pipelining:
            if 200 <= reply.code < 300:
                self._send_next(p)
            else:
                self._finish(p)

    def _on_rcpt(self, p: PendingTransaction | None, i: int, reply: Reply) -> None:
        assert p is not None
        p.replies[i] = reply
        if 200 <= reply.code < 300:
            p.accepted += 1
        if not self._pipelining:
            self._send_next(p)

    def _on_data(self, p: PendingTransaction | None, i: int, reply: Reply) -> None:
        assert p is not None
        p.data_reply = reply
        if reply.code != 354:
            self._finish(p)
            return
        mail = p.mail_reply
        if p.accepted and mail is not None and 200 <= mail.code < 300:
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
        self._events.append(ev.new_transaction_done(p.result()))  # _finish, one call less

    def _on_rset(self, p: PendingTransaction | None, i: int, reply: Reply) -> None:
        """Ignored: a refused RSET shows up in the next MAIL's reply."""

    def _on_noop(self, p: PendingTransaction | None, i: int, reply: Reply) -> None:
        self._events.append(ev.NoopDone(reply))

    def _on_quit(self, p: PendingTransaction | None, i: int, reply: Reply) -> None:
        self._close(None)

    def _on_421(self, cmd: Cmd, p: PendingTransaction | None, i: int, reply: Reply) -> None:
        """RFC 5321 3.8: the server is closing. The command it answered gets it, the rest is undecided."""
        if self._state is not State.READY and self._state is not State.QUIT:
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
        self._events.append(ev.new_transaction_done(p.result(fallback)))

    def _send(self, line: bytes, cmd: Cmd, p: PendingTransaction | None = None, i: int = 0) -> None:
        if not self._inflight:  # a new wait begins: its deadline counts from now
            self.progress += 1
        self._out.append(line)
        self._inflight.append((cmd, p, i))
