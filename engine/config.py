"""Immutable configuration, parsed once at the edge and passed down explicitly.

Each component takes only the sub-config it needs. Defaults follow RFC 5321 and
what Postfix/KumoMTA users expect; each default says where it comes from.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from engine.errors import InputError

TlsPolicy = Literal["none", "opportunistic", "required", "verify"]
TLS_POLICIES: tuple[str, ...] = ("none", "opportunistic", "required", "verify")


@dataclass(frozen=True, slots=True)
class SmtpTimeouts:
    """Per-phase client timeouts in seconds (RFC 5321 section 4.5.3.2 where it gives one)."""

    connect: float = 30.0  # Postfix smtp_connect_timeout
    greeting: float = 300.0
    ehlo: float = 300.0
    starttls: float = 300.0
    mail: float = 300.0
    rcpt: float = 300.0
    data: float = 120.0  # DATA initiation
    data_block: float = 180.0  # while the peer does not read what we write
    data_end: float = 600.0  # reply to the final "."
    rset: float = 20.0  # Postfix smtp_rset_timeout
    noop: float = 20.0
    quit: float = 20.0


@dataclass(frozen=True, slots=True)
class SmtpLimits:
    """Bounds that protect a worker from a hostile or broken peer."""

    max_reply_line: int = 4096  # RFC 5321 says 512; real servers exceed it, we stay bounded
    max_reply_lines: int = 200
    max_reply_bytes: int = 65536


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    helo: str = "localhost"
    port: int = 25
    tls_policy: TlsPolicy = "opportunistic"
    ca_file: str | None = None  # None: the system trust store
    timeouts: SmtpTimeouts = field(default_factory=SmtpTimeouts)
    limits: SmtpLimits = field(default_factory=SmtpLimits)
    max_conns_per_mx: int = 20  # per worker process and MX host; fleet-wide limits are in [shaping]
    pipeline_depth: int = 4  # transactions handed to one connection ahead (2 vs 4: +8% msg/s, benchmarks)
    allow_private_mx: bool = False


@dataclass(frozen=True, slots=True)
class DnsConfig:
    nameserver: tuple[str, int] | None = None  # --dns HOST:PORT; None: /etc/resolv.conf
    timeout: float = 5.0  # whole lookup, all tries
    max_mx_hosts: int = 5  # Postfix smtp_mx_address_limit
    negative_ttl: float = 300.0  # cap for caching NXDOMAIN/null MX answers
    temporary_ttl: float = 30.0  # how long a SERVFAIL/timeout answer is remembered
    cache_size: int = 100_000  # cached domains (and MX hosts) per resolver; expired ones go first
    shared: bool = True  # one lookup per domain for the whole fleet, answers shared through Redis
    max_inflight: int = 64  # lookups in flight per worker: a job's first burst of domains must not flood
    # the nameserver (1,000 new domains at once from 4 workers made a resolver drop queries)


@dataclass(frozen=True, slots=True)
class RetryConfig:
    """Jittered exponential backoff, in the spirit of Postfix (300 s minimum) and KumoMTA."""

    base: float = 300.0
    factor: float = 2.0
    cap: float = 4 * 3600.0
    jitter: float = 0.2  # +-20%
    default_max_age: float = 5 * 86400.0  # Postfix maximal_queue_lifetime


@dataclass(frozen=True, slots=True)
class QueueConfig:
    namespace: str = "bm"
    chunk_size: int = 100  # recipients per stored chunk (one claim unit)
    submit_block: int = 10000  # recipients sorted by domain together at submit time
    lease: float = 15.0  # seconds a claim is held without a heartbeat
    heartbeat: float = 5.0
    reap_interval: float = 2.0
    claim_chunks: int = 16  # chunks per claim call
    window: int = 4000  # recipients a worker holds at most
    max_claims: int = 5  # a chunk claimed this many times without finishing is quarantined
    events: bool = True  # one event per delivery attempt in a per-job stream
    events_maxlen: int = 2_000_000  # per job, approximate trim
    report_interval: float = 0.01  # seconds between outcome flushes
    report_batch: int = 2000  # outcomes per flush at most


@dataclass(frozen=True, slots=True)
class RedisConfig:
    url: str | None = None  # None: the embedded redis-server under home
    home: str = ".bulkmail"
    appendfsync: Literal["always", "everysec"] = "always"


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    workers: int = 0  # bulk worker processes; 0: CPU count
    transactional_workers: int = 1  # processes that take only transactional mail, so it never queues behind bulk
    drain_timeout: float = 5.0  # SIGTERM: seconds for in-flight transactions to finish
    restart_backoff: float = 1.0


@dataclass(frozen=True, slots=True)
class Limits:
    """Defaults follow Postfix (destination concurrency 20 starting at 5, 50 recipients per
    transaction) and KumoMTA (no rate limit unless configured, ~1000 messages per connection)."""

    max_connections: int = 20  # per bucket, all workers together
    initial_connections: int = 5  # slow start; grows by one per success run (Postfix-style)
    max_new_connections_per_minute: int = 0  # 0: unlimited
    max_messages_per_connection: int = 1000
    max_recipients_per_transaction: int = 50
    messages_per_second: float = 0.0  # 0: unlimited
    messages_per_minute: float = 0.0
    messages_per_hour: float = 0.0
    idle_timeout: float = 5.0

    def rate_windows(self) -> tuple[tuple[float, float], ...]:
        """(refill per second, capacity) of each configured rate limit."""
        windows = []
        for rate, seconds in (
            (self.messages_per_second, 1.0),
            (self.messages_per_minute, 60.0),
            (self.messages_per_hour, 3600.0),
        ):
            if rate > 0:
                windows.append((rate / seconds, max(rate, 1.0)))
        return tuple(windows)


@dataclass(frozen=True, slots=True)
class AdaptiveConfig:
    """Additive increase, multiplicative decrease on 'slow down' signals."""

    decrease_factor: float = 0.5
    increase_every: int = 1  # one more connection per <current limit> deliveries (Postfix's rule)
    rate_step: float = 0.1  # rate factor regained per success run
    min_rate_factor: float = 0.05
    cooldown: float = 10.0  # seconds: one burst of 421s counts as one signal
    min_connections: int = 1


@dataclass(frozen=True, slots=True)
class ShapingConfig:
    default: Limits = field(default_factory=Limits)
    mx_suffix: tuple[tuple[str, Mapping[str, Any]], ...] = ()
    site: tuple[tuple[str, Mapping[str, Any]], ...] = ()
    domain: tuple[tuple[str, Mapping[str, Any]], ...] = ()
    adaptive: AdaptiveConfig = field(default_factory=AdaptiveConfig)


@dataclass(frozen=True, slots=True)
class BounceConfig:
    """What the bounce domain is and how its addresses are signed.

    ``domain`` empty turns VERP off (the envelope sender stays the job's ``from``).
    """

    domain: str = ""  # e.g. bounce.example.org: its MX must point at `bulkmail bounces serve`
    prefix: str = "bounces"
    secret: str = ""  # HMAC key; BULKMAIL_BOUNCE_SECRET
    listen: str = "127.0.0.1:2525"  # where `bounces serve` listens
    feedback_addresses: tuple[str, ...] = ("fbl", "abuse")  # local parts that take ARF reports
    max_message_bytes: int = 10 * 1024 * 1024
    max_mime_depth: int = 8
    unverified_maxlen: int = 10_000  # forged / unmatched reports kept for inspection

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BounceConfig:
        env = os.environ if env is None else env
        base = cls()
        return cls(
            domain=env.get("BULKMAIL_BOUNCE_DOMAIN", base.domain).lower(),
            prefix=env.get("BULKMAIL_BOUNCE_PREFIX", base.prefix),
            secret=env.get("BULKMAIL_BOUNCE_SECRET", base.secret),
            listen=env.get("BULKMAIL_BOUNCE_LISTEN", base.listen),
        )


@dataclass(frozen=True, slots=True)
class EngineConfig:
    redis: RedisConfig = field(default_factory=RedisConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    dns: DnsConfig = field(default_factory=DnsConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    shaping: ShapingConfig = field(default_factory=ShapingConfig)
    bounce: BounceConfig = field(default_factory=BounceConfig)

    def to_mapping(self) -> dict[str, Any]:
        return _to_mapping(self)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> EngineConfig:
        rest = {key: value for key, value in data.items() if key != "shaping"}
        result: EngineConfig = _from_mapping(cls, rest)
        if "shaping" in data:
            result = replace(result, shaping=parse_shaping(data["shaping"]))
        return result


def _to_mapping(obj: Any) -> Any:
    if hasattr(obj, "__dataclass_fields__"):
        return {f.name: _to_mapping(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, tuple):
        return list(obj)
    return obj


def _from_mapping(cls: Any, data: Mapping[str, Any]) -> Any:
    kwargs: dict[str, Any] = {}
    hints = {f.name: f for f in fields(cls)}
    for key, value in data.items():
        if key not in hints:
            raise ValueError(f"unknown configuration key {cls.__name__}.{key}")
        default = getattr(cls(), key)
        if hasattr(default, "__dataclass_fields__") and isinstance(value, Mapping):
            kwargs[key] = _from_mapping(type(default), value)
        elif isinstance(value, list):
            kwargs[key] = tuple(value)
        else:
            kwargs[key] = value
    return cls(**kwargs)


_LIMIT_FIELDS = {f.name: f.type for f in fields(Limits)}
_ADAPTIVE_FIELDS = {f.name for f in fields(AdaptiveConfig)}


def _override(where: str, data: Any) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise InputError("must be a table of limits", field=where)
    result: dict[str, Any] = {}
    for key, value in data.items():
        if key not in _LIMIT_FIELDS:
            raise InputError(f"unknown limit (known: {', '.join(_LIMIT_FIELDS)})", field=f"{where}.{key}")
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise InputError("must be a number >= 0", field=f"{where}.{key}")
        result[key] = float(value) if _LIMIT_FIELDS[key] == "float" else int(value)
    return result


def parse_shaping(data: Mapping[str, Any]) -> ShapingConfig:
    """The ``[shaping]`` table of the TOML config; errors name the key."""
    known = {"default", "mx_suffix", "site", "domain", "adaptive"}
    for key in data:
        if key not in known:
            raise InputError(f"unknown section (known: {', '.join(sorted(known))})", field=f"shaping.{key}")
    default = replace(Limits(), **_override("shaping.default", data.get("default", {})))
    groups = {}
    for kind in ("mx_suffix", "site", "domain"):
        table = data.get(kind, {})
        if not isinstance(table, Mapping | list):
            raise InputError("must be a table", field=f"shaping.{kind}")
        pairs = table.items() if isinstance(table, Mapping) else table  # TOML tables, or to_mapping() pairs
        groups[kind] = tuple(
            (str(name).lower(), _override(f"shaping.{kind}.{name}", value)) for name, value in pairs
        )
    adaptive_data = data.get("adaptive", {})
    unknown = set(adaptive_data) - _ADAPTIVE_FIELDS
    if unknown:
        raise InputError("unknown setting", field=f"shaping.adaptive.{sorted(unknown)[0]}")
    adaptive = replace(AdaptiveConfig(), **adaptive_data)
    return ShapingConfig(default, groups["mx_suffix"], groups["site"], groups["domain"], adaptive)


def redis_from_env(url: str | None = None, env: Mapping[str, str] | None = None) -> RedisConfig:
    """--redis beats BULKMAIL_REDIS_URL; BULKMAIL_HOME places the embedded instance."""
    env = os.environ if env is None else env
    return RedisConfig(
        url=url or env.get("BULKMAIL_REDIS_URL") or None,
        home=env.get("BULKMAIL_HOME", ".bulkmail"),
    )


def with_overrides(config: EngineConfig, **sections: Any) -> EngineConfig:
    """Replace whole sections, e.g. ``with_overrides(cfg, smtp=replace(cfg.smtp, port=2525))``."""
    return replace(config, **sections)
