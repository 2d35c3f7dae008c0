"""Open the Redis this command should use: --redis / BULKMAIL_REDIS_URL, or the embedded one."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis

from engine.config import RedisConfig
from engine.queue.embedded import embedded_url


def resolve_url(config: RedisConfig, *, start: bool = True) -> str:
    """A URL as given (redis://, rediss://, unix://, with user:password), or the embedded server's."""
    if config.url:
        return config.url
    return embedded_url(config.home, start=start, appendfsync=config.appendfsync)


def open_redis(url: str, max_connections: int = 64) -> Redis:
    """A client whose commands wait for a free connection instead of failing when many run at once
    (a worker issues bursts of slot and token calls for many sites)."""
    pool = BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=30, socket_connect_timeout=5.0, health_check_interval=30
    )
    return Redis(connection_pool=pool)
