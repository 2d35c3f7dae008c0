"""pytest fixtures (registered by tests/conftest.py): the loopback DNS server and a resolver on it.

One server per session (starting a thread and two sockets per test is waste);
its records, faults, rules and counters are cleared around every test.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from engine.config import DnsConfig
from engine.net.resolver import MxResolver
from tests.support.clock import ManualClock
from tests.support.dns_server import DnsServer

# Small enough that timeout tests stay fast, large enough for a loaded CI machine on loopback.
TEST_DNS_TIMEOUT = 0.5


@pytest.fixture(scope="session")
def dns_server_session() -> Iterator[DnsServer]:
    server = DnsServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def dns_server(dns_server_session: DnsServer) -> Iterator[DnsServer]:
    """The session's DNS server, empty: unknown names answer NXDOMAIN."""
    dns_server_session.clear()
    yield dns_server_session
    dns_server_session.clear()


@pytest.fixture
def dns_clock() -> ManualClock:
    """The clock the ``resolver`` fixture caches on; advance it to expire TTLs."""
    return ManualClock()


@pytest.fixture
def dns_config(dns_server: DnsServer) -> DnsConfig:
    return DnsConfig(nameserver=dns_server.address, timeout=TEST_DNS_TIMEOUT)


@pytest.fixture
def resolver(dns_config: DnsConfig, dns_clock: ManualClock) -> MxResolver:
    """An MxResolver pointed at ``dns_server``, seeded, on ``dns_clock``."""
    return MxResolver(dns_config, dns_clock, rng=random.Random(5321))
