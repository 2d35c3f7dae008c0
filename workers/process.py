"""One worker process: uvloop, objects built from the config, the WorkerLoop.

Started by the supervisor as ``python -m workers.process`` with the engine
configuration as JSON in BULKMAIL_WORKER_CONFIG. This is the only module that
imports uvloop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
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
# Cyclic GC: with Python's default (700, 10, 10) a bulk worker spent 10-15% of its CPU in
# collections (bench a, 50,000 messages: 0.34-0.53 s of 3.4 s; nearly all of it full passes over
# long-lived objects). Per-message objects die by reference counting; raising the young
# generation's threshold and freezing what start-up created cut it to 0.06-0.10 s.
GC_THRESHOLDS = (10_000, 20, 20)


def tune_gc() -> None:
    """Call once start-up objects exist: they leave the collector's view for good."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


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
    tune_gc()
    log.info("worker %s started", token)
    try:
        await worker.run()
    finally:
        log.info(
            "worker %s stopped: %d chunks, %d recipients, %d connections opened, "
            "%d domains looked up here, %d routes taken from other workers",
            token,
            worker.counters.claimed_chunks,
            worker.counters.recipients,
            worker.pools.opened,
            worker.routes.looked_up,
            worker.routes.taken,
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
