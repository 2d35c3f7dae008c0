"""Which temporary failures mean 'you are sending too fast / too much', as opposed to
an ordinary temporary failure (greylisting, a full disk). Those feed the adaptive
throttle (workers/policy.py): every 421, and 4xx replies the classifier files
under rate limiting or sender reputation (provider patterns included)."""

from __future__ import annotations

from engine.bounce_rules import THROTTLE
from engine.classify import from_reply
from engine.smtp.replies import Reply


def slow_down_reason(reply: Reply | None) -> str:
    """A short reason when ``reply`` asks us to slow down, else ''."""
    if reply is None or not reply.is_transient:
        return ""
    verdict = from_reply(reply, False)
    if reply.code == 421 or verdict.throttle or verdict.category in THROTTLE:
        return f"{reply.code} {reply.enhanced or ''} {reply.text}".replace("  ", " ")[:200]
    return ""
