"""A real DNS server on loopback (UDP and TCP, one port) for tests, the demo and benchmarks.

It speaks the wire protocol through dnspython's message parser, runs its own
event loop in a background thread (so synchronous tests and scripts can use it),
and can misbehave on purpose for the RELIABILITY 3.6 cases:

    server = DnsServer().start()           # 127.0.0.1, free port; server.address
    server.add_mx("a.test", [(10, "mx1.a.test"), (20, "mx2.a.test")], ttl=60)
    server.add_a("mx1.a.test", ["127.0.0.2"])
    server.null_mx("null.test"); server.servfail("sf.test"); server.no_answer("slow.test")
    server.truncate("big.test")            # TC=1 over UDP, the full answer over TCP
    server.spoof("a.test")                 # a wrong-ID bogus answer first, then the real one
    server.add_rule(lambda qname, qtype: ["127.0.0.9"] if qname.endswith(".gen.test") and qtype == "A" else None)
    server.query_count("a.test", "MX"); server.clear(); server.stop()

Unknown names get NXDOMAIN, and names without the asked type NODATA, both with an
SOA in the authority section (TTL ``negative_ttl``) so clients can cache them.
CNAMEs are chained inside the answer, as a recursive resolver would.

A rule is ``callable(qname, qtype) -> None | list[str] | str | Answer``: None passes
to the next rule and then the static records, a list is the rdata texts of
``qtype`` (empty: NODATA), a str is an action (see ACTIONS).

Zone files (``--zone FILE.json`` or ``load_zone``)::

    {"ttl": 300,                                    # default TTL, optional
     "negative_ttl": 60,                            # SOA TTL of negative answers, optional
     "records": [
        {"name": "a.test", "type": "MX", "data": ["10 mx1.a.test", "20 mx2.a.test"], "ttl": 60},
        {"name": "mx1.a.test", "type": "A", "data": ["127.0.0.2"]},
        {"name": "null.test", "type": "MX", "data": ["0 ."]},
        {"name": "sf.test", "action": "servfail"},      # any of ACTIONS; optional "type"
     ],
     "patterns": [
        {"domain": "d{n}.demo.test", "count": 200, "mx": "mx{n%10}.demo.test", "a": "127.0.0.{10+n%10}"}
     ]}

A pattern expands, for n in range(start, start+count) (start defaults to 0), into
records: ``domain`` gets MX 10 ``mx`` (a list gives preferences 10, 20, ...) and
each MX host gets A ``a`` / AAAA ``aaaa``; without ``mx`` the A/AAAA go on the
domain itself (implicit MX). ``{...}`` holds integer arithmetic on ``n``
(+ - * // %). Run as a process for the demo and benchmarks::

    python -m tests.support.dns_server --port 5353 --zone zone.json   # prints "ready HOST PORT"
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import threading
from collections.abc import Sequence
from typing import Any, cast

from tests.support.dns_zone import ACTIONS, Answer, Rule, Zone

__all__ = ["ACTIONS", "Answer", "DnsServer", "Rule", "Zone", "main"]


class DnsServer(Zone):
    """A Zone served over UDP and TCP from a background thread with its own event loop."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, ttl: int = 300, negative_ttl: int = 60
    ) -> None:
        super().__init__(ttl=ttl, negative_ttl=negative_ttl)
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    # ----------------------------------------------------------------- lifecycle
    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def start(self) -> DnsServer:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="dns-server", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._bind(), loop).result(timeout=10)
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _bind(self) -> None:
        """UDP and TCP on the same port; with port 0, retry until both get one."""
        loop = asyncio.get_running_loop()
        for _ in range(20):
            udp, _protocol = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(self.host, self.port)
            )
            port = udp.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._serve_tcp, self.host, port)
            except OSError:
                udp.close()
                if self.port:
                    raise
                continue
            self._udp, self.port = udp, port
            return
        raise OSError("no free port for UDP and TCP together")

    async def _shutdown(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
        for writer in list(self._writers):
            writer.close()
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                size = int.from_bytes(await reader.readexactly(2), "big")
                for message in self.respond(await reader.readexactly(size), "tcp"):
                    writer.write(len(message).to_bytes(2, "big") + message)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self._server = server
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)  # 3.11's selector class isn't a subclass

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        assert self._transport is not None
        for message in self._server.respond(data, "udp"):
            self._transport.sendto(message, addr)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Loopback DNS server for bulkmail tests, demo and benchmarks"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port (printed)")
    parser.add_argument("--zone", help="JSON zone file (format in this module's docstring)")
    args = parser.parse_args(argv)
    server = DnsServer(host=args.host, port=args.port)
    if args.zone:
        server.load_zone_file(args.zone)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with server:
        print(f"ready {server.host} {server.port}", flush=True)
        while not stop.wait(1.0):  # a bounded wait lets the signal handler run promptly
            pass


if __name__ == "__main__":
    main()
