"""The benchmark's rendered messages are canonical by construction, which is why its client
run may tell bulkmail's client so (``Transaction.canonical``, benchmarks/client_bench.py):
the full scan would send the very same bytes."""

from __future__ import annotations

import pytest

from benchmarks.workloads import MessageTemplate
from engine.smtp.data import MAX_LINE, encode


@pytest.mark.parametrize("size", [2048, 20 * 1024, 100 * 1024])
def test_rendered_benchmark_message_is_canonical(size: int) -> None:
    template = MessageTemplate(size)
    message = template.render(b"u123@d7.bench.test", b"Reader 123")
    assert message.endswith(b"\r\n") and message.isascii()
    lines = message[:-2].split(b"\r\n")
    assert all(b"\r" not in line and b"\n" not in line and len(line) <= MAX_LINE for line in lines)
    assert encode(message, canonical=True) == encode(message)
    assert abs(len(message) - size) < size * 0.1
