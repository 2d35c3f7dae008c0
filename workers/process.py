"""One worker process: uvloop, objects built from the config, the WorkerLoop.

Started by the supervisor as ``python -m workers.process`` with the engine
configuration as JSON in BULKMAIL_WORKER_CONFIG. This is the only module that
imports uvloop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import secrets
import signal
import socket
import sys

import uvloop
from redis.asyncio import Redis

from engine.clock import SystemClock
from engine.config import EngineConfig
from engine.net.resolver import MxResolver
from engine.queue.connect import open_redis
from engine.queue.store import QueueStore
from workers.loop import WorkerLoop

log = logging.getLogger("bulkmail.worker")
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """If the supervisor is killed outright, its workers must not linger."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


async def run_worker(config: EngineConfig, token: str, lanes: tuple[str, ...] = ("transactional", "bulk")) -> None:
    assert config.redis.url, "the supervisor resolves the Redis URL before starting workers"
    clock = SystemClock()
    redis = open_redis(config.redis.url)
    blocking = Redis.from_url(config.redis.url)  # BLPOP on a connection of its own
    store = QueueStore(redis, config.queue, clock)
    resolver = MxResolver(config.dns, clock)
    worker = WorkerLoop(config, store, blocking, resolver, clock, token, lanes=lanes)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, worker.stop)
    loop.add_signal_handler(signal.SIGINT, worker.stop)
    loop.add_signal_handler(signal.SIGUSR1, lambda: log.warning("state of %s:\n%s", token, worker.describe()))
    log.info("worker %s started", token)
    try:
        await worker.run()
    finally:
        log.info(
            "worker %s stopped: %d chunks, %d recipients, %d connections opened",
            token,
            worker.counters.claimed_chunks,
            worker.counters.recipients,
            worker.pools.opened,
        )
        await resolver.close()
        await redis.aclose()
        await blocking.aclose()


def main() -> None:
    die_with_parent()
    logging.basicConfig(
        level=os.environ.get("BULKMAIL_LOG_LEVEL", "INFO"),
        format=f"%(asctime)s worker[{os.getpid()}] %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    config = EngineConfig.from_mapping(json.loads(os.environ["BULKMAIL_WORKER_CONFIG"]))
    token = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
    lanes = tuple(os.environ.get("BULKMAIL_WORKER_LANES", "transactional,bulk").split(","))
    profile = os.environ.get("BULKMAIL_PROFILE")  # a directory: cProfile stats per worker, for development
    if not profile:
        uvloop.run(run_worker(config, token, lanes))
        return
    import cProfile

    with cProfile.Profile() as prof:
        uvloop.run(run_worker(config, token, lanes))
    prof.dump_stats(os.path.join(profile, f"worker-{os.getpid()}.prof"))


if __name__ == "__main__":
    main()
