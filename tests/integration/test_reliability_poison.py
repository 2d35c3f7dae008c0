"""Poison at the worker edge: stored data a worker cannot decode must cost that chunk alone.

A chunk whose records are not msgpack, or a job whose stored template cannot be read, is
quarantined with its reason at once; its recipients stay queued (and ``bulkmail audit``
lists them); the chunks claimed in the same batch are delivered without a duplicate flag;
the worker is neither restarted nor stuck, and goes on with the next job.
"""

from __future__ import annotations

import json
from typing import Any

import msgpack
import pytest
import redis
from redis.asyncio import Redis

from engine.clock import SystemClock
from engine.config import QueueConfig
from engine.queue.audit import audit_job
from engine.queue.keys import Keys
from engine.queue.scripts import load_source
from engine.queue.store import QueueStore
from tests.support.builders import build, people
from tests.support.serve import Serve, cli, events, status
from tests.support.stores import open_store
from tests.support.waiting import wait_until
from tests.support.world import FAST, MailWorld, audit_ok, newsletter, submit, wait_done

# Two claims without finishing is enough to show the old behaviour (every chunk of the batch
# quarantined) quickly; the fixed worker quarantines the bad chunk on its first claim.
POISON = FAST.replace("[queue]\n", "[queue]\nmax_claims = 2\n")
KEYS = Keys()


async def test_quarantine_script_takes_a_leased_chunk_out_and_leaves_its_recipients_queued(redis_url: str) -> None:
    """engine/queue/lua/quarantine.lua alone: compare-and-set on the owner, f -> q and F -> Q, the
    chunk neither leased nor ready, its reason kept; the invariant holds after each step."""
    client = Redis.from_url(redis_url)
    store = QueueStore(client, QueueConfig(chunk_size=4), SystemClock())
    script = client.register_script(load_source("quarantine"))
    k = store.keys
    try:
        spec, rcpts = build(people(8), id="poison")
        await store.submit(spec, rcpts)
        first, second = await store.claim("w1", max_chunks=2)
        args = [k.ns, first.lease, first.key, "corrupt chunk record: test"]
        assert await script(keys=[k.lease, k.owner, k.quarantine], args=[k.ns, "w2/1", *args[2:]]) == -1
        assert await script(keys=[k.lease, k.owner, k.quarantine], args=args) == 4
        assert (await audit_job(store, "poison")).ok
        status = await store.status("poison")
        assert status is not None and (status["queued"], status["in_flight"]) == (4, 4)
        assert await client.hget(k.quarantine, first.key) == b"corrupt chunk record: test"
        assert await client.zscore(k.lease, first.key) is None and await client.hget(k.owner, first.key) is None
        assert await client.zscore(k.lease, second.key) is not None  # the other chunk is untouched
        assert await client.lrange(k.ready("poison"), 0, -1) == []
        assert (await store.state_bytes("poison"))[:4] == b"qqqq"
        assert await store.claim("w1") == []  # not ready again
        # a second quarantine of the same chunk (a replay) finds no lease and changes nothing
        assert await script(keys=[k.lease, k.owner, k.quarantine], args=args) == -1
        assert (await audit_job(store, "poison")).ok
    finally:
        await client.aclose()


async def test_a_chunk_with_a_corrupt_index_list_is_quarantined_and_the_batch_goes_on(redis_url: str) -> None:
    client = Redis.from_url(redis_url)
    store = QueueStore(client, QueueConfig(chunk_size=4), SystemClock())
    try:
        spec, rcpts = build(people(12), id="idx")
        await store.submit(spec, rcpts)
        await client.hset(store.keys.chunks("idx"), "2#", b"\x00\x00\x01")  # 3 bytes: not a 4-byte index
        claimed = await store.claim("w1", max_chunks=3)
        assert sorted(c.chunk for c in claimed) == ["1", "3"]
        assert b"corrupt" in (await client.hget(store.keys.quarantine, "idx:2") or b"")
        report = await audit_job(store, "idx")
        assert report.ok and report.counters["queued"] == 4 and report.counters["in_flight"] == 8
    finally:
        await client.aclose()


async def test_a_healthy_chunk_whose_workers_keep_dying_is_not_quarantined(redis_url: str) -> None:
    async with open_store(redis_url, QueueConfig(chunk_size=4, lease=15.0, max_claims=3)) as (store, clock):
        client = store.redis
        spec, rcpts = build(people(4), id="unlucky")
        await store.submit(spec, rcpts)
        for attempt in range(5):
            (chunk,) = await store.claim(f"w{attempt}")
            clock.advance(10)  # the worker is alive: its heartbeat renews the lease ...
            assert await store.heartbeat(f"w{attempt}", [chunk]) == []
            clock.advance(16)  # ... then it is killed for reasons of its own, and the lease runs out
            assert await store.reap() == 1
        assert await client.hgetall(store.keys.quarantine) == {}
        (chunk,) = await store.claim("survivor")
        assert len(chunk.records) == 4 and chunk.duplicates == frozenset(range(4))
        assert (await audit_job(store, "unlucky")).ok


async def test_a_chunk_that_kills_its_worker_at_once_is_still_quarantined(redis_url: str) -> None:
    """The other side of the same rule: leases lost before their first renewal are strikes."""
    async with open_store(redis_url, QueueConfig(chunk_size=4, lease=15.0, max_claims=3)) as (store, clock):
        client = store.redis
        spec, rcpts = build(people(4), id="deadly")
        await store.submit(spec, rcpts)
        for attempt in range(3):
            (chunk,) = await store.claim(f"w{attempt}")
            clock.advance(16)  # the worker died before its first heartbeat
            assert await store.reap() == 1
        assert await store.claim("w3") == []
        assert b"3 times" in (await client.hget(store.keys.quarantine, "deadly:1") or b"")
        assert (await audit_job(store, "deadly")).ok


def hset(world: MailWorld, key: str, field: str, value: bytes) -> None:
    client = redis.Redis.from_url(world.redis_url)
    try:
        assert client.hexists(key, field), f"{key} has no field {field}"
        client.hset(key, field, value)
    finally:
        client.close()


def quarantine(world: MailWorld) -> dict[str, str]:
    client = redis.Redis.from_url(world.redis_url, decode_responses=True)
    try:
        return {str(k): str(v) for k, v in client.hgetall(KEYS.quarantine).items()}
    finally:
        client.close()


def audit_json(world: MailWorld, job: str) -> dict[str, Any]:
    result = cli(world.redis_url, "audit", job)
    assert result.returncode == 0, result.stdout + result.stderr
    return dict(json.loads(result.stdout))


def settled(world: MailWorld, job: str, serve: Serve) -> dict[str, Any] | None:
    """The job's status once nothing more will happen to it (nothing ready, leased or in flight,
    each recipient delivered or queued), or once the worker shows the old failure modes: a
    worker stuck re-reading a job, or restarted again and again."""
    s = status(world.redis_url, job)
    client = redis.Redis.from_url(world.redis_url, decode_responses=True)
    try:
        ready = client.llen(KEYS.ready(job))
        leased = [k for k in client.zrange(KEYS.lease, 0, -1) if str(k).startswith(f"{job}:")]
    finally:
        client.close()
    if not ready and not leased and s["in_flight"] == 0 and s["delivered"] + s["queued"] == s["total"]:
        return s
    log = serve.log_text()
    if log.count("cannot read job") >= 3 or log.count("exited with") >= 2:
        return s
    return None


def test_a_chunk_with_corrupt_records_is_quarantined_alone(mail_world: MailWorld) -> None:
    domains = mail_world.domains(3)
    job, _, _ = submit(mail_world, newsletter(domains, 300))  # three chunks of 100, no worker yet
    hset(mail_world, KEYS.chunks(job), "2", b"\xc1 this is not msgpack")
    serve = mail_world.serve(workers=1, config=mail_world.config(POISON))
    worker = serve.worker_pids()

    s = wait_until(lambda: settled(mail_world, job, serve), 30, 0.2, "the good chunks delivered")
    assert s is not None
    assert (s["delivered"], s["queued"], s["in_flight"]) == (200, 100, 0)
    assert quarantine(mail_world) == {f"{job}:2": quarantine(mail_world)[f"{job}:2"]}
    assert "corrupt" in quarantine(mail_world)[f"{job}:2"]
    evs = events(mail_world.redis_url, job)
    assert len(evs) == 200 and not any(e["possible_duplicate"] for e in evs)
    assert len({r for m in mail_world.received() for r in m.rcpt_tos}) == 200
    report = audit_json(mail_world, job)
    assert report["ok"] is True and report["queued"] == 100
    (entry,) = report["quarantined"]
    assert entry["chunk"] == f"{job}:2" and entry["recipients"] == 100 and "corrupt" in entry["reason"]

    assert serve.worker_pids() == worker and "exited with" not in serve.log_text()
    later, _, _ = submit(mail_world, newsletter(domains, 30, prefix="later"))
    assert wait_done(mail_world, later)["delivered"] == 30
    audit_ok(mail_world, job)


@pytest.mark.parametrize(
    "template",
    [b"\xc1 not msgpack at all", msgpack.packb({"v": 999, "from": "x@y.test"}), msgpack.packb([1, 2, 3])],
    ids=["garbage", "unknown-version", "not-a-map"],
)
def test_a_job_whose_template_cannot_be_decoded_is_quarantined_and_others_go_on(
    mail_world: MailWorld, template: bytes
) -> None:
    domains = mail_world.domains(3)
    bad, _, _ = submit(mail_world, newsletter(domains, 200, prefix="bad"))
    good, _, _ = submit(mail_world, newsletter(domains, 200, prefix="good"))
    hset(mail_world, KEYS.job(bad), "tpl", template)
    serve = mail_world.serve(workers=1, config=mail_world.config(POISON))
    worker = serve.worker_pids()

    s = wait_until(lambda: settled(mail_world, good, serve), 30, 0.2, "the good job delivered")
    assert s is not None
    assert s["delivered"] == 200
    wait_until(lambda: len(quarantine(mail_world)) == 2, 10, what="both chunks of the bad job quarantined")
    assert set(quarantine(mail_world)) == {f"{bad}:1", f"{bad}:2"}
    assert all("template" in reason for reason in quarantine(mail_world).values())
    bad_status = status(mail_world.redis_url, bad)
    assert (bad_status["queued"], bad_status["in_flight"], bad_status["delivered"]) == (200, 0, 0)
    assert not any(e["possible_duplicate"] for e in events(mail_world.redis_url, good))
    assert {r for m in mail_world.received() for r in m.rcpt_tos} == {f"good{i}@{domains[i % 3]}" for i in range(200)}
    assert sum(e["recipients"] for e in audit_json(mail_world, bad)["quarantined"]) == 200

    assert serve.worker_pids() == worker and "exited with" not in serve.log_text()
    later, _, _ = submit(mail_world, newsletter(domains, 30, prefix="later"))
    assert wait_done(mail_world, later)["delivered"] == 30
    audit_ok(mail_world, good)
    audit_ok(mail_world, bad)
