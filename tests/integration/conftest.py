"""A small mail world for end-to-end tests: domains in the loopback DNS server,
recording sinks playing their MX hosts on 127.0.0.2-4 (one port), and a way to
start ``bulkmail serve`` against them."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.dns_server import DnsServer
from tests.support.ports import free_port
from tests.support.serve import Serve
from tests.support.sinks import RecordingSink

MX_HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")


@dataclass
class MailWorld:
    redis_url: str
    dns: DnsServer
    port: int
    sinks: list[RecordingSink]
    tmp: Path
    serves: list[Serve] = field(default_factory=list)

    def domains(self, count: int, tld: str = "e2e.test") -> list[str]:
        """``d0.tld`` .. : MX ``mx{n%3}.tld`` -> 127.0.0.{2+n%3}."""
        self.dns.add_pattern(domain=f"d{{n}}.{tld}", count=count, mx=f"mx{{n%3}}.{tld}", a="127.0.0.{2+n%3}")
        return [f"d{n}.{tld}" for n in range(count)]

    def config(self, text: str) -> str:
        path = self.tmp / f"config{len(self.serves)}.toml"
        path.write_text(text)
        return str(path)

    def serve(self, workers: int = 2, config: str | None = None) -> Serve:
        log = self.tmp / f"serve{len(self.serves)}.log"
        serve = Serve(self.redis_url, dns=self.dns.address, smtp_port=self.port, workers=workers,
                      config=config, log=log)
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


@pytest.fixture
def mail_world(
    redis_url: str, dns_server: DnsServer, tmp_path: Path, smtp_sink: Callable[..., RecordingSink]
) -> Iterator[MailWorld]:
    port = free_port(MX_HOSTS[0], also=MX_HOSTS[1:])
    sinks = [smtp_sink(host, port) for host in MX_HOSTS]
    world = MailWorld(redis_url, dns_server, port, sinks, tmp_path)
    yield world
    for serve in world.serves:
        serve.stop()
