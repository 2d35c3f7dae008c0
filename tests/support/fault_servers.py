"""Misbehaving peers for tests that drive ``bulkmail serve`` (worker processes): an SMTP server
that fails on purpose at one phase, and a redis-server that can be pushed into OOM, MISCONF
and read-only states and back.

``FaultSmtpServer`` runs its own event loop in a thread (the workers live in other
processes, so it cannot share the test's loop like ``sinks.ScriptedServer``) and binds a
fixed ``host:port``: ``bulkmail serve`` uses one SMTP port for every MX, so each fault gets
an address of its own (127.0.0.5, .6, ...) on the world's port.

    with FaultSmtpServer("127.0.0.5", port, greeting=b"421 4.3.2 busy\\r\\n") as server:
        ...; server.connections, server.closed_by_client, server.messages, server.open

It speaks just enough SMTP (EHLO without PIPELINING, MAIL, RCPT, DATA, RSET, NOOP, QUIT) and
replaces the reply of one phase: ``greeting``, ``ehlo``, ``mail``, ``rcpt``, ``data`` (the 354)
or ``end`` (the reply to the final "."). A reply is bytes sent as is, ``HANG`` (say nothing,
keep reading until the client gives up) or ``CLOSE`` (close without a word). After a greeting
other than 220 it answers QUIT with 221 and anything else with 503.

``FaultRedis`` wraps ``engine.queue.embedded.RedisProcess`` (a server we start, stopped by
PID) with the faults of RELIABILITY.md 4.1 #7 that Redis 7.0 can be put into without root
tricks: ``oom()`` (maxmemory 1, noeviction), ``misconf()`` (an RDB save that fails because
``dump.rdb`` is a directory, with stop-writes-on-bgsave-error), ``readonly()`` (a replica of
a port nobody listens on), each undone by ``heal()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import redis

from engine.queue.embedded import RedisProcess
from tests.support.ports import free_port
from tests.support.waiting import wait_until

HANG = b"<hang>"
CLOSE = b"<close>"
PHASES = ("greeting", "ehlo", "mail", "rcpt", "data", "end")
NORMAL = {
    "greeting": b"220 fault.test ESMTP\r\n",
    "ehlo": b"250-fault.test\r\n250 8BITMIME\r\n",
    "mail": b"250 2.1.0 ok\r\n",
    "rcpt": b"250 2.1.5 ok\r\n",
    "data": b"354 go ahead\r\n",
    "end": b"250 2.0.0 queued\r\n",
}
MAX_LINE = 1 << 20


class FaultSmtpServer:
    def __init__(self, host: str, port: int, **replies: bytes) -> None:
        unknown = set(replies) - set(PHASES)
        if unknown:
            raise ValueError(f"unknown phase(s) {sorted(unknown)}; phases: {PHASES}")
        self.host, self.port = host, port
        self.replies: dict[str, bytes] = {**NORMAL, **replies}
        self._lock = threading.Lock()
        self._connections = 0
        self._closed_by_client = 0
        self._open = 0
        self._messages: list[bytes] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._stopping: asyncio.Event | None = None

    def __repr__(self) -> str:
        faults = {p: r for p, r in self.replies.items() if r != NORMAL[p]}
        return f"<FaultSmtpServer {self.host}:{self.port} {faults} connections={self.connections}>"

    # ---- what happened ------------------------------------------------------

    @property
    def connections(self) -> int:
        with self._lock:
            return self._connections

    @property
    def closed_by_client(self) -> int:
        """Connections the client ended (EOF or reset) while the server still listened."""
        with self._lock:
            return self._closed_by_client

    @property
    def open(self) -> int:
        with self._lock:
            return self._open

    @property
    def messages(self) -> list[bytes]:
        """Message data received up to the final "." (whatever the reply to it was)."""
        with self._lock:
            return list(self._messages)

    # ---- lifecycle ----------------------------------------------------------

    def start(self) -> FaultSmtpServer:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name=f"fault-smtp-{self.host}", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._bind(), loop).result(timeout=10)
        return self

    async def _bind(self) -> None:
        self._stopping = asyncio.Event()
        self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=MAX_LINE)

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        self._loop = self._thread = None

    async def _shutdown(self) -> None:
        assert self._server is not None and self._stopping is not None
        self._server.close()
        self._stopping.set()
        for writer in list(self._writers):
            writer.close()
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()

    def __enter__(self) -> FaultSmtpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- one connection -----------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self._connections += 1
            self._open += 1
        self._writers.add(writer)
        client_closed = False
        try:
            client_closed = await self._dialogue(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            client_closed = True
        finally:
            self._writers.discard(writer)
            stopping = self._stopping is not None and self._stopping.is_set()
            with self._lock:
                self._open -= 1
                if client_closed and not stopping:
                    self._closed_by_client += 1
            writer.close()

    async def _reply(self, phase: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool | None:
        """Send the phase's reply; True when the client closed (a hang ends that way), False to
        close from our side, None to go on."""
        reply = self.replies[phase]
        if reply == HANG:
            return await self._hang(reader)
        if reply == CLOSE:
            return False
        writer.write(reply)
        await writer.drain()
        return None

    async def _hang(self, reader: asyncio.StreamReader) -> bool:
        """Say nothing; read (and drop) until the client closes or the server stops."""
        assert self._stopping is not None
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            while True:
                read = asyncio.ensure_future(reader.read(65536))
                done, _ = await asyncio.wait({read, stop}, return_when=asyncio.FIRST_COMPLETED)
                if read not in done:
                    read.cancel()
                    return False
                if not read.result():
                    return True
        finally:
            stop.cancel()

    async def _dialogue(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Returns True when the client ended the connection."""
        ended = await self._reply("greeting", reader, writer)
        if ended is not None:
            return ended
        refused = not self.replies["greeting"].startswith(b"220")
        while True:
            line = await reader.readline()
            if not line:
                return True
            verb = line[:4].upper()
            if verb == b"QUIT":
                writer.write(b"221 2.0.0 bye\r\n")
                await writer.drain()
                return True
            if refused:
                writer.write(b"503 5.5.1 no service\r\n")
                await writer.drain()
                continue
            phase = {b"EHLO": "ehlo", b"HELO": "ehlo", b"MAIL": "mail", b"RCPT": "rcpt", b"DATA": "data"}.get(verb)
            if phase is None:
                writer.write(b"250 2.0.0 ok\r\n")  # RSET, NOOP
                await writer.drain()
                continue
            ended = await self._reply(phase, reader, writer)
            if ended is not None:
                return ended
            if phase == "data" and self.replies["data"].startswith(b"354"):
                data = await reader.readuntil(b"\r\n.\r\n")
                with self._lock:
                    self._messages.append(data)
                ended = await self._reply("end", reader, writer)
                if ended is not None:
                    return ended


# -------------------------------------------------------------------------------------------------
# A redis-server that can be put into error states


class FaultRedis:
    """A private redis-server (AOF, ``appendfsync always``) on a free loopback port."""

    def __init__(self, directory: Path, *, extra: Mapping[str, str] | None = None,
                 extra_lines: list[str] | None = None, admin_url: str | None = None) -> None:
        self.process = RedisProcess(directory, port=free_port(), extra=dict(extra or {}),
                                    extra_lines=list(extra_lines or []))
        self._admin_url = admin_url  # with ACL users: a URL allowed to run CONFIG/REPLICAOF

    @property
    def url(self) -> str:
        return self.process.url

    @property
    def directory(self) -> Path:
        return self.process.directory

    def start(self) -> FaultRedis:
        self.process.start()
        return self

    def stop(self) -> None:
        """Stop the server (by PID); first undo a MISCONF, or redis-server would refuse to shut
        down without its final RDB save (and be killed only after RedisProcess's timeout)."""
        if (self.directory / "dump.rdb").is_dir():
            with contextlib.suppress(redis.RedisError, OSError), self.admin() as client:
                client.config_set("save", "")
        self.process.stop()

    def __enter__(self) -> FaultRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @contextlib.contextmanager
    def admin(self) -> Iterator[redis.Redis]:
        client = redis.Redis.from_url(self._admin_url or self.url, decode_responses=True)
        try:
            yield client
        finally:
            client.close()

    def info(self, section: str) -> dict[str, Any]:
        with self.admin() as client:
            return dict(client.info(section))

    # ---- faults -------------------------------------------------------------

    def oom(self) -> None:
        """Every command that may grow memory fails with OOM (noeviction is RedisProcess's policy)."""
        with self.admin() as client:
            client.config_set("maxmemory", "1")

    def misconf(self) -> None:
        """Writes fail with MISCONF: an RDB save point plus a save that cannot rename its file."""
        dump = self.directory / "dump.rdb"
        dump.mkdir(exist_ok=True)
        (dump / "keep").write_text("a directory where redis wants its dump file\n")
        with self.admin() as client:
            client.config_set("stop-writes-on-bgsave-error", "yes")
            client.config_set("save", "3600 1")
            client.bgsave()
        wait_until(lambda: self.info("persistence")["rdb_last_bgsave_status"] == "err", 10,
                   what="the failed RDB save")

    def readonly(self) -> None:
        """Writes fail with READONLY: the server becomes a replica of a master that is not there."""
        with self.admin() as client:
            client.replicaof("127.0.0.1", str(free_port()))

    def heal(self) -> None:
        """Undo every fault (each step is harmless when its fault is not set)."""
        with self.admin() as client:
            client.config_set("maxmemory", "0")
            if client.info("replication")["role"] != "master":
                client.replicaof("NO", "ONE")
            if (self.directory / "dump.rdb").is_dir():
                shutil.rmtree(self.directory / "dump.rdb")
                client.config_set("save", "")
                wait_until(lambda: self.info("persistence")["rdb_bgsave_in_progress"] == 0, 10,
                           what="no RDB save running")
                client.bgsave()
                wait_until(lambda: self.info("persistence")["rdb_last_bgsave_status"] == "ok", 10,
                           what="a successful RDB save")


@contextlib.contextmanager
def fault_redis_servers(base: Path, users: list[str] | None = None) -> Iterator[Callable[..., FaultRedis]]:
    """``make(**config) -> FaultRedis``, started, each in a directory of its own under ``base``,
    stopped on exit. ``users``: ACL lines for every server; the faults are set through the
    plain URL (the ``default`` user), so keep that one allowed to run CONFIG and REPLICAOF."""
    started: list[FaultRedis] = []

    def make(**config: str) -> FaultRedis:
        server = FaultRedis(base / f"redis{len(started)}", extra=config, extra_lines=users).start()
        started.append(server)
        return server

    try:
        yield make
    finally:
        for server in started:
            server.stop()
