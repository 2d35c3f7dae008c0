"""What a system needs to run one case: the shared environment and the run's settings."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.environment import Environment
from benchmarks.measure import Limits


@dataclass
class Context:
    env: Environment
    workdir: Path
    limits: Limits = field(default_factory=Limits)
    connections: int = 20  # the no-queue senders and the Postfix injector
    ceiling_hosts: int = 4  # sinks the no-queue senders spread their connections over
    workers: int = 2  # bulkmail worker processes unless a case says otherwise
    bulkmail_config: dict[str, Any] = field(default_factory=dict)  # base TOML for bulkmail serve
    keep: bool = False  # keep per-run directories (Redis data, serve logs) for inspection
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def next_id(self) -> int:
        return next(self._ids)

    @property
    def ceiling_targets(self) -> list[tuple[str, int]]:
        return [sink.address for sink in self.env.sinks[: self.ceiling_hosts]]
