"""redis-py exceptions to engine errors, in one place, with the words an operator needs.

redis-py drops the error code of the replies it has a class for (OOM, READONLY, NOPERM)
and Lua errors carry a script hash and line; the messages here name the condition, what
it means for bulkmail, and (for NOPERM) the permission its Redis user needs.
"""

from __future__ import annotations

import re

from redis import exceptions as rexc

from engine.errors import QueueError, QueueUnavailable

_SCRIPT_WHERE = re.compile(r"\s*script: [0-9a-f]{40}, on @user_script:\d+\.?")


def wrap(exc: BaseException, ns: str = "bm") -> QueueError:
    if isinstance(exc, rexc.ConnectionError | rexc.TimeoutError | OSError):
        return QueueUnavailable(f"Redis unreachable: {exc}")
    text = _SCRIPT_WHERE.sub("", str(exc)).strip()
    if isinstance(exc, rexc.OutOfMemoryError) or text.startswith("OOM"):
        return QueueError(
            "Redis is out of memory (OOM: maxmemory reached, nothing may be evicted) and refuses new "
            f"data until memory is freed or maxmemory raised: {text}"
        )
    if isinstance(exc, rexc.ReadOnlyError) or text.startswith("READONLY"):
        return QueueError(f"Redis is a read-only replica (READONLY): point bulkmail at the primary: {text}")
    if text.startswith("MISCONF"):
        return QueueError(f"Redis cannot persist to disk and refuses writes (MISCONF; see the Redis log): {text}")
    if isinstance(exc, rexc.NoPermissionError) or text.startswith("NOPERM"):
        return QueueError(
            f"the Redis ACL refuses bulkmail's user (NOPERM): {text}; it needs the keys ~{ns}:* and the "
            "commands +@read +@write +@scripting +@blocking (EVALSHA, SCRIPT LOAD, BLPOP)"
        )
    return QueueError(f"Redis error: {text}")
