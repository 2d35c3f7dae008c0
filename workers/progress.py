"""A one-line progress bar on a terminal (or plain lines when not a tty)."""

from __future__ import annotations

import time
from typing import Any, TextIO


class ProgressLine:
    def __init__(self, out: TextIO, width: int = 30) -> None:
        self.out = out
        self.width = width
        self.tty = out.isatty()
        self.started = time.monotonic()
        self._last = 0.0

    def update(self, status: dict[str, Any]) -> None:
        now = time.monotonic()
        if not self.tty and now - self._last < 2.0:
            return
        self._last = now
        total = max(int(status["total"]), 1)
        final = sum(int(status[k]) for k in ("delivered", "bounced", "expired", "cancelled", "suppressed"))
        settled = final + int(status["deferred"])
        filled = int(self.width * settled / total)
        rate = final / max(now - self.started, 1e-6)
        line = (
            f"[{'#' * filled}{'.' * (self.width - filled)}] {100 * settled / total:5.1f}% "
            f"delivered {status['delivered']} bounced {status['bounced']} deferred {status['deferred']} "
            f"queued {status['queued']} in flight {status['in_flight']} ({rate:,.0f}/s)"
        )
        self.out.write(("\r" + line) if self.tty else (line + "\n"))
        self.out.flush()

    def finish(self, status: dict[str, Any]) -> None:
        self._last = 0.0
        self.update(status)
        elapsed = time.monotonic() - self.started
        waiting = int(status["deferred"])
        self.out.write(
            ("\n" if self.tty else "")
            + f"finished in {elapsed:.1f}s: {status['delivered']} delivered, {status['bounced']} bounced, "
            f"{status['expired']} expired, {waiting} waiting for a retry\n"
        )
        self.out.flush()
