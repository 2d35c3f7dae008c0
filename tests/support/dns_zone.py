"""The answering half of the loopback DNS server: a zone that turns query bytes into reply bytes.

No sockets and no threads here (``tests.support.dns_server`` adds those), so the
answer logic is a plain function of the zone contents. The zone file format and
the rule contract are described in ``tests.support.dns_server``.
"""

from __future__ import annotations

import ast
import json
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

ACTIONS = ("nxdomain", "servfail", "refuse", "drop", "truncate", "spoof")
MAX_CHAIN = 8
_BOGUS = {"A": "192.0.2.66", "AAAA": "2001:db8::66", "MX": "10 spoofed.invalid."}


@dataclass(frozen=True, slots=True)
class Answer:
    """What a rule returns when a bare list or action string is not enough."""

    records: tuple[str, ...] = ()
    ttl: int | None = None
    action: str | None = None


Rule = Callable[[str, str], "None | Sequence[str] | str | Answer"]


def _norm(name: str) -> str:
    return name.strip().rstrip(".").lower()


def _absolute(name: str) -> str:
    return "." if _norm(name) == "" else _norm(name) + "."


@dataclass
class _Tables:
    records: dict[tuple[str, str], tuple[int, list[str]]] = field(default_factory=dict)
    names: set[str] = field(default_factory=set)  # owners of static records (NODATA vs NXDOMAIN)
    actions: dict[tuple[str, str], str] = field(default_factory=dict)  # (name, qtype or "*")
    rules: list[Rule] = field(default_factory=list)


class Zone:
    """Records, faults and rules, and the answer to one query in wire format (no I/O)."""

    def __init__(self, ttl: int = 300, negative_ttl: int = 60) -> None:
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self._defaults = (ttl, negative_ttl)
        self.errors: list[str] = []  # exceptions raised by rules (answered SERVFAIL)
        self._zone = _Tables()
        self._counts: Counter[tuple[str, str, str]] = Counter()
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- records
    def add_record(
        self, name: str, rdtype: str, data: Iterable[str], ttl: int | None = None
    ) -> None:
        key = (_norm(name), rdtype.upper())
        texts = [str(item) for item in data]
        for text in texts:  # fail here, not later inside the server thread
            dns.rdata.from_text(dns.rdataclass.IN, key[1], text, origin=dns.name.root)
        with self._lock:
            old = self._zone.records.get(key, (0, []))[1]
            merged = old + [t for t in texts if t not in old]
            self._zone.records[key] = (self.ttl if ttl is None else ttl, merged)
            self._zone.names.add(key[0])

    def add_mx(self, domain: str, hosts: Iterable[tuple[int, str]], ttl: int | None = None) -> None:
        self.add_record(domain, "MX", [f"{pref} {_absolute(host)}" for pref, host in hosts], ttl)

    def add_a(self, name: str, addresses: Iterable[str], ttl: int | None = None) -> None:
        self.add_record(name, "A", addresses, ttl)

    def add_aaaa(self, name: str, addresses: Iterable[str], ttl: int | None = None) -> None:
        self.add_record(name, "AAAA", addresses, ttl)

    def add_cname(self, name: str, target: str, ttl: int | None = None) -> None:
        with self._lock:
            self._zone.records.pop((_norm(name), "CNAME"), None)  # a CNAME has one target
        self.add_record(name, "CNAME", [_absolute(target)], ttl)

    def null_mx(self, domain: str, ttl: int | None = None) -> None:
        self.add_mx(domain, [(0, ".")], ttl)

    def add_rule(self, rule: Rule) -> None:
        with self._lock:
            self._zone.rules.append(rule)

    # ----------------------------------------------------------------- faults
    def set_action(self, name: str, action: str, qtype: str | None = None) -> None:
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}; one of {ACTIONS}")
        with self._lock:
            self._zone.actions[(_norm(name), (qtype or "*").upper())] = action

    def nxdomain(self, name: str) -> None:
        self.set_action(name, "nxdomain")

    def servfail(self, name: str, qtype: str | None = None) -> None:
        self.set_action(name, "servfail", qtype)

    def refuse(self, name: str, qtype: str | None = None) -> None:
        self.set_action(name, "refuse", qtype)

    def no_answer(self, name: str, qtype: str | None = None) -> None:
        """Drop the query: the client times out."""
        self.set_action(name, "drop", qtype)

    def truncate(self, name: str, qtype: str | None = None) -> None:
        self.set_action(name, "truncate", qtype)

    def spoof(self, name: str, qtype: str | None = None) -> None:
        """Over UDP, send a bogus answer with the wrong query ID just before the real one."""
        self.set_action(name, "spoof", qtype)

    def clear(self) -> None:
        """Forget records, faults, rules, counters and errors, and restore the TTLs (between tests)."""
        with self._lock:
            self._zone = _Tables()
            self.ttl, self.negative_ttl = self._defaults
            self._counts.clear()
            self.errors.clear()

    reset = clear

    # ----------------------------------------------------------------- zone files
    def add_pattern(
        self,
        domain: str,
        count: int,
        mx: str | Sequence[str] | None = None,
        a: str | Sequence[str] | None = None,
        aaaa: str | Sequence[str] | None = None,
        start: int = 0,
        ttl: int | None = None,
    ) -> None:
        """Expand a generated zone (see the module docstring) into static records."""
        mxs = [mx] if isinstance(mx, str) else list(mx or [])
        v4 = [a] if isinstance(a, str) else list(a or [])
        v6 = [aaaa] if isinstance(aaaa, str) else list(aaaa or [])
        for n in range(start, start + count):
            name = _expand(domain, n)
            hosts = [_expand(m, n) for m in mxs]
            if hosts:
                self.add_mx(name, [(10 * (i + 1), h) for i, h in enumerate(hosts)], ttl)
            for target in hosts or [name]:
                if v4:
                    self.add_a(target, [_expand(t, n) for t in v4], ttl)
                if v6:
                    self.add_aaaa(target, [_expand(t, n) for t in v6], ttl)

    def load_zone(self, zone: Mapping[str, Any]) -> None:
        self.ttl = int(zone.get("ttl", self.ttl))
        self.negative_ttl = int(zone.get("negative_ttl", self.negative_ttl))
        for record in zone.get("records", []):
            if "action" in record:
                self.set_action(record["name"], record["action"], record.get("type"))
            else:
                self.add_record(record["name"], record["type"], record["data"], record.get("ttl"))
        for pattern in zone.get("patterns", []):
            self.add_pattern(**pattern)

    def load_zone_file(self, path: str) -> None:
        with open(path, encoding="utf-8") as handle:
            self.load_zone(json.load(handle))

    # ----------------------------------------------------------------- counters
    def query_count(
        self, name: str | None = None, qtype: str | None = None, transport: str | None = None
    ) -> int:
        """Queries received, optionally only for one name, type and/or transport ("udp"/"tcp")."""
        with self._lock:
            return sum(
                n
                for (tr, qn, qt), n in self._counts.items()
                if (name is None or qn == _norm(name))
                and (qtype is None or qt == qtype.upper())
                and (transport is None or tr == transport)
            )

    @property
    def queries(self) -> int:
        return self.query_count()

    # ----------------------------------------------------------------- answering
    def respond(self, wire: bytes, transport: str) -> list[bytes]:
        """The datagrams (or TCP messages) to send back for one query; [] drops it."""
        try:
            return self._respond(wire, transport)
        except Exception as exc:  # a bug here must show up in the test, not kill the server
            self.errors.append(f"answering a {transport} query: {exc!r}")
            return []

    def _respond(self, wire: bytes, transport: str) -> list[bytes]:
        try:
            query = dns.message.from_wire(wire)
            question = query.question[0]
        except (dns.exception.DNSException, IndexError):
            return []
        qname = _norm(question.name.to_text())
        qtype = dns.rdatatype.to_text(question.rdtype)
        with self._lock:
            self._counts[(transport, qname, qtype)] += 1
            action = self._zone.actions.get((qname, qtype)) or self._zone.actions.get((qname, "*"))
        if action is None and isinstance(found := self._lookup(qname, qtype), str):
            action = found  # a rule asked for a fault
        if action == "drop":
            return []
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA | dns.flags.RA
        if action in ("servfail", "refuse"):
            response.set_rcode(dns.rcode.SERVFAIL if action == "servfail" else dns.rcode.REFUSED)
            return [response.to_wire()]
        if action == "truncate" and transport == "udp":
            response.flags |= dns.flags.TC
            return [response.to_wire()]
        if action == "nxdomain":
            self._negative(response, qname, dns.rcode.NXDOMAIN)
        else:
            self._fill(response, qname, qtype)
        max_size = (
            65535 if transport == "tcp" else max(512, query.payload if query.edns >= 0 else 512)
        )
        try:
            real = response.to_wire(max_size=max_size)
        except dns.exception.TooBig:
            truncated = dns.message.make_response(query)
            truncated.flags |= dns.flags.AA | dns.flags.RA | dns.flags.TC
            real = truncated.to_wire()
        if action == "spoof" and transport == "udp":
            return [self._bogus(query, qname, qtype), real]
        return [real]

    def _lookup(self, name: str, qtype: str) -> tuple[int, list[str]] | str | None:
        """Records of ``qtype`` at ``name`` from the rules, then the static zone; a str is an action."""
        with self._lock:
            rules = list(self._zone.rules)
            static = self._zone.records.get((name, qtype))
        for rule in rules:
            try:
                result = rule(name, qtype)
            except Exception as exc:  # a broken rule must not kill the server thread
                self.errors.append(f"rule {rule!r} on {name} {qtype}: {exc!r}")
                return "servfail"
            if result is None:
                continue
            if isinstance(result, str):
                return result
            if isinstance(result, Answer):
                if result.action:
                    return result.action
                return (self.ttl if result.ttl is None else result.ttl, list(result.records))
            return (self.ttl, list(result))
        return static

    def _exists(self, name: str) -> bool:
        with self._lock:
            return name in self._zone.names

    def _fill(self, response: dns.message.Message, qname: str, qtype: str) -> None:
        """Answer with CNAME chaining; NXDOMAIN or NODATA with an SOA when nothing matches."""
        name = qname
        for _ in range(MAX_CHAIN):
            found = self._lookup(name, qtype)
            if isinstance(found, str):  # a rule's fault at a CNAME target
                if found == "nxdomain":
                    self._negative(response, name, dns.rcode.NXDOMAIN)
                else:
                    response.set_rcode(
                        dns.rcode.REFUSED if found == "refuse" else dns.rcode.SERVFAIL
                    )
                return
            if found is not None:
                ttl, texts = found
                if texts:
                    response.answer.append(
                        dns.rrset.from_text_list(_absolute(name), ttl, "IN", qtype, texts)
                    )
                    return
                self._negative(
                    response, name, dns.rcode.NOERROR
                )  # a rule said: exists, no such type
                return
            cname = self._lookup(name, "CNAME") if qtype != "CNAME" else None
            if isinstance(cname, tuple) and cname[1]:
                response.answer.append(
                    dns.rrset.from_text_list(_absolute(name), cname[0], "IN", "CNAME", cname[1])
                )
                name = _norm(cname[1][0])
                continue
            self._negative(
                response, name, dns.rcode.NOERROR if self._exists(name) else dns.rcode.NXDOMAIN
            )
            return
        response.set_rcode(dns.rcode.SERVFAIL)  # CNAME loop

    def _negative(self, response: dns.message.Message, name: str, rcode: dns.rcode.Rcode) -> None:
        labels = name.split(".")
        zone = ".".join(labels[-2:]) if len(labels) >= 2 else name
        soa = f"ns.{_absolute(zone)} hostmaster.{_absolute(zone)} 1 3600 600 86400 {self.negative_ttl}"
        response.authority.append(
            dns.rrset.from_text(_absolute(zone), self.negative_ttl, "IN", "SOA", soa)
        )
        response.set_rcode(rcode)

    def _bogus(self, query: dns.message.Message, qname: str, qtype: str) -> bytes:
        bogus = dns.message.make_response(query)
        bogus.id = (query.id + 1) & 0xFFFF
        if qtype in _BOGUS:
            bogus.answer.append(
                dns.rrset.from_text(_absolute(qname), 3600, "IN", qtype, _BOGUS[qtype])
            )
        return bogus.to_wire()


_TEMPLATE = re.compile(r"\{([^{}]*)\}")
_OPERATORS: dict[type, Callable[[int, int], int]] = {
    ast.Add: lambda x, y: x + y,
    ast.Sub: lambda x, y: x - y,
    ast.Mult: lambda x, y: x * y,
    ast.FloorDiv: lambda x, y: x // y,
    ast.Mod: lambda x, y: x % y,
}


def _expand(template: str, n: int) -> str:
    """Fill ``{expr}`` with integer arithmetic on ``n``: "127.0.0.{10+n%10}" -> "127.0.0.13"."""

    def value(node: ast.AST) -> int:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.Name) and node.id == "n":
            return n
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](value(node.left), value(node.right))
        raise ValueError(f"pattern {template!r}: only integers, n and + - * // % are allowed")

    return _TEMPLATE.sub(
        lambda m: str(value(ast.parse(m.group(1).strip() or "n", mode="eval").body)), template
    )
