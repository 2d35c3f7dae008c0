"""The supervisor (``bulkmail serve``): N bulk worker processes plus the
transactional ones (1 by default), restarted when they die, stopped together on
SIGTERM/SIGINT. A transactional worker takes only transactional mail: it is
idle most of the time, so a password reset never waits behind a busy event loop.

Workers are plain child processes (``python -m workers.process``), so a worker
that crashes or is SIGKILLed takes nothing with it: its leases run out and
any live worker takes its chunks back.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from engine.config import EngineConfig

log = logging.getLogger("bulkmail.supervisor")


@dataclass
class Slot:
    index: int
    lanes: str  # "bulk" or "transactional"
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started: float = field(default=0.0)


class Supervisor:
    def __init__(self, config: EngineConfig, workers: int) -> None:
        self.config = config
        self.count = workers
        lanes = ["bulk"] * workers + ["transactional"] * config.worker.transactional_workers
        self.slots = [Slot(i, lane) for i, lane in enumerate(lanes)]
        self._stop = threading.Event()

    def _spawn(self, slot: Slot) -> None:
        env = dict(os.environ)
        env["BULKMAIL_WORKER_CONFIG"] = json.dumps(self.config.to_mapping())
        env["BULKMAIL_WORKER_INDEX"] = str(slot.index)
        env["BULKMAIL_WORKER_LANES"] = slot.lanes
        slot.process = subprocess.Popen([sys.executable, "-m", "workers.process"], env=env)
        slot.started = time.monotonic()
        log.info("worker %d (%s) started (pid %d)", slot.index, slot.lanes, slot.process.pid)

    def request_stop(self, *_: object) -> None:
        self._stop.set()

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        for slot in self.slots:
            self._spawn(slot)
        backoff = self.config.worker.restart_backoff
        while not self._stop.wait(0.2):
            for slot in self.slots:
                proc = slot.process
                if proc is None or proc.poll() is None:
                    continue
                log.warning("worker %d (pid %d) exited with %s; restarting", slot.index, proc.pid, proc.returncode)
                # a worker that dies right after starting is restarted with growing delay
                quick = time.monotonic() - slot.started < 10.0
                slot.restarts = slot.restarts + 1 if quick else 0
                if quick and self._stop.wait(min(backoff * 2 ** slot.restarts, 30.0)):
                    break
                self._spawn(slot)
        return self._shutdown()

    def _shutdown(self) -> int:
        live = [s.process for s in self.slots if s.process is not None and s.process.poll() is None]
        for proc in live:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.config.worker.drain_timeout + 5.0
        for proc in live:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                log.warning("worker pid %d did not drain in time; killing it", proc.pid)
                proc.kill()
                proc.wait()
        log.info("all workers stopped")
        return 0

    def pids(self) -> list[int]:
        return [s.process.pid for s in self.slots if s.process is not None]
