"""Open the Redis this command should use: --redis / BULKMAIL_REDIS_URL, or the embedded one."""

from __future__ import annotations

from redis.asyncio import Redis

from engine.config import RedisConfig
from engine.queue.embedded import embedded_url


def resolve_url(config: RedisConfig, *, start: bool = True) -> str:
    """A URL as given (redis://, rediss://, unix://, with user:password), or the embedded server's."""
    if config.url:
        return config.url
    return embedded_url(config.home, start=start, appendfsync=config.appendfsync)


def open_redis(url: str) -> Redis:
    return Redis.from_url(url, socket_connect_timeout=5.0, health_check_interval=30, retry_on_timeout=False)
