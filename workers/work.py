"""The work a worker holds: leased chunks, their recipients, and SMTP transactions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from engine.codec import StoredRecipient
from engine.outcome import Outcome
from engine.queue.store import ClaimedChunk, RetryGroup

if TYPE_CHECKING:
    from workers.jobs import JobContext


@dataclass(slots=True, eq=False)
class Held:
    """A leased chunk. ``remaining`` counts recipients without an outcome yet."""

    claimed: ClaimedChunk
    remaining: int
    pending: list[Outcome] = field(default_factory=list)  # outcomes not yet written to Redis
    retry: dict[str, RetryGroup] = field(default_factory=dict)  # deferred recipients per bucket
    lost: bool = False  # our lease went to another worker: stop working on it

    @property
    def key(self) -> str:
        return self.claimed.key


@dataclass(slots=True, eq=False)
class Item:
    held: Held
    record: StoredRecipient

    @property
    def attempt(self) -> int:
        return self.record.attempts + 1

    @property
    def possible_duplicate(self) -> bool:
        return self.record.index in self.held.claimed.duplicates


@dataclass(slots=True, eq=False)
class Unit:
    """One SMTP transaction's worth of recipients (several only when the bytes are identical)."""

    job: JobContext
    domain: str
    items: list[Item]
    requeues: int = 0  # connection-level failures before an answer, during this lease

    def live_items(self) -> list[Item]:
        return [item for item in self.items if not item.held.lost]
