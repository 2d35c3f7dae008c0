"""Start and find a local redis-server: the embedded default and the test/benchmark servers.

With no Redis URL, every ``bulkmail`` command uses one redis-server whose data,
AOF and unix socket live under BULKMAIL_HOME. The first command that finds no
live instance starts it (daemonized, so it outlives the command); the others
connect to the same socket. Persistence is AOF with ``appendfsync always``:
a job is acknowledged only once it is on disk.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import QueueUnavailable

REDIS_SERVER = "redis-server"
_SOCKET_MAX = 100  # sun_path is 108 bytes on Linux


@dataclass
class RedisProcess:
    """A redis-server we started; ``url`` is what clients connect to."""

    directory: Path
    port: int = 0  # 0: unix socket only
    host: str = "127.0.0.1"
    appendfsync: str = "always"
    appendonly: bool = True
    daemonize: bool = False
    extra: dict[str, str] = field(default_factory=dict)
    extra_lines: list[str] = field(default_factory=list)  # directives that repeat, e.g. ACL users
    process: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        return self.directory / "redis.sock"

    @property
    def pidfile(self) -> Path:
        return self.directory / "redis.pid"

    @property
    def url(self) -> str:
        if self.port:
            return f"redis://{self.host}:{self.port}/0"
        return f"unix://{self.socket_path.resolve()}?db=0"

    def config_lines(self) -> list[str]:
        lines = [
            f"dir {self.directory.resolve()}",
            f"port {self.port}",
            f"bind {self.host}",
            "protected-mode yes",
            f"pidfile {self.pidfile.resolve()}",
            f"logfile {(self.directory / 'redis.log').resolve()}",
            f"daemonize {'yes' if self.daemonize else 'no'}",
            'save ""',
            f"appendonly {'yes' if self.appendonly else 'no'}",
            f"appendfsync {self.appendfsync}",
            "appendfilename appendonly.aof",
            "maxmemory-policy noeviction",
            "lua-time-limit 5000",
        ]
        if not self.port:
            lines += [f"unixsocket {self.socket_path.resolve()}", "unixsocketperm 700"]
        lines += [f"{key} {value}" for key, value in self.extra.items()]
        return lines + self.extra_lines

    def start(self, timeout: float = 10.0) -> None:
        binary = shutil.which(REDIS_SERVER) or (
            "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
        )
        if binary is None:
            raise QueueUnavailable(
                "redis-server not found: install Debian's redis-server package (scripts/setup does) "
                "or pass --redis URL"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self.port and len(str(self.socket_path.resolve())) > _SOCKET_MAX:
            raise QueueUnavailable(f"BULKMAIL_HOME path too long for a unix socket: {self.directory}")
        conf = self.directory / "redis.conf"
        conf.write_text("\n".join(self.config_lines()) + "\n")
        self.process = subprocess.Popen(
            [binary, str(conf.resolve())],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=self.daemonize,
        )
        if self.daemonize:
            self.process.wait(timeout=timeout)
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.daemonize and self.process is not None and self.process.poll() is not None:
                break
            if ping(self.url):
                return
            time.sleep(0.02)
        log = self.directory / "redis.log"
        tail = log.read_text()[-2000:] if log.exists() else ""
        raise QueueUnavailable(f"redis-server did not start in {self.directory}:\n{tail}")

    @property
    def pid(self) -> int | None:
        if self.process is not None and not self.daemonize:
            return self.process.pid
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Stop the server we started (by PID). SIGKILL simulates a crash."""
        pid = self.pid
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if self.process is not None and not self.daemonize:
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        else:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def ping(url: str, timeout: float = 0.5) -> bool:
    """A raw PING, so finding the embedded server costs no client library set-up."""
    try:
        if url.startswith("unix://"):
            path = url[len("unix://") :].split("?", 1)[0]
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(path)
        else:
            hostport = url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
            host, _, port = hostport.rpartition(":")
            sock = socket.create_connection((host, int(port)), timeout=timeout)
        with sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


def embedded_url(home: str | os.PathLike[str], *, start: bool = True, appendfsync: str = "always") -> str:
    """The URL of the embedded server under ``home``, starting it when none answers."""
    server = RedisProcess(Path(home) / "redis", appendfsync=appendfsync, daemonize=True)
    if ping(server.url):
        return server.url
    if not start:
        raise QueueUnavailable(f"no embedded redis-server running under {home}")
    server.directory.mkdir(parents=True, exist_ok=True)
    # Two commands started at once must not both start a server on the same AOF.
    with open(server.directory / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if ping(server.url):
            return server.url
        with contextlib.suppress(FileNotFoundError):
            server.socket_path.unlink()  # left over by a crash; the server re-creates it
        server.start()
    return server.url


def stop_embedded(home: str | os.PathLike[str]) -> bool:
    server = RedisProcess(Path(home) / "redis", daemonize=True)
    if not ping(server.url):
        return False
    server.stop()
    return True
