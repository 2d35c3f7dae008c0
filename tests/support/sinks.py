"""SMTP peers for tests: a recording aiosmtpd sink with fault injection, and a raw scripted server.

``RecordingSink(host, port, **options)`` runs aiosmtpd in its own thread
(``aiosmtpd.controller.Controller``), so it serves clients on any event loop,
uvloop included. Every message it accepts is kept, in order, thread-safely.

    sink = RecordingSink("127.0.0.2", port, rcpt={"bad": "550 5.1.1 no such user"})
    sink.start() ... sink.stop()            # or the ``smtp_sink`` fixture, stopped at teardown
    sink.messages -> list[Received]         # mail_from, rcpt_tos, data, peer, options, tls, connection
    sink.connections -> int                 # client connections accepted so far
    sink.max_concurrent -> int              # most connections open at once (limits tests)
    sink.commands -> list[tuple[int, str]]  # (connection, verb) for MAIL RCPT DATA RSET NOOP QUIT
    sink.wait_for_messages(n) -> list[Received]   # blocking, bounded (for worker processes)

Options:
    pipelining=True        announce PIPELINING (aiosmtpd itself does not, though it reads pipelined input)
    hide=("SIZE", ...)     EHLO keywords to remove;  extra=("DSN", ...): keywords to add
    smtputf8=True          announce SMTPUTF8 and accept UTF-8 addresses
    size_limit=33554432    the SIZE announced and enforced (None: no SIZE)
    tls_context=None       offer STARTTLS with this server context;  require_starttls=False
Faults (each reply is a full line such as "451 4.3.0 try later"):
    mail={substring: reply}   reply to MAIL when the sender contains substring
    rcpt={substring: reply}   reply to RCPT when the recipient contains substring
    data={b"substring": reply} reply to the end of data when the message contains it
    close_after=N          per connection, the MAIL after N accepted messages gets 421 and a close
    drop_at="RCPT"         close without replying at the first MAIL/RCPT/DATA/"." of each connection;
                           with "." the message is recorded first (the RFC 1047 duplicate window)

``ScriptedServer(*scripts)`` is a plain asyncio server in the test's own loop
for what aiosmtpd cannot be made to say: garbage, silence, injected bytes.
Connection n follows ``scripts[n]`` (the last one repeats); a script is a list
of ``send(bytes)``, ``expect(b"VERB")`` (read one line), ``read_until(b"...")``, ``read_any()``,
``close()``, ``hang()`` (stay silent) and ``stall()`` (stop reading) steps; after the last step it waits
for the client to close.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, SMTP

from tests.support.waiting import wait_until


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes  # as the sink reconstructed it: dot-unstuffed, CRLF line ends
    peer: tuple[str, int]
    mail_options: tuple[str, ...]
    rcpt_options: tuple[str, ...]
    tls: bool
    connection: int
    at: float = 0.0  # time.monotonic() when the end of data was accepted


class _SinkServer(SMTP):
    """One connection: counts its messages, closes after a 421, can drop without replying."""

    def __init__(self, sink: RecordingSink, number: int, **kwargs: Any) -> None:
        super().__init__(_Handler(sink), **kwargs)
        self.sink = sink
        self.number = number
        self.accepted = 0
        self.dropped = False

    def drop(self) -> None:
        self.dropped = True
        if self.transport is not None:
            self.transport.close()

    async def push(self, status: Any) -> None:
        if self.dropped:
            return
        await super().push(status)
        if str(status).startswith("421") and self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.sink._closed()
        super().connection_lost(exc)

    async def smtp_DATA(self, arg: str) -> None:
        self.sink._note(self, "DATA")
        if self.sink.drop_at == "DATA":
            self.drop()
            return
        await super().smtp_DATA(arg)


def _match(rules: Mapping[Any, str], value: Any) -> str | None:
    return next((reply for key, reply in rules.items() if key in value), None)


class _Handler:
    def __init__(self, sink: RecordingSink) -> None:
        self.sink = sink

    async def handle_EHLO(self, server: _SinkServer, session: Any, envelope: Any, hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname
        sink = self.sink
        hidden = {h.upper() for h in sink.hide}
        words = [r[4:] for r in responses if r[4:].split(" ")[0].upper() not in hidden]
        words[1:1] = [*(["PIPELINING"] if sink.pipelining else []), "ENHANCEDSTATUSCODES", *sink.extra]
        words = [w for w in words if w.upper() != "HELP"]
        return [f"250-{w}" for w in words[:-1]] + [f"250 {words[-1]}"]

    async def handle_MAIL(self, server: _SinkServer, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        sink = self.sink
        sink._note(server, "MAIL")
        if sink.close_after is not None and server.accepted >= sink.close_after:
            return "421 4.7.0 too many messages on this connection"
        if sink.drop_at == "MAIL":
            server.drop()
        reply = _match(sink.mail, address)
        if reply:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server: _SinkServer, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        sink = self.sink
        sink._note(server, "RCPT")
        if sink.drop_at == "RCPT":
            server.drop()
        reply = _match(sink.rcpt, address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: _SinkServer, session: Any, envelope: Any) -> str:
        sink = self.sink
        if sink.drop_at == ".":
            server.drop()
        reply = _match(sink.data, envelope.original_content)
        if reply:
            return reply
        server.accepted += 1
        peer = session.peer
        sink._record(
            Received(
                envelope.mail_from,
                tuple(envelope.rcpt_tos),
                envelope.original_content,
                (peer[0], peer[1]),
                tuple(envelope.mail_options),
                tuple(envelope.rcpt_options),
                session.ssl is not None,
                server.number,
                time.monotonic(),
            )
        )
        return f"250 2.0.0 Ok: queued as {server.number}.{server.accepted}"

    async def handle_RSET(self, server: _SinkServer, session: Any, envelope: Any) -> object:
        self.sink._note(server, "RSET")
        return MISSING  # aiosmtpd's default reply

    async def handle_NOOP(self, server: _SinkServer, session: Any, envelope: Any, arg: str) -> object:
        self.sink._note(server, "NOOP")
        return MISSING

    async def handle_QUIT(self, server: _SinkServer, session: Any, envelope: Any) -> object:
        self.sink._note(server, "QUIT")
        return MISSING


class RecordingSink:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        pipelining: bool = True,
        hide: Sequence[str] = (),
        extra: Sequence[str] = (),
        smtputf8: bool = True,
        size_limit: int | None = 33554432,
        tls_context: Any = None,
        require_starttls: bool = False,
        mail: Mapping[str, str] | None = None,
        rcpt: Mapping[str, str] | None = None,
        data: Mapping[bytes, str] | None = None,
        close_after: int | None = None,
        drop_at: str | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.pipelining, self.hide, self.extra = pipelining, tuple(hide), tuple(extra)
        self.mail, self.rcpt, self.data = dict(mail or {}), dict(rcpt or {}), dict(data or {})
        self.close_after, self.drop_at = close_after, drop_at
        self._server_options = {
            "enable_SMTPUTF8": smtputf8,
            "data_size_limit": size_limit,
            "tls_context": tls_context,
            "require_starttls": require_starttls,
            "hostname": "sink.test",
        }
        self._lock = threading.Lock()
        self._messages: list[Received] = []
        self._commands: list[tuple[int, str]] = []
        self._connections = 0
        self._open = 0
        self._max_open = 0
        self._controller = _Controller(self, host, port)

    def __repr__(self) -> str:
        return f"<RecordingSink {self.host}:{self.port} messages={len(self._messages)} connections={self._connections}>"

    def start(self) -> RecordingSink:
        self._controller.start()
        with self._lock:
            self._connections = 0  # the controller's own start-up probe does not count
            self._open = self._max_open = 0
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> RecordingSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def messages(self) -> list[Received]:
        with self._lock:
            return list(self._messages)

    @property
    def commands(self) -> list[tuple[int, str]]:
        with self._lock:
            return list(self._commands)

    @property
    def connections(self) -> int:
        with self._lock:
            return self._connections

    def wait_for_messages(self, count: int, timeout: float = 10.0) -> list[Received]:
        wait_until(lambda: len(self.messages) >= count, timeout, what=f"{count} messages at {self!r}")
        return self.messages

    @property
    def max_concurrent(self) -> int:
        """The most connections open at the same time so far."""
        with self._lock:
            return self._max_open

    def _closed(self) -> None:
        with self._lock:
            self._open -= 1

    def _new_server(self) -> _SinkServer:
        with self._lock:
            self._connections += 1
            self._open += 1
            self._max_open = max(self._max_open, self._open)
            number = self._connections
        return _SinkServer(self, number, **self._server_options)

    def _record(self, message: Received) -> None:
        with self._lock:
            self._messages.append(message)

    def _note(self, server: _SinkServer, verb: str) -> None:
        with self._lock:
            self._commands.append((server.number, verb))


class _Controller(Controller):
    def __init__(self, sink: RecordingSink, host: str, port: int) -> None:
        super().__init__(None, hostname=host, port=port, ready_timeout=10.0)
        self._sink = sink

    def factory(self) -> SMTP:
        return self._sink._new_server()


# -- a raw scripted server ------------------------------------------------------------

Step = tuple[str, bytes]


def send(data: bytes) -> Step:
    return ("send", data)


def expect(verb: bytes) -> Step:
    return ("expect", verb)


def read_any() -> Step:
    """Read whatever arrives next (e.g. a TLS ClientHello), without waiting for a line end."""
    return ("read", b"")


def read_until(marker: bytes) -> Step:
    """Read up to and including ``marker`` (e.g. the end of data)."""
    return ("until", marker)


def stall() -> Step:
    """Stop reading until the server is closed: the client's writes back up (flow control)."""
    return ("stall", b"")


def close() -> Step:
    return ("close", b"")


def hang() -> Step:
    return ("hang", b"")


class ScriptedServer:
    """``async with ScriptedServer(script, host=...) as server:`` then connect to ``server.port``."""

    def __init__(self, *scripts: Sequence[Step], host: str = "127.0.0.2", rcvbuf: int | None = None) -> None:
        self.scripts = scripts
        self.host = host
        self.rcvbuf = rcvbuf  # a small receive buffer makes stall() back the client up quickly
        self.port = 0
        self.connections = 0
        self.lines: list[bytes] = []  # every line the clients sent, in order
        self.mismatches: list[tuple[bytes, bytes]] = []  # (expected verb, line received)
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self._stopping = asyncio.Event()

    async def __aenter__(self) -> ScriptedServer:
        sock = socket.socket()
        if self.rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)  # inherited by accept()
        sock.bind((self.host, 0))
        self._server = await asyncio.start_server(self._serve, sock=sock)
        self.port = sock.getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self._stopping.set()
        for writer in self._writers:
            writer.close()  # the handlers see EOF and end on their own (cancelling them logs errors)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.append(writer)
        script = self.scripts[min(self.connections, len(self.scripts) - 1)]
        self.connections += 1
        try:
            for action, data in script:
                if action == "send":
                    writer.write(data)
                    await writer.drain()
                elif action == "expect":
                    line = await reader.readline()
                    self.lines.append(line)
                    if not line.upper().startswith(data.upper()):
                        self.mismatches.append((data, line))
                        return
                elif action == "until":
                    self.lines.append(await reader.readuntil(data))
                elif action == "read":
                    self.lines.append(await reader.read(65536))
                elif action == "close":
                    return
                elif action == "hang":
                    break
                elif action == "stall":
                    await self._stopping.wait()
            while await reader.read(65536):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)
