"""Which temporary failures mean 'you are sending too fast / too much', as opposed to
an ordinary temporary failure (greylisting, a full disk). Those feed the adaptive
throttle (workers/policy.py): every 421, and 4xx policy replies whose text says so."""

from __future__ import annotations

import re

from engine.smtp.replies import Reply

_PATTERNS = re.compile(
    r"rate limit|ratelimit|rate-limit|too many (?:connections|messages|recipients|concurrent|sessions|mails)|"
    r"throttl|slow down|too fast|exceeded|temporarily (?:deferred|rate)|unusual (?:rate|volume)|"
    r"blocked|reputation|speed",
    re.IGNORECASE,
)


def slow_down_reason(reply: Reply | None) -> str:
    """A short reason when ``reply`` asks us to slow down, else ''."""
    if reply is None or not reply.is_transient:
        return ""
    text = reply.text
    if reply.code == 421:
        return f"421 {text}"[:200]
    policy = reply.enhanced is not None and reply.enhanced.subject == 7
    if (policy or reply.code in (450, 451, 452)) and _PATTERNS.search(text):
        return f"{reply.code} {reply.enhanced or ''} {text}".replace("  ", " ")[:200]
    return ""
