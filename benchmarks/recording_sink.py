"""A minimal SMTP responder that timestamps every accepted message (workload d).

smtp-sink cannot say when it answered 250 to a given message, so the transactional
domain's MX is this process. For each message it writes ``<unix time> <recipient>``
(one line per recipient, the time taken right before the 250 to the end of data is
written) to ``--out``. It speaks just enough ESMTP for the senders measured here:
EHLO/HELO (PIPELINING, 8BITMIME, SIZE), MAIL, RCPT, DATA, RSET, NOOP, QUIT; commands
may arrive pipelined.

    python -m benchmarks.recording_sink --host 127.0.1.100 --port 2525 --out arrivals.txt
    # prints "ready HOST PORT", stops on SIGTERM
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from typing import TextIO

EHLO = b"250-recording-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SIZE 52428800\r\n250 ENHANCEDSTATUSCODES\r\n"
END = b"\r\n.\r\n"


class RecordingSmtp(asyncio.Protocol):
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.buffer = b""
        self.in_data = False
        self.rcpts: list[str] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(b"220 recording-sink ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        replies: list[bytes] = []
        while self.transport is not None:
            if self.in_data:
                # the DATA reply's CRLF precedes the body, so a message ending "\r\n.\r\n" or an empty one ".\r\n"
                if self.buffer.startswith(b".\r\n"):
                    end = 0
                else:
                    end = self.buffer.find(END)
                    if end < 0:
                        break
                    end += 2
                self.buffer = self.buffer[end + 3 :]
                self.in_data = False
                stamp = f"{time.time():.6f}"
                self.out.write("".join(f"{stamp} {rcpt}\n" for rcpt in self.rcpts))
                self.out.flush()
                self.rcpts = []
                replies.append(b"250 2.0.0 Ok: queued\r\n")
                continue
            line, sep, rest = self.buffer.partition(b"\r\n")
            if not sep:
                break
            self.buffer = rest
            replies.append(self._command(line))
        if replies and self.transport is not None:
            self.transport.write(b"".join(replies))

    def _command(self, line: bytes) -> bytes:
        verb = line[:4].upper()
        if verb == b"EHLO":
            return EHLO
        if verb in (b"HELO", b"NOOP"):
            return b"250 2.0.0 Ok\r\n"
        if verb == b"MAIL":
            self.rcpts = []
            return b"250 2.1.0 Ok\r\n"
        if verb == b"RCPT":
            address = line.split(b":", 1)[1].split(b">", 1)[0].lstrip(b" <")
            self.rcpts.append(address.decode(errors="replace"))
            return b"250 2.1.5 Ok\r\n"
        if verb == b"DATA":
            self.in_data = True
            return b"354 End data with <CR><LF>.<CR><LF>\r\n"
        if verb == b"RSET":
            self.rcpts = []
            return b"250 2.0.0 Ok\r\n"
        if verb == b"QUIT":
            assert self.transport is not None
            self.transport.write(b"221 2.0.0 Bye\r\n")
            self.transport.close()
            self.transport = None
            return b""
        return b"502 5.5.2 Error: command not recognized\r\n"

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(host: str, port: int, path: str) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    with open(path, "a") as out:
        server = await loop.create_server(lambda: RecordingSmtp(out), host, port, reuse_address=True)
        print(f"ready {host} {server.sockets[0].getsockname()[1]}", flush=True)
        async with server:
            await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.1.100")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port, args.out))


if __name__ == "__main__":
    main()
