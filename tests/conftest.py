"""Fixtures live in tests/support/fixtures_*.py, one module per kind of real peer.

``async def`` tests run on a fresh event loop each (no plugin needed).
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest

pytest_plugins = [
    "tests.support.fixtures_redis",
    "tests.support.fixtures_dns",
    "tests.support.fixtures_smtp",
    "tests.support.fixtures_postfix",
]


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Any:
    if inspect.iscoroutinefunction(pyfuncitem.obj):
        names = pyfuncitem._fixtureinfo.argnames
        kwargs = {name: pyfuncitem.funcargs[name] for name in names}
        asyncio.run(pyfuncitem.obj(**kwargs))
        return True
    return None
