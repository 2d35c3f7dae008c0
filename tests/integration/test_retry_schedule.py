"""Retries on schedule and expiry at max_age, with the worker in this process on a
ManualClock: the test moves time; nothing waits for minutes."""

from __future__ import annotations

from collections.abc import Callable

from redis.asyncio import Redis

from engine.config import DnsConfig, EngineConfig, QueueConfig, RetryConfig, SmtpConfig
from engine.net.resolver import MxResolver
from engine.queue.connect import open_redis
from engine.queue.store import QueueStore
from tests.support.builders import build
from tests.support.clock import ManualClock
from tests.support.dns_server import DnsServer
from tests.support.sinks import RecordingSink
from tests.support.waiting import async_wait_until
from tests.support.workers import running_worker
from workers.loop import WorkerLoop


async def test_deferred_recipient_retried_on_schedule_then_expired_at_max_age(
    redis_url: str, dns_server: DnsServer, smtp_sink: Callable[..., RecordingSink]
) -> None:
    sink = smtp_sink("127.0.0.2", rcpt={"slow": "451 4.3.0 mailbox busy, try later"})
    dns_server.add_mx("retry.test", [(10, "mx.retry.test")])
    dns_server.add_a("mx.retry.test", ["127.0.0.2"])
    clock = ManualClock()
    config = EngineConfig(
        queue=QueueConfig(heartbeat=0.2, reap_interval=0.02),
        retry=RetryConfig(base=300.0, factor=2.0, jitter=0.0),
        smtp=SmtpConfig(port=sink.port, allow_private_mx=True, helo="retry.test"),
        dns=DnsConfig(nameserver=dns_server.address, timeout=2.0),
    )
    redis, blocking = open_redis(redis_url), Redis.from_url(redis_url)
    store = QueueStore(redis, config.queue, clock)
    spec, rcpts = build(["slow@retry.test", "fine@retry.test"], max_age=1000)
    job = (await store.submit(spec, rcpts)).job_id
    worker = WorkerLoop(config, store, blocking, MxResolver(config.dns, clock), clock, "test-worker")

    async def slow_events() -> list[dict[str, object]]:
        return [e for e in await store.events(job) if e["rcpt"] == "slow@retry.test"]

    async def quiet_for(cycles: int) -> None:
        start = worker.counters.maintenance_runs
        await async_wait_until(lambda: _true(worker.counters.maintenance_runs >= start + cycles), 10)

    try:
        async with running_worker(worker):
            first = await async_wait_until(slow_events, 10, what="the first attempt")
            assert [(e["status"], e["attempt"], e["code"]) for e in first] == [("deferred", 1, 451)]
            assert len(sink.messages) == 1  # fine@ delivered at once
            clock.advance(299)  # the first retry is due 300 s after the first attempt
            await quiet_for(5)
            assert len(await slow_events()) == 1
            clock.advance(2)
            second = await async_wait_until(lambda: _at_least(slow_events, 2), 10, what="the retry")
            assert [(e["status"], e["attempt"]) for e in second] == [("deferred", 1), ("deferred", 2)]
            clock.advance(599)  # then 600 s
            await quiet_for(5)
            assert len(await slow_events()) == 2
            clock.advance(2)
            # the third attempt fails too, and another 1200 s would pass max_age (1000 s): expired
            third = await async_wait_until(lambda: _at_least(slow_events, 3), 10, what="the last attempt")
            assert (third[-1]["status"], third[-1]["attempt"], third[-1]["code"]) == ("expired", 3, 451)
            status = await store.status(job)
            assert status is not None and status["done"] is True
            assert (status["delivered"], status["expired"], status["deferred"]) == (1, 1, 0)
            assert await redis.zcard(store.keys.retry) == 0
    finally:
        await redis.aclose()
        await blocking.aclose()


async def _true(value: bool) -> bool:
    return value


async def _at_least(read: Callable[[], object], count: int) -> list[dict[str, object]] | None:
    events = await read()  # type: ignore[misc]
    return events if len(events) >= count else None
