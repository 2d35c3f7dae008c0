"""Recipient states and the outcome of one delivery attempt, as values.

The state of every recipient is one byte in Redis (``{ns}:job:J:st``); the job
hash keeps one counter per status. A recipient always has exactly one state,
so ``total == sum(counters)`` at every moment (the conservation invariant).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

QUEUED: Final = "queued"
IN_FLIGHT: Final = "in_flight"
DEFERRED: Final = "deferred"
DELIVERED: Final = "delivered"
BOUNCED: Final = "bounced"
EXPIRED: Final = "expired"
CANCELLED: Final = "cancelled"
SUPPRESSED: Final = "suppressed"

STATUSES: Final = (QUEUED, IN_FLIGHT, DEFERRED, DELIVERED, BOUNCED, EXPIRED, CANCELLED, SUPPRESSED)
FINAL_STATUSES: Final = frozenset({DELIVERED, BOUNCED, EXPIRED, CANCELLED, SUPPRESSED})

# One byte per recipient; upper-case q/f carry "an attempt may already have happened".
STATE_BYTES: Final[dict[str, str]] = {
    "q": QUEUED,
    "Q": QUEUED,
    "f": IN_FLIGHT,
    "F": IN_FLIGHT,
    "d": DEFERRED,
    "D": DELIVERED,
    "b": BOUNCED,
    "x": EXPIRED,
    "c": CANCELLED,
    "s": SUPPRESSED,
}
STATE_OF_STATUS: Final[dict[str, str]] = {
    QUEUED: "q",  # handed back unattempted (job paused): queued again, no event
    DELIVERED: "D",
    DEFERRED: "d",
    BOUNCED: "b",
    EXPIRED: "x",
    CANCELLED: "c",
    SUPPRESSED: "s",
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt (or the decision not to attempt) did to one recipient."""

    index: int
    rcpt: str
    status: str  # delivered | deferred | bounced | expired | suppressed | cancelled
    code: int = 0  # SMTP reply code, 0 when no reply (DNS, network, local decision)
    enhanced: str = ""
    reply: str = ""
    mx: str = ""
    attempt: int = 1
    possible_duplicate: bool = False
    retry_at: float | None = None  # epoch seconds, for deferred
    category: str = ""  # engine.classify categories (bad_mailbox, rate_limited, ...)
    fault: str = ""  # recipient, sender, message, network

    @property
    def state_byte(self) -> str:
        return STATE_OF_STATUS[self.status]
