"""Durable acceptance: what the Redis in use promises about an acknowledged job, said out loud.

``bulkmail serve`` warns on stderr when acknowledged jobs are not fsynced before ``submit``
returns, ``bulkmail status --json`` carries a ``durability`` field, and ``submit`` uses WAITAOF
only where the server has it (Redis >= 7.2; this machine's 7.0 takes the "not supported" path).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from redis.asyncio import Redis

from engine.errors import QueueError
from engine.queue.durability import (
    AOF,
    AOF_ALWAYS,
    AOF_EVERYSEC,
    NONE,
    UNKNOWN,
    Durability,
    check_waitaof,
    probe,
    probe_url,
    redact,
    waitaof_command,
)
from tests.support.dns_server import DnsServer
from tests.support.fault_servers import FaultRedis, fault_redis_servers
from tests.support.ports import free_port
from tests.support.serve import Serve, cli
from tests.support.waiting import wait_until

ACL_USERS = [
    "user default on nopass ~* &* +@all",
    "user noconfig on >pw ~* &* +@all -config",
    "user blind on >pw ~* &* +@all -@dangerous",
]


@pytest.fixture
def fault_redis(tmp_path: Path) -> Iterator[Callable[..., FaultRedis]]:
    with fault_redis_servers(tmp_path, ACL_USERS) as make:
        yield make


def user_url(server: FaultRedis, user: str) -> str:
    return server.url.replace("redis://", f"redis://{user}:pw@")


@pytest.mark.parametrize(
    ("settings", "user", "mode", "source"),
    [
        ({"appendfsync": "always"}, None, AOF_ALWAYS, "config"),
        ({"appendfsync": "everysec"}, None, AOF_EVERYSEC, "config"),
        ({"appendonly": "no"}, None, NONE, "config"),
        ({"appendfsync": "everysec"}, "noconfig", AOF, "info"),  # CONFIG refused: INFO persistence
        ({"appendfsync": "always"}, "blind", UNKNOWN, "none"),  # CONFIG and INFO refused
    ],
)
def test_probe_reads_the_persistence_settings(
    fault_redis: Callable[..., FaultRedis], settings: dict[str, str], user: str | None, mode: str, source: str
) -> None:
    server = fault_redis(**settings)
    found = probe_url(user_url(server, user) if user else server.url)
    assert (found.mode, found.source) == (mode, source)
    assert found.version is not None and found.version[:2] >= (7, 0)  # HELLO answers even "blind"
    assert found.durable is (mode == AOF_ALWAYS)  # 7.0: no WAITAOF to make everysec durable
    if user:
        assert "NOPERM" in found.detail and "config" in found.detail


async def test_probe_on_the_clients_own_connection_pool(redis_url: str) -> None:
    client = Redis.from_url(redis_url)
    try:
        found = await probe(client)
    finally:
        await client.aclose()
    assert found == Durability(AOF_ALWAYS, found.version, "config") and found.durable


def test_probe_of_an_unreachable_redis_is_unknown_and_says_why() -> None:
    found = probe_url(f"redis://127.0.0.1:{free_port()}/0", timeout=2.0)
    assert found.mode == UNKNOWN and "unreachable" in found.detail
    assert found.warning("redis://u:secret@127.0.0.1:1/0") is not None
    assert "secret" not in (found.warning("redis://u:secret@127.0.0.1:1/0") or "")


def test_waitaof_is_used_only_where_the_server_has_it() -> None:
    old = Durability(AOF_EVERYSEC, (7, 0, 15))
    new = Durability(AOF_EVERYSEC, (7, 2, 0))
    assert not old.waitaof_supported and not old.use_waitaof and not old.durable
    assert new.waitaof_supported and new.use_waitaof and new.durable
    assert not Durability(AOF_ALWAYS, (7, 2, 4)).use_waitaof  # already fsynced before the reply
    assert not Durability(NONE, (7, 4, 0)).use_waitaof  # WAITAOF 1 is an error without AOF
    assert new.warning() is None and old.warning() is not None
    check_waitaof([1, 0])
    with pytest.raises(QueueError, match="did not confirm the AOF fsync"):
        check_waitaof([0, 0])
    assert redact("redis://bulk:s3cret@127.0.0.1:6379/0") == "redis://bulk:***@127.0.0.1:6379/0"


def test_waitaof_on_redis_7_0_is_an_unknown_command(fault_redis: Callable[..., FaultRedis]) -> None:
    """The 'not supported' path, on the real server: the probe says no, and rightly so."""
    server = fault_redis(appendfsync="everysec")
    found = probe_url(server.url)
    assert found.version is not None and found.version[:2] < (7, 2), "this test is for Redis < 7.2"
    assert not found.use_waitaof
    client = redis.Redis.from_url(server.url)
    try:
        with pytest.raises(redis.ResponseError, match="unknown command"):
            client.execute_command(*waitaof_command())
        job = {"from": "a@sender.test", "text": "hi", "recipients": ["b@one.test"]}
        path = server.directory / "job.json"
        path.write_text(json.dumps(job))
        submitted = cli(server.url, "submit", str(path))
        assert submitted.returncode == 0, submitted.stderr  # a WAITAOF sent here would have failed it
    finally:
        client.close()


def serve_stderr(url: str, dns: DnsServer, tmp_path: Path) -> str:
    log = tmp_path / f"serve-{free_port()}.log"
    with Serve(url, dns=dns.address, smtp_port=free_port(), workers=1, log=log) as serve:
        wait_until(lambda: "serving with" in serve.log_text(), 20, what="serve's start-up line")
    return log.read_text()


@pytest.mark.parametrize(
    ("settings", "user", "words"),
    [
        ({"appendfsync": "everysec"}, None, ["durability aof-everysec", "no WAITAOF", "LOST", "appendfsync always"]),
        ({"appendonly": "no"}, None, ["durability none", "appendonly no", "LOST"]),
        ({"appendfsync": "always"}, "noconfig", ["durability aof", "fsync policy cannot be read", "NOPERM"]),
    ],
)
def test_serve_warns_loudly_when_acknowledged_jobs_may_not_be_on_disk(
    fault_redis: Callable[..., FaultRedis], dns_server: DnsServer, tmp_path: Path,
    settings: dict[str, str], user: str | None, words: list[str],
) -> None:
    server = fault_redis(**settings)
    url = user_url(server, user) if user else server.url
    text = serve_stderr(url, dns_server, tmp_path)
    (warning,) = [line for line in text.splitlines() if line.startswith("WARNING: durability")]
    for word in words:
        assert word in warning, warning
    assert "pw@" not in text  # the password never reaches the log


def test_serve_is_quiet_about_an_aof_always_redis(fault_redis: Callable[..., FaultRedis], dns_server: DnsServer,
                                                  tmp_path: Path) -> None:
    text = serve_stderr(fault_redis(appendfsync="always").url, dns_server, tmp_path)
    assert "WARNING: durability" not in text
    assert "durability aof-always" in text


@pytest.mark.parametrize(("settings", "mode"), [({"appendfsync": "always"}, AOF_ALWAYS),
                                                ({"appendfsync": "everysec"}, AOF_EVERYSEC),
                                                ({"appendonly": "no"}, NONE)])
def test_status_json_says_how_durable_the_job_is(fault_redis: Callable[..., FaultRedis], tmp_path: Path,
                                                 settings: dict[str, str], mode: str) -> None:
    server = fault_redis(**settings)
    path = tmp_path / "job.json"
    path.write_text(json.dumps({"from": "a@sender.test", "text": "hi", "recipients": ["b@one.test"]}))
    job = cli(server.url, "submit", str(path)).stdout.splitlines()[0]
    result = cli(server.url, "status", job, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["durability"] == mode
