"""Redis refusing writes (RELIABILITY.md 4.1 #7): OOM, MISCONF, READONLY, NOPERM.

Each fault is set on a private redis-server while ``bulkmail serve`` delivers a job: a
``submit`` then fails with a clear error and exit code 1 and stores nothing; the workers log
the error and keep running (same PIDs, no restart), keep what they sent, and report it once
Redis takes writes again; the run then completes with nothing lost and ``bulkmail audit``
clean. NOPERM comes from an ACL user without a command or without a key the engine needs.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from redis.asyncio import Redis as AsyncRedis

from engine.clock import SystemClock
from engine.config import QueueConfig
from engine.errors import QueueError
from engine.queue.keys import Keys
from engine.queue.store import QueueStore
from tests.support.fault_servers import FaultRedis, fault_redis_servers
from tests.support.serve import cli, events
from tests.support.waiting import wait_until
from tests.support.world import FAST, MailWorld, audit_ok, newsletter, submit, wait_done

KEYS = Keys()
# What the server says for each fault (redis-py drops the OOM/READONLY/NOPERM code word of the
# errors it has a class for), as the user sees it on stderr and in the worker log ...
SERVER_WORDS = {
    "oom": "used memory > 'maxmemory'",
    "misconf": "unable to persist to disk",
    "readonly": "read only replica",
}
# ... and what bulkmail should add: the code word and what it means (patch C of the report).
CLEAR_WORDS = {
    "oom": ("OOM", "out of memory"),
    "misconf": ("MISCONF", "cannot persist"),
    "readonly": ("READONLY", "read-only replica"),
    "noperm-command": ("NOPERM", "+@scripting", "ACL"),  # names the command refused and what the user needs
    "noperm-key": ("NOPERM", "~bm:*", "ACL"),
}


@pytest.fixture
def fault_redis(tmp_path: Path) -> Iterator[Callable[..., FaultRedis]]:
    with fault_redis_servers(tmp_path, ACL_USERS) as make:
        yield make


ACL_USERS = [
    "user default on nopass ~* &* +@all",
    # may do everything but run scripts: every bulkmail transition is a Lua script
    "user noscript on >pw ~* &* +@all -@scripting",
    # may run everything on the job keys and lanes, but not the lease/owner/claims/quarantine keys
    "user nolease on >pw ~bm:job:* ~bm:jobs ~bm:lane:* ~bm:wake* ~bm:workers ~bm:retry ~bm:sites* "
    "~bm:site:* ~bm:suppress* &* +@all",
    # may write the job's own keys and the jobs index, but not the lanes a commit adds the job to
    "user nolane on >pw ~bm:job:* ~bm:jobs &* +@all",
]


def url_of(server: FaultRedis, user: str) -> str:
    return server.url.replace("redis://", f"redis://{user}:pw@")


def job_ids(server: FaultRedis) -> list[str]:
    client = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        return [str(j) for j in client.zrange(KEYS.jobs, 0, -1)]
    finally:
        client.close()


def delivered_once_or_flagged(world: MailWorld, job: str, prefix: str, count: int) -> None:
    received = Counter(r for m in world.received() for r in m.rcpt_tos if r.startswith(prefix))
    assert len(received) == count
    flagged = {e["rcpt"] for e in events(world.redis_url, job) if e["possible_duplicate"]}
    assert {r for r, n in received.items() if n > 1} <= flagged


@pytest.mark.parametrize("fault", ["oom", "misconf", "readonly"])
def test_redis_refusing_writes_fails_submit_clearly_and_workers_ride_it_out(
    fault_redis: Callable[..., FaultRedis], world_factory: Callable[[str], MailWorld], fault: str
) -> None:
    server = fault_redis()
    world = world_factory(server.url)
    domains = world.domains(6)
    serve = world.serve(workers=2, config=world.config(FAST))
    workers = sorted(serve.worker_pids())
    first, _, _ = submit(world, newsletter(domains, 1500, prefix="first"))
    wait_until(lambda: len(world.received()) >= 100, 30, what="delivery under way")

    getattr(server, fault)()
    refused = cli(server.url, "submit", world.job_file(newsletter(domains, 20, prefix="second")))
    assert refused.returncode == 1 and refused.stdout == "", refused.stdout
    assert refused.stderr.startswith("error: ") and SERVER_WORDS[fault] in refused.stderr
    assert job_ids(server) == [first]  # nothing of the refused job was stored
    # the workers see it too (heartbeats, reports, claims, maintenance), say so, and stay up
    wait_until(lambda: SERVER_WORDS[fault] in serve.log_text(), 30, what=f"a worker logging {fault}")
    assert sorted(serve.worker_pids()) == workers

    server.heal()
    final = wait_done(world, first, timeout=90)
    assert final["delivered"] == 1500
    delivered_once_or_flagged(world, first, "first", 1500)
    second, _, _ = submit(world, newsletter(domains, 20, prefix="second"))
    assert wait_done(world, second)["delivered"] == 20
    assert sorted(serve.worker_pids()) == workers and "exited with" not in serve.log_text()
    audit_ok(world, first)
    audit_ok(world, second)


def test_an_acl_user_without_scripts_gets_a_clear_error_naming_the_command(
    fault_redis: Callable[..., FaultRedis], world_factory: Callable[[str], MailWorld]
) -> None:
    server = fault_redis()
    url = url_of(server, "noscript")
    world = world_factory(url)
    domains = world.domains(3)
    refused = cli(url, "submit", world.job_file(newsletter(domains, 5)))
    assert refused.returncode == 1 and refused.stdout == ""
    # a small job is submitted in one pipeline, which first checks the scripts are loaded
    assert re.search(r"no permissions to run the '(evalsha|script\|exists)' command", refused.stderr), refused.stderr
    assert "+@scripting" in refused.stderr
    assert job_ids(server) == []

    serve = world.serve(workers=1, config=world.config(FAST))
    workers = serve.worker_pids()
    wait_until(lambda: serve.log_text().count("no permissions to run the 'evalsha' command") >= 2, 30,
               what="the worker logging NOPERM")
    assert serve.worker_pids() == workers and "exited with" not in serve.log_text()

    with server.admin() as admin:  # the operator fixes the ACL: the same workers carry on
        admin.acl_setuser("noscript", enabled=True, categories=["+@scripting"])
    job, _, _ = submit(world, newsletter(domains, 30))
    assert wait_done(world, job)["delivered"] == 30
    assert serve.worker_pids() == workers
    audit_ok(world, job)


def test_an_acl_user_without_a_needed_key_leaves_workers_running_until_it_is_fixed(
    fault_redis: Callable[..., FaultRedis], world_factory: Callable[[str], MailWorld]
) -> None:
    server = fault_redis()
    url = url_of(server, "nolease")
    world = world_factory(url)
    domains = world.domains(3)
    job, _, _ = submit(world, newsletter(domains, 40))  # submit touches only job keys and lanes
    serve = world.serve(workers=1, config=world.config(FAST))
    workers = serve.worker_pids()
    wait_until(lambda: serve.log_text().count("no permissions to access one of the keys") >= 2, 30,
               what="the worker logging NOPERM")
    status = json.loads(cli(url, "status", job, "--json").stdout)
    assert (status["queued"], status["in_flight"], status["delivered"]) == (40, 0, 0)  # nothing half-claimed
    assert serve.worker_pids() == workers and "exited with" not in serve.log_text()

    with server.admin() as admin:
        admin.acl_setuser("nolease", enabled=True, keys=["~bm:*"])
    assert wait_done(world, job)["delivered"] == 40
    assert serve.worker_pids() == workers
    audit_ok(world, job)


def claim_as(url: str) -> str:
    """The error a worker's claim gets (QueueStore, as the worker calls it)."""

    async def claim() -> None:
        client = AsyncRedis.from_url(url)
        try:
            await QueueStore(client, QueueConfig(), SystemClock()).claim("worker")
        finally:
            await client.aclose()

    with pytest.raises(QueueError) as refused:
        asyncio.run(claim())
    return str(refused.value)


@pytest.mark.parametrize("fault", ["oom", "misconf", "readonly", "noperm-command", "noperm-key"])
def test_redis_write_errors_are_named_clearly(
    fault_redis: Callable[..., FaultRedis], tmp_path: Path, fault: str
) -> None:
    server = fault_redis()
    if fault == "noperm-key":
        message = claim_as(url_of(server, "nolease"))
    else:
        url = url_of(server, "noscript") if fault == "noperm-command" else server.url
        if not fault.startswith("noperm"):
            getattr(server, fault)()
        path = tmp_path / "job.json"
        path.write_text(json.dumps({"from": "a@sender.test", "text": "hi", "recipients": ["b@one.test"]}))
        result = cli(url, "submit", str(path))
        assert result.returncode == 1
        message = result.stderr
    for word in CLEAR_WORDS[fault]:
        assert word in message, message
    assert "@user_script" not in message  # no script hashes and line numbers for the user


def test_a_submit_refused_at_its_commit_leaves_nothing_and_its_retry_is_refused_too(
    fault_redis: Callable[..., FaultRedis], tmp_path: Path
) -> None:
    server = fault_redis()
    url = url_of(server, "nolane")
    path = tmp_path / "job.json"
    path.write_text(json.dumps({"id": "half", "from": "a@sender.test", "text": "hi", "recipients": ["b@one.test"]}))
    first = cli(url, "submit", str(path))
    assert first.returncode == 1 and "access" in first.stderr, first.stderr
    retry = cli(url, "submit", str(path))
    assert retry.returncode == 1, retry.stdout + retry.stderr  # never "exists already" for a job not accepted
    client = redis.Redis.from_url(server.url)
    try:
        assert client.exists(KEYS.job("half")) == 0 and job_ids(server) == []
    finally:
        client.close()
