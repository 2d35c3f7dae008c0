"""A small mail world for end-to-end tests: domains in the loopback DNS server,
recording sinks playing their MX hosts on 127.0.0.2-4 (one port), ``bulkmail
serve`` started against them, and the checks every end-to-end test makes."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from engine.outcome import STATUSES
from engine.queue.keys import Keys
from tests.support.dns_server import DnsServer
from tests.support.serve import Serve, cli, status
from tests.support.sinks import RecordingSink
from tests.support.waiting import wait_until

# Short leases and retries so lost work and retries show up within seconds.
FAST = """
[queue]
lease = 2.0
heartbeat = 0.5
reap_interval = 0.3
[retry]
base = 0.5
jitter = 0.0
"""


MX_HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")


@dataclass
class MailWorld:
    redis_url: str
    dns: DnsServer
    port: int
    sinks: list[RecordingSink]
    tmp: Path
    serves: list[Serve] = field(default_factory=list)

    def domains(self, count: int, tld: str = "e2e.test", hosts: int = 3) -> list[str]:
        """``d0.tld`` .. : MX ``mx{n%hosts}.tld`` -> 127.0.0.{2+n%hosts} (hosts <= 3)."""
        self.dns.add_pattern(
            domain=f"d{{n}}.{tld}", count=count, mx=f"mx{{n%{hosts}}}.{tld}", a=f"127.0.0.{{2+n%{hosts}}}"
        )
        return [f"d{n}.{tld}" for n in range(count)]

    def config(self, text: str) -> str:
        path = self.tmp / f"config{len(self.serves)}.toml"
        path.write_text(text)
        return str(path)

    def serve(self, workers: int = 2, config: str | None = None, env: dict[str, str] | None = None) -> Serve:
        log = self.tmp / f"serve{len(self.serves)}.log"
        serve = Serve(self.redis_url, dns=self.dns.address, smtp_port=self.port, workers=workers,
                      config=config, log=log, env=env)
        self.serves.append(serve)
        return serve.start()

    def job_file(self, job: dict[str, Any]) -> str:
        path = self.tmp / f"job{len(list(self.tmp.glob('job*.json')))}.json"
        path.write_text(json.dumps(job))
        return str(path)

    def received(self) -> list[Any]:
        return [m for sink in self.sinks for m in sink.messages]

    def connections(self) -> int:
        return sum(sink.connections for sink in self.sinks)


def newsletter(domains: list[str], n: int, prefix: str = "user", **extra: object) -> dict[str, object]:
    return {
        "from": "news@sender.test",
        "subject": "News for {{name}}",
        "text": "Dear {{name}},\nyour number is {{number}}.\n" + "Lorem ipsum dolor sit amet.\n" * 40,
        "recipients": [
            {"to": f"{prefix}{i}@{domains[i % len(domains)]}", "vars": {"name": f"Person {i}", "number": i}}
            for i in range(n)
        ],
        **extra,
    }


def submit(world: MailWorld, job: dict[str, object], *args: str) -> tuple[str, str, str]:
    result = cli(world.redis_url, "submit", world.job_file(job), *args)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()[0], result.stdout, result.stderr


def wait_done(world: MailWorld, job: str, timeout: float = 60.0) -> dict[str, object]:
    return wait_until(lambda: (s := status(world.redis_url, job))["done"] and s, timeout, 0.2, f"job {job} done")


def audit_ok(world: MailWorld, job: str) -> None:
    """The conservation invariant, read from Redis alone, by ``bulkmail audit`` and by hand."""
    result = cli(world.redis_url, "audit", job)
    assert result.returncode == 0 and json.loads(result.stdout)["ok"] is True, result.stdout + result.stderr
    client = redis.Redis.from_url(world.redis_url)
    keys = Keys()
    raw = client.hgetall(keys.job(job))
    state_bytes: bytes = client.get(keys.states(job)) or b""  # type: ignore[assignment]
    states = Counter(state_bytes.decode())
    client.close()
    counters = {name: int(raw.get(name.encode(), 0)) for name in STATUSES}
    assert sum(counters.values()) == int(raw[b"total"]) == sum(states.values())
    assert counters["delivered"] == states["D"] and counters["bounced"] == states["b"]


