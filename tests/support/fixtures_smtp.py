"""SMTP fixtures (registered by tests/conftest.py): recording sinks, scripted servers' helpers,
trustme certificates, free ports, and ``aio``, which runs a coroutine on asyncio or uvloop.

    def test_x(smtp_sink, free_port, aio):
        sink = smtp_sink("127.0.0.2", rcpt={"bad": "550 5.1.1 no"})   # port: a free one
        aio(deliver(sink.host, sink.port))      # once per loop kind: the test is parametrized

``aio`` bounds each run (30 s) so a hung client fails the test instead of the suite.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest
import uvloop

from tests.support.ports import free_port as _free_port
from tests.support.sinks import RecordingSink
from tests.support.tls import TestCa

T = TypeVar("T")


@pytest.fixture
def free_port() -> Callable[..., int]:
    """``free_port(host="127.0.0.1", also=("127.0.0.3",))``: a port free on all those addresses."""
    return _free_port


@pytest.fixture
def smtp_sink() -> Iterator[Callable[..., RecordingSink]]:
    """Factory: ``smtp_sink(host="127.0.0.2", port=None, **options) -> RecordingSink``, started."""
    started: list[RecordingSink] = []

    def make(host: str = "127.0.0.2", port: int | None = None, **options: Any) -> RecordingSink:
        sink = RecordingSink(host, port or _free_port(host), **options)
        sink.start()
        started.append(sink)
        return sink

    yield make
    for sink in started:
        sink.stop()


@pytest.fixture(scope="session")
def test_ca() -> TestCa:
    return TestCa()


@pytest.fixture(params=["asyncio", "uvloop"])
def aio(request: pytest.FixtureRequest) -> Iterator[Callable[[Coroutine[Any, Any, T]], T]]:
    """Run coroutines on a fresh loop of each kind; the engine must work on both."""
    factory = uvloop.new_event_loop if request.param == "uvloop" else None
    with asyncio.Runner(loop_factory=factory) as runner:

        def run(coro: Coroutine[Any, Any, T]) -> T:
            return runner.run(asyncio.wait_for(coro, 30))

        yield run
