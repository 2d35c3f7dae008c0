"""Drive bulkmail the way users do: ``bulkmail serve`` as a process, the CLI as commands.

    with Serve(redis_url, dns=dns_server.address, smtp_port=port, workers=2) as serve:
        job = cli(redis_url, "submit", path).stdout.splitlines()[0]
        serve.worker_pids(); serve.kill_worker(signal.SIGKILL); serve.stop()
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
BULKMAIL = [sys.executable, "-m", "workers.cli"]


def cli(redis_url: str | None, *args: str, env: dict[str, str] | None = None, timeout: float = 120.0,
        stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """Run one ``bulkmail`` command; ``--redis`` goes after the subcommand name."""
    argv = [*BULKMAIL, args[0]]
    if redis_url is not None:
        argv += ["--redis", redis_url]
    argv += list(args[1:])
    full_env = {**os.environ, "BULKMAIL_LOG_LEVEL": "WARNING", **(env or {})}
    return subprocess.run(argv, cwd=ROOT, env=full_env, capture_output=True, timeout=timeout,
                          input=stdin.decode() if stdin is not None else None, text=True)


def status(redis_url: str, job: str) -> dict[str, Any]:
    result = cli(redis_url, "status", job, "--json")
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def events(redis_url: str, job: str) -> list[dict[str, Any]]:
    result = cli(redis_url, "events", "--job", job)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found.append(int(entry.name))
    return found


class Serve:
    def __init__(self, redis_url: str, *, dns: tuple[str, int], smtp_port: int, workers: int = 2,
                 config: str | None = None, log: Path | None = None, extra: tuple[str, ...] = (),
                 env: dict[str, str] | None = None) -> None:
        self.argv = [*BULKMAIL, "serve", "--redis", redis_url, "--workers", str(workers),
                     "--dns", f"{dns[0]}:{dns[1]}", "--smtp-port", str(smtp_port),
                     "--allow-private-mx", "--helo", "bulkmail.test", *extra]
        if config:
            self.argv += ["--config", config]
        self.workers = workers
        self.log = log
        self.env = env or {}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Serve:
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(self.argv, cwd=ROOT, stdout=out, stderr=out,
                                        env={**os.environ, "BULKMAIL_LOG_LEVEL": "INFO", **self.env})
        wait_until(lambda: len(self.worker_pids()) == self.workers + 1, 20, what="worker processes")
        return self

    def worker_pids(self) -> list[int]:
        assert self.process is not None
        return children(self.process.pid)

    def kill_worker(self, sig: int = signal.SIGKILL) -> int:
        pid = self.worker_pids()[0]
        os.kill(pid, sig)
        return pid

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, as an operator would; returns the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            if self.process.poll() is None:
                for pid in self.worker_pids():
                    os.kill(pid, signal.SIGKILL)
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Serve:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log and self.log.exists() else ""
