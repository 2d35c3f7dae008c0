"""pytest fixtures (registered by tests/conftest.py): smtp-sink processes and private Postfix MTAs.

Both are factories, so a test states the peer's behaviour where it uses it. Everything a
factory started is stopped at teardown, also when the test or a start failed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from tests.support.postfix import PostfixInstance, SinkOptions, SmtpSinkProcess


@pytest.fixture
def smtp_sink_process() -> Iterator[Callable[..., SmtpSinkProcess]]:
    """``smtp_sink_process(host="127.0.0.2", port=0, **SinkOptions fields)`` -> a running smtp-sink."""
    started: list[SmtpSinkProcess] = []

    def make(host: str = "127.0.0.2", port: int = 0, **options: Any) -> SmtpSinkProcess:
        sink = SmtpSinkProcess(host, port, SinkOptions(**options))
        started.append(sink)
        return sink.start()

    yield make
    for sink in reversed(started):
        sink.stop()


@pytest.fixture
def postfix_mta(smtp_sink_process: Callable[..., SmtpSinkProcess]) -> Iterator[Callable[..., PostfixInstance]]:
    """``postfix_mta(relay_to=None, *, routes=None, host="127.0.0.10", ...)`` -> a running Postfix.

    With neither ``relay_to`` nor ``routes``, a recording sink (``dump=True``) on 127.0.0.11 is
    started as its relayhost and is available as ``mta.relay_sink``.
    """
    started: list[PostfixInstance] = []

    def make(
        relay_to: SmtpSinkProcess | tuple[str, int] | None = None,
        *,
        routes: Mapping[str, tuple[str, int]] | None = None,
        host: str = "127.0.0.10",
        forbid_bare_newline: str | None = None,
        main_cf: Mapping[str, str] | None = None,
    ) -> PostfixInstance:
        if relay_to is None and not routes:
            relay_to = smtp_sink_process("127.0.0.11", dump=True)
        mta = PostfixInstance(host, relay_to=relay_to, routes=routes, forbid_bare_newline=forbid_bare_newline, main_cf=main_cf)
        started.append(mta)
        return mta.start()

    yield make
    for mta in reversed(started):
        mta.stop()
