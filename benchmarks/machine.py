"""What the figures were measured on."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path


def _version(argv: list[str], pattern: str) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(pattern, out)
    return found.group(1) if found else None


def _package(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def filesystem(path: Path) -> str:
    """The mount type holding ``path`` (fsync on tmpfs is free: say so in the results)."""
    best, kind = "", "?"
    for line in Path("/proc/mounts").read_text().splitlines():
        _, mount, fstype, *_ = line.split()
        if str(path.resolve()).startswith(mount) and len(mount) > len(best):
            best, kind = mount, fstype
    return kind


def describe(workdir: Path) -> dict[str, object]:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    load = os.getloadavg()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "uvloop": _package("uvloop"),
        "aiosmtplib": _package("aiosmtplib"),
        "redis_server": _version(["redis-server", "--version"], r"v=(\S+)"),
        "postfix": _version(["/usr/sbin/postconf", "-d", "mail_version"], r"= (\S+)"),
        "workdir": str(workdir),
        "workdir_fs": filesystem(workdir),
        "loadavg_at_start": [round(x, 2) for x in load],
    }
