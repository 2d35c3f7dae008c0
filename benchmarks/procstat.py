"""CPU time and peak memory of processes, read from /proc.

CPU of a process tree is the sum, over the root and every live descendant, of
utime + stime + cutime + cstime (``/proc/PID/stat`` fields 14-17). A descendant
that exits during a measurement is reaped by its parent, which then carries its
CPU in cutime/cstime, so the difference of two tree snapshots counts every
process of the tree that ran in between, including short-lived ones (Postfix's
smtpd/smtp/cleanup, bulkmail's restarted workers).
"""

from __future__ import annotations

import os
import resource
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

TICK = float(os.sysconf("SC_CLK_TCK"))
# Load generators this process started and has not reaped yet, so that an interrupted run
# can kill them by PID (``kill_started``) instead of leaving them to their own timeouts.
STARTED: set[subprocess.Popen[bytes]] = set()


def start(argv: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
    proc: subprocess.Popen[bytes] = subprocess.Popen(list(argv), **kwargs)  # type: ignore[call-overload]
    STARTED.add(proc)
    return proc


def kill_started() -> None:
    for proc in list(STARTED):
        if proc.returncode is None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        STARTED.discard(proc)


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()  # fields from 3 (state) on; the name may hold spaces


def cpu_seconds(pid: int) -> float:
    """utime + stime + cutime + cstime of ``pid`` (0 when it is gone)."""
    fields = _stat(pid)
    if fields is None:
        return 0.0
    return sum(int(v) for v in fields[11:15]) / TICK


def _parents() -> dict[int, int]:
    found: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None:
                found[int(entry.name)] = int(fields[1])
    return found


def descendants(pid: int) -> list[int]:
    parents = _parents()
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        kids = [child for child, ppid in parents.items() if ppid == parent]
        found += kids
        frontier += kids
    return found


def children(pid: int) -> list[int]:
    return [child for child, ppid in _parents().items() if ppid == pid]


def tree_cpu(pid: int) -> float:
    return sum(cpu_seconds(p) for p in [pid, *descendants(pid)])


def vm_hwm_bytes(pid: int) -> int | None:
    """Peak resident set size (VmHWM) of ``pid``."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@dataclass
class CpuMeter:
    """CPU used by named groups of process trees between ``start()`` and ``stop()``."""

    groups: dict[str, Sequence[int]]

    def _sample(self) -> dict[str, float]:
        return {name: sum(tree_cpu(pid) for pid in pids) for name, pids in self.groups.items()}

    def start(self) -> CpuMeter:
        self._before = self._sample()
        return self

    def stop(self) -> dict[str, float]:
        after = self._sample()
        return {name: max(after[name] - self._before[name], 0.0) for name in self.groups}


def rusage_seconds(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def wait_measured(proc: subprocess.Popen[bytes], timeout: float) -> float:
    """Wait for ``proc`` (killing it after ``timeout``); return its CPU seconds from wait4.

    Raises TimeoutError after killing it."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            STARTED.discard(proc)
            return rusage_seconds(usage)
        if time.monotonic() > deadline:
            proc.kill()
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            STARTED.discard(proc)
            raise TimeoutError(f"{' '.join(map(str, proc.args))} (pid {proc.pid}) still running after {timeout:.0f}s: killed")
        time.sleep(0.005)


def alive(pids: Iterable[int]) -> list[int]:
    return [pid for pid in pids if (_stat(pid) or ["Z"])[0] != "Z"]


def run_measured(argv: Sequence[str], timeout: float, log: Path) -> tuple[int, str, float, float]:
    """Run ``argv`` to completion: (exit code, stdout, wall seconds, CPU seconds from wait4).

    stderr goes to ``log``; past ``timeout`` the process is killed and TimeoutError raised."""
    began = time.monotonic()
    with log.open("ab") as err, open(os.devnull, "rb") as null:
        proc = start(argv, stdin=null, stdout=subprocess.PIPE, stderr=err)
    assert proc.stdout is not None
    try:
        cpu = wait_measured(proc, timeout)
    finally:
        out = proc.stdout.read().decode(errors="replace")
        proc.stdout.close()
    return proc.returncode or 0, out, time.monotonic() - began, cpu
