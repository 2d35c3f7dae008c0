"""The Lua transitions, loaded once and called through typed wrappers.

One file per transition in ``lua/``, each prefixed with ``_prelude.lua``.
redis-py's registered scripts use EVALSHA and reload on NOSCRIPT, so a Redis
restarted from its AOF (which forgets scripts) is handled transparently.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

NAMES = (
    "submit_begin",
    "submit_chunks",
    "submit_commit",
    "claim",
    "report",
    "heartbeat",
    "reap",
    "release",
    "promote",
    "site_connect",
    "site_tokens",
    "site_feedback",
    "cancel_job",
    "pause_job",
    "quarantine",
    "route_claim",
)


def load_source(name: str) -> str:
    lua = resources.files("engine.queue") / "lua"
    return (lua / "_prelude.lua").read_text() + "\n" + (lua / f"{name}.lua").read_text()


class Scripts:
    """Registered scripts for one Redis client; attributes named like the files."""

    def __init__(self, redis: Redis) -> None:
        self._scripts: dict[str, AsyncScript] = {
            name: redis.register_script(load_source(name)) for name in NAMES
        }

    async def call(self, name: str, keys: list[str], args: list[Any], client: Any = None) -> Any:
        return await self._scripts[name](keys=keys, args=args, client=client)
