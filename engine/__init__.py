"""bulkmail engine: job model, queue, routing, DNS, SMTP and outcomes (no process management).

``from engine import Client, SyncClient`` gives the submitter's API (engine/client.py). It is
loaded on first use, so importing the protocol and model modules never imports redis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.client import Client, SyncClient

__all__ = ["Client", "SyncClient"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from engine import client

        return getattr(client, name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
