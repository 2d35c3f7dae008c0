"""Open SMTP sessions per MX host, shared by every site and job in this worker.

A connection is kept after its site's queue runs dry and handed to the next
site that needs the same host, until it has been idle too long.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict

from engine.net.smtp_protocol import SmtpSession


class HostPools:
    def __init__(self, max_per_host: int, idle_timeout: float, max_msgs: int) -> None:
        self.max_per_host = max_per_host
        self.idle_timeout = idle_timeout
        self.max_msgs = max_msgs
        self._open: dict[str, int] = defaultdict(int)  # sessions open or opening, per host key
        self._idle: dict[str, list[SmtpSession]] = defaultdict(list)
        self.opened = 0  # connections opened in this process (connection reuse figure)
        self._closing: set[asyncio.Task[None]] = set()

    def count(self, key: str) -> int:
        return self._open[key]

    def take_idle(self, key: str) -> SmtpSession | None:
        idle = self._idle.get(key)
        while idle:
            session = idle.pop()
            if session.usable:
                return session
            self._open[key] -= 1
        return None

    def reserve(self, key: str) -> bool:
        if self._open[key] >= self.max_per_host:
            return False
        self._open[key] += 1
        return True

    def unreserve(self, key: str) -> None:
        self._open[key] -= 1

    def park(self, key: str, session: SmtpSession) -> None:
        if session.usable and session.transactions < self.max_msgs:
            self._idle[key].append(session)
        else:
            self.close(key, session)

    def close(self, key: str, session: SmtpSession) -> None:
        self._open[key] -= 1
        task = asyncio.get_running_loop().create_task(session.quit())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def sweep(self, now: float) -> None:
        """Close sessions idle longer than the idle timeout (now: loop.time())."""
        for key, idle in self._idle.items():
            keep = []
            for session in idle:
                if session.usable and now - session.last_used < self.idle_timeout:
                    keep.append(session)
                else:
                    self.close(key, session)
            idle[:] = keep

    async def close_all(self) -> None:
        for key, idle in self._idle.items():
            for session in idle:
                self.close(key, session)
            idle.clear()
        if self._closing:
            with contextlib.suppress(Exception):
                await asyncio.wait(list(self._closing), timeout=5.0)
