"""Real redis-server processes on free ports (never fakeredis)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from engine.queue.embedded import RedisProcess
from tests.support.ports import free_port


def start_redis(directory: Path, appendfsync: str = "always") -> RedisProcess:
    server = RedisProcess(directory, port=free_port(), appendfsync=appendfsync)
    server.start()
    return server


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisProcess) -> str:
    """The shared server, emptied for this test."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[Callable[..., RedisProcess]]:
    """A private server per call, for tests that kill or restart Redis."""
    started: list[RedisProcess] = []

    def make(appendfsync: str = "always") -> RedisProcess:
        server = start_redis(tmp_path / f"redis{len(started)}", appendfsync)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()
