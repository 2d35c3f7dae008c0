"""What every system shares during one benchmark run, started once and stopped by PID.

* one ``smtp-sink`` per MX host on 127.0.1.1 .. 127.0.1.H, all on one port
  (``tests.support.postfix.SmtpSinkProcess``);
* the loopback DNS server as its own process (``python -m tests.support.dns_server``),
  serving ``workloads.zone``;
* the recording sink for the transactional domain (``benchmarks.recording_sink``);
* a private Postfix relay (``tests.support.postfix.PostfixInstance``), started the first
  time a workload needs it, routing every benchmark domain to the sinks by transport_maps.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import workloads
from tests.support.ports import free_port
from tests.support.postfix import PostfixInstance, SmtpSinkProcess

POSTFIX_HOST = "127.0.0.10"


_MESG = re.compile(rb"mesg=(\d+)\s")


class BenchSink(SmtpSinkProcess):
    """smtp-sink whose message counter is read from the tail of its -c output.

    ``SmtpSinkProcess.counters()`` scans the whole output, which grows by one counter
    line per message: too slow to poll over 100,000s of messages and 50 sinks.
    """

    def tail_messages(self) -> int:
        path = (self._workdir or Path("/nonexistent")) / "stdout"
        try:
            with path.open("rb") as f:
                f.seek(max(path.stat().st_size - 256, 0))
                tail = f.read()
        except OSError:
            return 0
        # the sink may be half-way through its last line: take the last complete counter
        counts = _MESG.findall(tail)
        return int(counts[-1]) if counts else 0

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid


def _start_ready(argv: list[str], what: str, log: Path, timeout: float = 20.0) -> tuple[subprocess.Popen[str], str]:
    """Start a helper that prints "ready HOST PORT" on its first stdout line."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log.open("w"), text=True)
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    line = ""
    while time.monotonic() < deadline and proc.poll() is None:
        line += proc.stdout.readline() or ""
        if line.endswith("\n"):
            if line.startswith("ready "):
                return proc, line
            break
        time.sleep(0.02)
    _stop_process(proc)
    raise RuntimeError(f"{what} did not start ({line.strip()!r}): {log.read_text()[-1500:]}")


def _stop_process(proc: subprocess.Popen[str] | subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


class Environment:
    def __init__(self, workdir: Path, hosts: int = 50) -> None:
        self.workdir = workdir
        self.hosts = hosts
        self.sinks: list[BenchSink] = []
        self.sink_port = 0
        self.dns: subprocess.Popen[str] | None = None
        self.dns_address = ("127.0.0.1", 0)
        self.recorder: subprocess.Popen[str] | None = None
        self.arrivals = workdir / "arrivals.txt"
        self._postfix: PostfixInstance | None = None

    def start(self) -> Environment:
        addresses = [workloads.mx_address(i) for i in range(self.hosts)]
        self.sink_port = free_port(addresses[0], also=(*addresses[1:], workloads.TX_HOST))
        for address in addresses:
            self.sinks.append(BenchSink(address, self.sink_port).start())
        zone = self.workdir / "zone.json"
        zone.write_text(json.dumps(workloads.zone(self.hosts)))
        self.dns, line = _start_ready(
            [sys.executable, "-m", "tests.support.dns_server", "--port", "0", "--zone", str(zone)],
            "DNS server", self.workdir / "dns.log",
        )
        host, port = line.split()[1:3]
        self.dns_address = (host, int(port))
        self.recorder, _ = _start_ready(
            [sys.executable, "-m", "benchmarks.recording_sink", "--host", workloads.TX_HOST,
             "--port", str(self.sink_port), "--out", str(self.arrivals)],
            "recording sink", self.workdir / "recording_sink.log",
        )
        return self

    def postfix(self) -> PostfixInstance:
        if self._postfix is None:
            instance = PostfixInstance(POSTFIX_HOST, routes=workloads.routes(self.hosts, self.sink_port))
            self._postfix = instance.start(timeout=60)
        return self._postfix

    @property
    def sink_pids(self) -> list[int]:
        pids = [sink.pid for sink in self.sinks]
        if self.recorder is not None:
            pids.append(self.recorder.pid)
        return pids

    def sink_messages(self) -> int:
        return sum(sink.tail_messages() for sink in self.sinks)

    @property
    def dns_pids(self) -> list[int]:
        return [self.dns.pid] if self.dns else []

    def arrivals_seen(self) -> dict[str, float]:
        """recipient -> unix time of the 250 at the recording sink."""
        if not self.arrivals.exists():
            return {}
        seen: dict[str, float] = {}
        for line in self.arrivals.read_text().splitlines():
            stamp, _, rcpt = line.partition(" ")
            seen.setdefault(rcpt, float(stamp))
        return seen

    def stop(self) -> None:
        errors: list[str] = []
        if self._postfix is not None:
            with contextlib.suppress(Exception):
                self._postfix.stop()
            self._postfix = None
        for proc in (self.recorder, self.dns):
            if proc is not None:
                _stop_process(proc)
        for sink in self.sinks:
            try:
                sink.stop()
            except Exception as exc:  # keep stopping the others
                errors.append(repr(exc))
        self.sinks = []
        if errors:
            print(f"warning: while stopping sinks: {errors}", file=sys.stderr)
