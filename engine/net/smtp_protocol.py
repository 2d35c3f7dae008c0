"""``SmtpSession``: the asyncio driver around the sans-IO ``ClientConnection``.

It only moves bytes and events: ``data_received`` -> ``receive_data`` -> drain
events -> resolve futures -> ``transport.writelines(data_to_send())``, the last
step once per loop iteration (see ``_flush``). There is
no parsing and no reply-code logic here. The machine reports its deadline
(``waiting_for``); one ``loop.call_at`` timer enforces it, and it is re-armed
lazily: progress only moves a float, the timer re-schedules itself when it
fires early. ``pause_writing``/``resume_writing`` hold bytes in the machine and
switch it to the ``data_block`` timeout. ssl and OS exceptions are converted to
``engine.errors`` once, by ``tls.convert_error``. Works on the default loop and on uvloop (which
this module does not import).

TLS policies: "none" never sends STARTTLS; "opportunistic" sends it when
offered, without verification, and when the handshake fails reconnects once in
plain text with ``tls_fallback = True`` (Postfix "may"); "required" must
succeed, unverified; "verify" must succeed and verify ``server_name``. A peer
that answers STARTTLS with extra plaintext bytes (response injection) is a
``RemoteProtocolError``, never a reason to fall back.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import deque
from collections.abc import Sequence
from dataclasses import fields
from typing import cast

from engine.config import SmtpConfig, TlsPolicy
from engine.errors import ConnectError, LocalProtocolError, TlsError, TransportError
from engine.net.tls import STARTTLS_MODES, HandshakeFailed, client_context, convert_error
from engine.smtp.client import ClientConnection, StartTls
from engine.smtp.extensions import HELO_CAPABILITIES, Capabilities
from engine.smtp.replies import Reply
from engine.smtp.states import Closed, Event, NoopDone, Ready, Refused, StartTlsNow, TransactionDone
from engine.smtp.transaction import SessionLost, SessionRefused, Transaction, TransactionResult


class SmtpSession(asyncio.Protocol):
    """One SMTP connection, reused for many pipelined transactions."""

    def __init__(self, config: SmtpConfig, server_name: str, mode: StartTls) -> None:
        self._loop = asyncio.get_running_loop()
        self._config = config
        self._conn = ClientConnection(config, starttls=mode)
        self._transport: asyncio.Transport | None = None
        self._futures: dict[Transaction, asyncio.Future[TransactionResult]] = {}
        self._noops: deque[asyncio.Future[Reply]] = deque()
        self._setup: asyncio.Future[Ready | StartTlsNow] = self._loop.create_future()
        self._closed: asyncio.Future[None] = self._loop.create_future()
        self._lost: Closed | None = None
        self._paused = False
        self._flush_soon = False
        self._timer: asyncio.TimerHandle | None = None
        self._progress = -1  # the machine's ``progress`` at ``_progress_at``
        self._progress_at = 0.0
        timeouts = config.timeouts
        self._tick = min(getattr(timeouts, f.name) for f in fields(timeouts) if f.name != "connect")
        self.server_name = server_name
        self.capabilities: Capabilities = HELO_CAPABILITIES
        self.greeting: Reply | None = None
        self.tls_active = False
        self.tls_fallback = False
        self.peer: tuple[str, int] = ("", 0)
        self.transactions = 0
        self.last_used = self._loop.time()

    def __repr__(self) -> str:
        return f"<SmtpSession {self.server_name} {self.peer} {self._conn!r} outstanding={self.outstanding}>"

    @classmethod
    async def connect(
        cls,
        address: str,
        port: int,
        *,
        server_name: str,
        config: SmtpConfig,
        tls_policy: TlsPolicy | None = None,
        ssl_context: ssl.SSLContext | None = None,
        local_address: str | None = None,
    ) -> SmtpSession:
        """Connect, read the greeting, EHLO (HELO fallback), STARTTLS per policy."""
        policy = tls_policy or config.tls_policy
        context = ssl_context if ssl_context is not None else client_context(policy, config.ca_file)
        try:
            return await cls._open(
                address, port, server_name, config, STARTTLS_MODES[policy], context, local_address
            )
        except HandshakeFailed:
            if policy != "opportunistic":
                raise
        session = await cls._open(address, port, server_name, config, "never", None, local_address)
        session.tls_fallback = True
        return session

    @classmethod
    async def _open(
        cls,
        address: str,
        port: int,
        server_name: str,
        config: SmtpConfig,
        mode: StartTls,
        context: ssl.SSLContext | None,
        local_address: str | None,
    ) -> SmtpSession:
        session = cls(config, server_name, mode)
        local = (local_address, 0) if local_address else None
        try:
            async with asyncio.timeout(config.timeouts.connect):
                await session._loop.create_connection(
                    lambda: session, address, port, local_addr=local
                )
        except TimeoutError:
            raise ConnectError(
                f"connect to {address}:{port} timed out after {config.timeouts.connect:g}s"
            ) from None
        except OSError as exc:
            raise ConnectError(f"connect to {address}:{port}: {exc}") from exc
        try:
            await session._handshake(context)
        except BaseException:
            session.abort()
            raise
        return session

    async def _handshake(self, context: ssl.SSLContext | None) -> None:
        while True:
            event = await self._setup
            if isinstance(event, Ready):
                self.capabilities = event.capabilities
                self.greeting = self._conn.greeting
                self.tls_active = self._conn.tls_active
                self.last_used = self._loop.time()
                return
            self._setup = self._loop.create_future()
            await self._start_tls(context)

    async def _start_tls(self, context: ssl.SSLContext | None) -> None:
        transport = self._transport
        if transport is None or self._lost is not None:
            raise self._setup_error()
        if context is None:  # only policy "none" has no context, and it never sends STARTTLS
            raise TlsError("STARTTLS without an SSL context")
        try:
            new = await self._loop.start_tls(
                transport,
                self,
                context,
                server_hostname=self.server_name,
                ssl_handshake_timeout=self._config.timeouts.starttls,
            )
        except (OSError, TimeoutError) as exc:
            if self._lost is not None:
                raise self._setup_error() from exc  # e.g. plaintext injected during the handshake
            raise HandshakeFailed(f"TLS handshake with {self.server_name}: {exc}") from exc
        if new is None:
            raise HandshakeFailed(f"TLS handshake with {self.server_name}: transport closed")
        self._transport = new
        self._conn.start_tls_done()
        self._process()

    # -- public API -------------------------------------------------------------

    @property
    def usable(self) -> bool:
        return self._lost is None and self._conn.usable

    @property
    def outstanding(self) -> int:
        return len(self._futures)

    def submit(self, txn: Transaction) -> asyncio.Future[TransactionResult]:
        """Queue a transaction; never blocks. Pipelined when the server allows it."""
        future: asyncio.Future[TransactionResult] = self._loop.create_future()
        conn = self._conn
        if self._lost is not None or not conn.usable:
            future.set_exception(self._lost_error(unsure=False))
            return future
        futures = self._futures
        if txn in futures:
            raise LocalProtocolError("this transaction is already outstanding on the session")
        futures[txn] = future
        try:
            conn.submit(txn)
        except BaseException:
            del futures[txn]
            raise
        self.transactions += 1
        self._process()
        return future

    async def noop(self) -> Reply:
        if not self.usable:
            raise self._lost_error(unsure=False)
        future: asyncio.Future[Reply] = self._loop.create_future()
        self._noops.append(future)
        self._conn.noop()
        self._process()
        return await future

    async def quit(self) -> None:
        """QUIT after the outstanding transactions, bounded by the phase timeouts; never raises."""
        try:
            if self._conn.usable:
                self._conn.quit()
                self._process()
            if self._lost is None:
                wait = None if self._futures else self._config.timeouts.quit
                await asyncio.wait_for(asyncio.shield(self._closed), wait)
        except Exception:
            pass
        finally:
            self.abort()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()
        self._conn.connection_lost(TransportError("session aborted"))
        self._process()

    # -- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        self.peer = (peer[0], peer[1]) if peer else ("", 0)
        self._arm()

    def data_received(self, data: bytes) -> None:
        self._conn.receive_data(data)
        self._process()

    def eof_received(self) -> bool | None:
        self._conn.receive_data(b"")
        self._process()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._conn.connection_lost(convert_error(exc))
        self._process()

    def pause_writing(self) -> None:
        self._paused = True
        self._conn.writing_paused(True)
        self._arm()

    def resume_writing(self) -> None:
        self._paused = False
        self._conn.writing_paused(False)
        self._process()

    # -- events, writes and the deadline -----------------------------------------

    def _process(self) -> None:
        conn = self._conn
        events = conn.events()
        if events:
            self._dispatch(events)
        if not self._flush_soon:
            self._flush_soon = True
            self._loop.call_soon(self._flush)
        if conn.progress != self._progress:
            self._arm()

    def _dispatch(self, events: Sequence[Event]) -> None:
        futures = self._futures
        done = False
        for event in events:
            if isinstance(event, TransactionDone):
                result = event.result
                future = futures.pop(result.transaction, None)
                if future is not None and not future.done():
                    future.set_result(result)
                done = True
            elif isinstance(event, NoopDone):
                future_reply = self._noops.popleft()
                if not future_reply.done():
                    future_reply.set_result(event.reply)
            elif isinstance(event, Closed):
                self._on_closed(event)
            elif isinstance(event, Refused):
                if not self._setup.done():
                    self._setup.set_exception(SessionRefused(event.reply))
            elif not self._setup.done():  # Ready or StartTlsNow
                self._setup.set_result(event)
        if done:
            self.last_used = self._loop.time()

    def _flush(self) -> None:
        """Write what the machine holds, once per loop iteration.

        Deferred with call_soon, it runs after the tasks woken by the results just
        resolved, so a transaction they submit joins the body and end of data of
        the previous one in a single write (one round trip per message).
        """
        self._flush_soon = False
        if not self._paused and self._transport is not None:
            out = self._conn.data_to_send()
            if out:
                self._transport.writelines(out)

    def _on_closed(self, event: Closed) -> None:
        self._lost = event
        for txn in event.undecided:
            self._fail(txn, unsure=False)
        if event.unsure is not None:
            self._fail(event.unsure, unsure=True)
        for txn in list(self._futures):
            self._fail(txn, unsure=False)
        while self._noops:
            future = self._noops.popleft()
            if not future.done():
                future.set_exception(self._lost_error(unsure=False))
        if not self._setup.done():
            self._setup.set_exception(self._setup_error())
            self._setup.exception()  # connect() awaits it, or has already given up: never "unretrieved"
        if not self._closed.done():
            self._closed.set_result(None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        transport, self._transport = self._transport, None
        if transport is not None:
            out = self._conn.data_to_send()
            if out and not self._paused:
                transport.writelines(out)  # a polite QUIT
            if event.error is None or out:
                transport.close()
            else:
                transport.abort()  # timeout or garbage: do not wait for a flush

    def _fail(self, txn: Transaction, *, unsure: bool) -> None:
        future = self._futures.pop(txn, None)
        if future is not None and not future.done():
            future.set_exception(self._lost_error(unsure=unsure))

    def _lost_error(self, *, unsure: bool) -> SessionLost:
        lost = self._lost
        if lost is None:
            return SessionLost(TransportError("session is closing"), unsure=False)
        return SessionLost(lost.error, unsure=unsure, reply=lost.reply)

    def _setup_error(self) -> BaseException:
        lost = self._lost
        if lost is not None and lost.error is not None:
            return lost.error
        if lost is not None and lost.reply is not None:
            return SessionRefused(lost.reply)
        return TransportError(f"connection to {self.server_name} closed during session setup")

    def _arm(self) -> None:
        """The machine's deadline restarts now (its ``progress`` moved): note when.

        No deadline is computed here, as this runs for nearly every read. One
        timer per connection fires at most ``_tick`` (the shortest phase timeout)
        after it was armed and computes the deadline then: the time noted here
        plus the timeout of the phase waited for at that moment. Every deadline
        is at least ``_tick`` after the progress that started it, and the timer
        was armed at most ``_tick`` before that progress, so it always fires in
        time to re-arm itself for the exact deadline: never late, and no timer is
        cancelled or re-created per reply (that cost 0.4 us per read).
        """
        self._progress = self._conn.progress
        self._progress_at = self._loop.time()
        if self._timer is None and self._lost is None:
            self._timer = self._loop.call_at(self._progress_at + self._tick, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._lost is not None:
            return
        waiting = self._conn.waiting_for()
        if waiting is None:
            return  # idle: the next progress arms the timer again
        now = self._loop.time()
        deadline = self._progress_at + waiting[1]
        if now + 0.001 < deadline:
            self._timer = self._loop.call_at(min(deadline, now + self._tick), self._on_timer)
            return
        self._conn.timeout()
        self._process()
