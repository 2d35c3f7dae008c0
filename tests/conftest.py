"""Fixtures live in tests/support/fixtures_*.py, one module per kind of real peer."""

pytest_plugins = [
    "tests.support.fixtures_redis",
    "tests.support.fixtures_dns",
    "tests.support.fixtures_smtp",
    "tests.support.fixtures_postfix",
]
