"""Loading a job into Redis: begin, chunks, commit. The commit is the acknowledgement point.

A job of up to ``SUBMIT_CHUNKS_PER_CALL`` chunks (a transactional message) goes in one
pipelined round trip, so it waits for one fsync instead of three; each script checks the
loader token and the commit the stored total, so a step refused (job exists, OOM, ACL)
makes the later ones no-ops. A larger job streams: blocks of ``submit_block`` recipients
sorted by domain, stored a few chunks per script call (one call for a whole block held
Redis, and the fsync after it, for tens of ms, and a transactional submit waited behind it).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis import exceptions as rexc

from engine.codec import StoredRecipient, encode_chunk, encode_meta
from engine.queue.durability import Durability, check_waitaof, probe, waitaof_command
from engine.queue.redis_errors import wrap

if TYPE_CHECKING:
    from engine.job import JobSpec, Recipient
    from engine.queue.store import QueueStore

SUBMIT_CHUNKS_PER_CALL = 8  # chunks stored per submit_chunks call (a few ms of Redis each)


@dataclass(frozen=True, slots=True)
class SubmitResult:
    job_id: str
    created: bool  # False: a job with this id existed, nothing was changed
    total: int


def new_job_id(now: float) -> str:
    """Sortable by submission time, unique without coordination."""
    return f"{int(now * 1000):011x}{secrets.token_hex(4)}"


async def submit_job(
    store: QueueStore, spec: JobSpec, recipients: Iterable[Recipient] | AsyncIterable[Recipient], wake: int
) -> SubmitResult:
    now = store.clock.wall()
    job = _Load(store, spec.id or new_job_id(now), secrets.token_hex(8), wake)
    meta = [
        "priority", spec.priority,
        "max_age", "" if spec.max_age is None else repr(float(spec.max_age)),
        "from", spec.sender,
        "tpl", encode_meta(spec.to_record()),
    ]  # fmt: skip
    begin_args = [job.token, int(now * 1000), *meta]
    stream = _aiter(recipients)
    first: list[Recipient] = []
    async for rcpt in stream:
        first.append(rcpt)
        if len(first) > store.config.chunk_size * SUBMIT_CHUNKS_PER_CALL:
            break
    else:  # small (a transactional message): one round trip and one fsync, not three
        return await job.small(begin_args, first)
    return await job.large(begin_args, _chain(first, stream))


class _Load:
    """One submission of one job, under its own loader token."""

    def __init__(self, store: QueueStore, job_id: str, token: str, wake: int) -> None:
        self.store = store
        self.job_id = job_id
        self.token = token
        self.wake = wake
        k = store.keys
        self.begin_keys = [k.job(job_id), k.states(job_id), k.chunks(job_id), k.ready(job_id), k.events(job_id)]
        self.commit_keys = [k.job(job_id), k.ready(job_id), k.jobs]

    async def small(self, begin_args: list[Any], block: list[Recipient]) -> SubmitResult:
        store, k = self.store, self.store.keys
        durability = await self._durability()
        block.sort(key=lambda r: r.domain)
        try:
            async with store.redis.pipeline(transaction=False) as pipe:
                await store.scripts.call("submit_begin", self.begin_keys, begin_args, client=pipe)
                if block:
                    await store.scripts.call("submit_chunks", self.begin_keys[:3], self._chunks(block, 0), client=pipe)
                await store.scripts.call(
                    "submit_commit", self.commit_keys, [k.ns, self.token, self.job_id, self.wake, len(block)], client=pipe
                )
                if durability.use_waitaof:
                    pipe.execute_command(*waitaof_command())
                replies = await pipe.execute(raise_on_error=False)
        except (rexc.RedisError, OSError) as exc:
            await self._abandon()
            raise wrap(exc) from exc
        if not isinstance(replies[0], Exception) and not replies[0]:
            return await self._existing()
        failed = next((r for r in replies[: 3 if block else 2] if isinstance(r, Exception)), None)
        if failed is not None:
            await self._abandon()
            raise wrap(failed)
        if durability.use_waitaof:
            check_waitaof(replies[-1])
        return SubmitResult(self.job_id, True, len(block))

    async def large(self, begin_args: list[Any], recipients: AsyncIterable[Recipient]) -> SubmitResult:
        store = self.store
        if not await store._run("submit_begin", self.begin_keys, begin_args):
            return await self._existing()
        total = 0
        block: list[Recipient] = []
        try:
            async for rcpt in recipients:
                block.append(rcpt)
                if len(block) >= store.config.submit_block:
                    total = await self._store_block(block, total)
                    block = []
            if block:
                total = await self._store_block(block, total)
            await self._commit()
        except BaseException:
            await self._abandon()
            raise
        return SubmitResult(self.job_id, True, total)

    def _chunks(self, block: list[Recipient], first: int) -> list[Any]:
        """submit_chunks arguments for recipients numbered from ``first``, chunk_size per chunk."""
        size = self.store.config.chunk_size
        args: list[Any] = [self.token]
        for start in range(0, len(block), size):
            part = block[start : start + size]
            blob, packed = encode_chunk([StoredRecipient(first + start + i, r.to, r.vars, 0) for i, r in enumerate(part)])
            args += [blob, packed, first + start, len(part)]
        return args

    async def _store_block(self, block: list[Recipient], first: int) -> int:
        """Sort a bounded block by domain so chunks hold few domains, then store it."""
        block.sort(key=lambda r: r.domain)
        step = self.store.config.chunk_size * SUBMIT_CHUNKS_PER_CALL
        total = first
        for batch in range(0, len(block), step):
            args = self._chunks(block[batch : batch + step], first + batch)
            total = int(await self.store._run("submit_chunks", self.begin_keys[:3], args))
        return total

    async def _commit(self) -> None:
        """The acknowledgement point. With AOF ``always`` the reply comes after the fsync; with
        another policy on Redis >= 7.2, WAITAOF on the commit's own connection waits for it."""
        store, k = self.store, self.store.keys
        args = [k.ns, self.token, self.job_id, self.wake]
        if not (await self._durability()).use_waitaof:
            await store._run("submit_commit", self.commit_keys, args)
            return
        try:
            async with store.redis.pipeline(transaction=False) as pipe:
                await store.scripts.call("submit_commit", self.commit_keys, args, client=pipe)
                pipe.execute_command(*waitaof_command())
                committed, synced = await pipe.execute(raise_on_error=False)
        except (rexc.RedisError, OSError) as exc:
            raise wrap(exc) from exc
        if isinstance(committed, Exception):
            raise wrap(committed)
        check_waitaof(synced)

    async def _durability(self) -> Durability:
        if self.store.durability is None:
            self.store.durability = await probe(self.store.redis)
        return self.store.durability

    async def _existing(self) -> SubmitResult:
        """A job with this id was accepted before: nothing changed."""
        total = int(await self.store.redis.hget(self.store.keys.job(self.job_id), "total") or 0)
        return SubmitResult(self.job_id, False, total)

    async def _abandon(self) -> None:
        """Best effort: a job that was never committed is removed (it was never accepted)."""
        keys = self.store.keys
        try:
            if await self.store.redis.hget(keys.job(self.job_id), "loader") == self.token.encode():
                await self.store.redis.delete(*keys.job_keys(self.job_id))
        except (rexc.RedisError, OSError):
            pass


async def _chain(head: list[Any], rest: AsyncIterable[Any]) -> AsyncIterable[Any]:
    for item in head:
        yield item
    async for item in rest:
        yield item


async def _aiter(items: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterable[Any]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item
