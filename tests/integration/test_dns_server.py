"""The loopback DNS server itself: generated zones, the process mode, and that its faults are real.

Resolver behaviour is in test_resolver.py; these tests make sure the peer those
tests trust does what its docstring promises.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import pytest

from engine.config import DnsConfig
from engine.errors import DnsPermanent, DnsTemporary
from engine.mx import MxHost, Route
from engine.net.resolver import MxResolver
from tests.support.clock import ManualClock
from tests.support.dns_server import Answer, DnsServer, Zone


def route(resolver: MxResolver, domain: str) -> Route:
    return asyncio.run(resolver.route(domain))


# ------------------------------------------------------------------ the server's generated zones


def test_rule_hook_generates_answers(dns_server: DnsServer, resolver: MxResolver) -> None:
    def rule(qname: str, qtype: str) -> list[str] | str | Answer | None:
        if qname.endswith(".gen.test") and qname.startswith("d"):
            n = int(qname.split(".")[0][1:])
            return [f"10 mx{n % 3}.gen.test."] if qtype == "MX" else []
        if qname.startswith("mx") and qname.endswith(".gen.test"):
            return Answer(records=(f"127.0.3.{int(qname[2])}",), ttl=5) if qtype == "A" else []
        return None

    dns_server.add_rule(rule)
    result = route(resolver, "d7.gen.test")
    assert result.hosts == (MxHost("mx1.gen.test", 10, ("127.0.3.1",)),)
    assert dns_server.errors == []


def test_zone_file_pattern_for_the_demo(
    tmp_path: Path, dns_server: DnsServer, resolver: MxResolver
) -> None:
    zone = {
        "records": [
            {"name": "x.test", "type": "MX", "data": ["10 mx.x.test"]},
            {"name": "bad.test", "action": "servfail"},
        ],
        "patterns": [
            {
                "domain": "d{n}.demo.test",
                "count": 200,
                "mx": "mx{n%10}.demo.test",
                "a": "127.0.0.{10+n%10}",
            }
        ],
    }
    path = tmp_path / "zone.json"
    path.write_text(json.dumps(zone))
    dns_server.load_zone_file(str(path))
    assert route(resolver, "d199.demo.test").hosts == (
        MxHost("mx9.demo.test", 10, ("127.0.0.19",)),
    )
    assert (
        route(resolver, "d3.demo.test").site
        == route(resolver, "d13.demo.test").site
        == "mx3.demo.test"
    )
    with pytest.raises(DnsPermanent):
        route(resolver, "d200.demo.test")
    with pytest.raises(DnsTemporary):
        route(resolver, "bad.test")


def test_server_runs_as_a_separate_process(tmp_path: Path, dns_clock: ManualClock) -> None:
    path = tmp_path / "zone.json"
    path.write_text(
        json.dumps(
            {
                "patterns": [
                    {
                        "domain": "d{n}.bench.test",
                        "count": 1000,
                        "mx": "mx{n%50}.bench.test",
                        "a": "127.0.1.{n%50+1}",
                    }
                ]
            }
        )
    )
    command = [sys.executable, "-m", "tests.support.dns_server", "--zone", str(path)]
    root = Path(__file__).resolve().parents[2]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=root) as process:
        try:
            assert process.stdout is not None
            word, host, port = process.stdout.readline().split()
            assert word == "ready"
            resolver = MxResolver(DnsConfig(nameserver=(host, int(port)), timeout=2.0), dns_clock)
            result = route(resolver, "d999.bench.test")
            assert result.hosts == (MxHost("mx49.bench.test", 10, ("127.0.1.50",)),)
        finally:
            process.terminate()
            assert process.wait(timeout=10) == 0


# ------------------------------------------------------------------ the server's faults are real


def _ask(
    zone: Zone, name: str, rdtype: str, transport: str
) -> tuple[dns.message.Message, list[bytes]]:
    query = dns.message.make_query(name, rdtype)
    return query, zone.respond(query.to_wire(), transport)


def test_spoof_sends_a_wrong_id_answer_before_the_real_one() -> None:
    zone = Zone()
    zone.add_a("mx.z.test", ["127.0.0.1"])
    zone.spoof("mx.z.test")
    query, packets = _ask(zone, "mx.z.test", "A", "udp")
    bogus, real = (dns.message.from_wire(p) for p in packets)
    assert bogus.id != query.id and "192.0.2.66" in bogus.to_text()
    assert real.id == query.id and "127.0.0.1" in real.to_text()


def test_truncate_sets_tc_over_udp_only() -> None:
    zone = Zone()
    zone.add_a("mx.z.test", ["127.0.0.1"])
    zone.truncate("mx.z.test")
    (udp,) = (dns.message.from_wire(p) for p in _ask(zone, "mx.z.test", "A", "udp")[1])
    (tcp,) = (dns.message.from_wire(p) for p in _ask(zone, "mx.z.test", "A", "tcp")[1])
    assert udp.flags & dns.flags.TC and not udp.answer
    assert not tcp.flags & dns.flags.TC and tcp.answer


def test_negative_answers_carry_an_soa_for_caching() -> None:
    zone = Zone(negative_ttl=42)
    zone.add_a("mx.z.test", ["127.0.0.1"])
    (nx,) = (dns.message.from_wire(p) for p in _ask(zone, "nope.z.test", "MX", "udp")[1])
    (nodata,) = (dns.message.from_wire(p) for p in _ask(zone, "mx.z.test", "AAAA", "udp")[1])
    assert nx.rcode() == dns.rcode.NXDOMAIN and nx.authority[0].ttl == 42
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer and nodata.authority
