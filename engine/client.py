"""The submitter's API: submit a job, read its status and events (async and sync)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from typing import Any

from redis.asyncio import Redis

from engine.clock import Clock, SystemClock
from engine.config import QueueConfig, RedisConfig
from engine.job import parse_job, parse_recipient
from engine.jobfile import stream_job
from engine.queue.connect import open_redis, resolve_url
from engine.queue.store import QueueStore, SubmitResult


class Client:
    """``async with await Client.connect() as c: job = await c.submit({...})``"""

    def __init__(self, redis: Redis, queue: QueueConfig | None = None, clock: Clock | None = None) -> None:
        self.redis = redis
        self.store = QueueStore(redis, queue or QueueConfig(), clock or SystemClock())

    @classmethod
    async def connect(
        cls, redis_url: str | None = None, *, home: str = ".bulkmail", queue: QueueConfig | None = None
    ) -> Client:
        url = await asyncio.to_thread(resolve_url, RedisConfig(url=redis_url, home=home))
        return cls(open_redis(url), queue)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.redis.aclose()

    async def submit_job(self, job: Mapping[str, Any] | str | bytes) -> SubmitResult:
        """Validate (InputError naming the field) and store; accepted once this returns."""
        if isinstance(job, str | bytes):
            spec, _, recipients = stream_job(job)
            return await self.store.submit(spec, recipients)
        spec, raw = parse_job(job)
        return await self.store.submit(spec, [parse_recipient(item, i, spec) for i, item in enumerate(raw)])

    async def submit(self, job: Mapping[str, Any] | str | bytes) -> str:
        return (await self.submit_job(job)).job_id

    async def status(self, job_id: str) -> dict[str, Any] | None:
        return await self.store.status(job_id)

    async def events(self, job_id: str, after: str = "-", count: int = 1000) -> list[dict[str, Any]]:
        return await self.store.events(job_id, after, count)

    async def wait(
        self,
        job_id: str,
        *,
        interval: float = 0.2,
        timeout: float | None = None,
        progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Until nothing is queued or in flight (deferred recipients may remain)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            status = await self.status(job_id)
            if status is None:
                raise KeyError(job_id)
            if progress is not None:
                progress(status)
            if status["queued"] == 0 and status["in_flight"] == 0 and status["state"] != "loading":
                return status
            if deadline is not None and loop.time() > deadline:
                raise TimeoutError(f"job {job_id} still has recipients queued or in flight")
            await asyncio.sleep(interval)


class SyncClient:
    """The same API for code without an event loop."""

    def __init__(self, redis_url: str | None = None, *, home: str = ".bulkmail") -> None:
        self._runner = asyncio.Runner()
        self._client = self._runner.run(Client.connect(redis_url, home=home))

    def submit(self, job: Mapping[str, Any] | str | bytes) -> str:
        return self._runner.run(self._client.submit(job))

    def status(self, job_id: str) -> dict[str, Any] | None:
        return self._runner.run(self._client.status(job_id))

    def events(self, job_id: str, after: str = "-", count: int = 1000) -> list[dict[str, Any]]:
        return self._runner.run(self._client.events(job_id, after, count))

    def wait(self, job_id: str, *, timeout: float | None = None) -> dict[str, Any]:
        return self._runner.run(self._client.wait(job_id, timeout=timeout))

    def close(self) -> None:
        self._runner.run(self._client.close())
        self._runner.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
