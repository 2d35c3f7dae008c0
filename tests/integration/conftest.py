"""Fixtures for end-to-end tests (see tests/support/world.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.dns_server import DnsServer
from tests.support.ports import free_port
from tests.support.sinks import RecordingSink
from tests.support.world import MX_HOSTS, MailWorld


@pytest.fixture
def world_factory(
    dns_server: DnsServer, tmp_path: Path, smtp_sink: Callable[..., RecordingSink]
) -> Iterator[Callable[[str], MailWorld]]:
    """``world_factory(redis_url)``: sinks and DNS for a Redis of the test's choosing."""
    worlds: list[MailWorld] = []

    def make(redis_url: str) -> MailWorld:
        port = free_port(MX_HOSTS[0], also=MX_HOSTS[1:])
        sinks = [smtp_sink(host, port) for host in MX_HOSTS]
        worlds.append(MailWorld(redis_url, dns_server, port, sinks, tmp_path))
        return worlds[-1]

    yield make
    for world in worlds:
        for serve in world.serves:
            serve.stop()


@pytest.fixture
def mail_world(redis_url: str, world_factory: Callable[[str], MailWorld]) -> MailWorld:
    return world_factory(redis_url)
