"""The workloads of issue 5 and the data every system gets for them.

Addresses are ``u{i}@d{n}.bench.test``; domain ``d{n}`` has MX ``mx{n%50}.bench.test`` at
``127.0.1.{n%50+1}`` (one smtp-sink per MX host, all on one port). The transactional domain
``tx.bench.test`` has its own MX, a recording sink that timestamps each 250.

Messages are about ``size`` bytes whatever the system: the Python senders render them from
pre-split byte templates (``MessageTemplate``), smtp-source sends one rendered file, and
bulkmail gets a job whose rendered output has the same headers and body.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

DOMAIN = "bench.test"
SENDER = f"news@{DOMAIN}"
TX_DOMAIN = f"tx.{DOMAIN}"
TX_HOST = "127.0.1.100"
MX_PREFIX = "127.0.1."
FILLER = "The quick brown fox jumps over the lazy dog while the newsletter goes out on time. "
HEADER_ALLOWANCE = 330  # bytes of headers a rendered message carries (From, To, Date, Message-ID, ...)


def mx_address(host_index: int) -> str:
    return f"{MX_PREFIX}{host_index + 1}"


def recipient(i: int, domains: int) -> tuple[str, str]:
    """(address, name) of recipient ``i``; domain ``i % domains``."""
    return f"u{i}@d{i % domains}.{DOMAIN}", f"Reader {i}"


def body_text(size: int) -> str:
    """A 7-bit text body with ``{{name}}``/``{{email}}`` placeholders, ~``size`` bytes rendered."""
    target = max(size - HEADER_ALLOWANCE, 200)
    lines = ["Dear {{name}},", ""]
    used = 20
    while used < target - 120:
        line = (FILLER * 2)[:76].rstrip()
        lines.append(line)
        used += len(line) + 2
    lines += ["", "Unsubscribe: mailto:unsub@bench.test?subject={{email}}"]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Case:
    """One system measured on a workload; ``params`` vary it (workers, events)."""

    system: str  # smtp-source | client | naive | postfix | bulkmail
    label: str
    params: tuple[tuple[str, object], ...] = ()

    def param(self, name: str, default: object = None) -> object:
        return dict(self.params).get(name, default)


PEERS = (
    Case("smtp-source", "smtp-source"),
    Case("client", "bulkmail client"),
    Case("naive", "naive aiosmtplib"),
    Case("postfix", "postfix relay"),
)


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    cases: tuple[Case, ...]
    size: int = 2048
    domains: int = 1000
    rcpts_per_txn: int = 1  # > 1: one raw message, several RCPT per transaction (workload c)
    transactional: bool = False  # workload d: a transactional message every 100 ms
    memory: bool = False  # workload e: Redis bytes per queued recipient, worker peak RSS

    @property
    def personalized(self) -> bool:
        return self.rcpts_per_txn == 1

    @property
    def unit(self) -> str:
        return "messages" if self.rcpts_per_txn == 1 else "recipients"


# bulkmail's client alone proving each rendered message canonical again, as for a raw message
# (the "client" peer is told it is canonical, as a worker tells it: client_bench.py)
FULL_SCAN = Case("client", "bulkmail client, full scan", (("full_scan", True),))
ENGINE = Case("bulkmail", "bulkmail")
WORKLOADS: tuple[Workload, ...] = (
    Workload("a", "newsletter, 2 KB personalized, 1,000 domains / 50 MX", (*PEERS, FULL_SCAN, ENGINE)),
    Workload("b20", "newsletter at 20 KB", (*PEERS, FULL_SCAN, ENGINE), size=20 * 1024),
    Workload("b100", "newsletter at 100 KB", (*PEERS, FULL_SCAN, ENGINE), size=100 * 1024),
    Workload("c", "identical 2 KB content, 10 RCPT per transaction, 100 domains", (*PEERS, ENGINE), domains=100, rcpts_per_txn=10),
    Workload("d", "(a) + a transactional message every 100 ms: submit-to-250 latency", (PEERS[3], ENGINE), transactional=True),
    Workload("e", "1,000,000-recipient job: Redis bytes per recipient, worker peak RSS", (ENGINE,), memory=True),
    Workload("f", "(a) with 1, 2 and 4 worker processes", tuple(Case("bulkmail", f"bulkmail {n}w", (("workers", n),)) for n in (1, 2, 4))),
    Workload("g", "(a) with status reporting on and off", (Case("bulkmail", "bulkmail events on", (("events", True),)), Case("bulkmail", "bulkmail events off", (("events", False),)))),
)
GROUPS = {"b": ("b20", "b100")}


def select(only: str | None) -> list[Workload]:
    if not only:
        return list(WORKLOADS)
    wanted: set[str] = set()
    for key in (part.strip() for part in only.split(",") if part.strip()):
        keys = GROUPS.get(key, (key,))
        unknown = [k for k in keys if k not in {w.key for w in WORKLOADS}]
        if unknown:
            raise SystemExit(f"unknown workload {key!r}; choose from a, b, b20, b100, c, d, e, f, g")
        wanted.update(keys)
    return [w for w in WORKLOADS if w.key in wanted]


@dataclass
class MessageTemplate:
    """A message pre-split into byte fragments around the recipient's address and name."""

    size: int
    parts: list[bytes] = field(init=False)

    def __post_init__(self) -> None:
        body = body_text(self.size).replace("\n", "\r\n")
        text = (
            f"From: Bench <{SENDER}>\r\nTo: <{{{{email}}}}>\r\nSubject: Hello {{{{name}}}}\r\n"
            f"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <{{{{email}}}}>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n"
            f"Content-Transfer-Encoding: 7bit\r\n\r\n{body}"
        )
        self.parts = []
        for piece in text.split("{{"):
            name, sep, rest = piece.partition("}}")
            if sep:
                self.parts += [b"email" if name == "email" else b"name", rest.encode()]
            else:
                self.parts.append(piece.encode())
        self._email = [i for i in range(1, len(self.parts), 2) if self.parts[i] == b"email"]
        self._name = [i for i in range(1, len(self.parts), 2) if self.parts[i] == b"name"]

    def render(self, email: bytes, name: bytes) -> bytes:
        parts = self.parts[:]
        for i in self._email:
            parts[i] = email
        for i in self._name:
            parts[i] = name
        return b"".join(parts)

    def shared(self) -> bytes:
        """The same message for every recipient (workload c and smtp-source's file)."""
        return self.render(f"list@{DOMAIN}".encode(), b"Reader")


def write_job(path: Path, workload: Workload, recipients: int, job_id: str) -> None:
    """The bulkmail job for ``recipients`` recipients, streamed to ``path``."""
    head: dict[str, object] = {"id": job_id, "from": SENDER}
    if workload.personalized:
        head |= {"subject": "Hello {{name}}", "text": body_text(workload.size)}
    else:
        head["message"] = MessageTemplate(workload.size).shared().decode()
    with path.open("w") as f:
        f.write(json.dumps(head)[:-1] + ', "recipients": [')
        for i, item in enumerate(_recipients(workload, recipients)):
            f.write((", " if i else "") + json.dumps(item))
        f.write("]}\n")


def _recipients(workload: Workload, count: int) -> Iterator[object]:
    for i in range(count):
        email, name = recipient(i, workload.domains)
        yield {"to": email, "vars": {"name": name}} if workload.personalized else email


def tx_recipient(run: int, k: int) -> str:
    return f"t{run}x{k}@{TX_DOMAIN}"


def tx_message(rcpt: str) -> bytes:
    return (f"From: <alerts@{DOMAIN}>\r\nTo: <{rcpt}>\r\nSubject: Your sign-in code\r\n"
            f"Message-ID: <{rcpt}>\r\n\r\nYour code is 123456.\r\n").encode()


def tx_job(rcpt: str) -> dict[str, object]:
    return {
        "id": "tx-" + rcpt.split("@")[0],
        "from": f"alerts@{DOMAIN}",
        "subject": "Your sign-in code",
        "text": "Your code is 123456.\n",
        "recipients": [rcpt],
        "priority": "transactional",
    }


def zone(hosts: int) -> dict[str, object]:
    """The DNS zone for every benchmark domain (pattern format of tests.support.dns_server)."""
    return {
        "ttl": 3600,
        "patterns": [
            {"domain": "d{n}." + DOMAIN, "count": 1000, "mx": "mx{n%" + str(hosts) + "}." + DOMAIN, "a": MX_PREFIX + "{n%" + str(hosts) + "+1}"}
        ],
        "records": [
            {"name": TX_DOMAIN, "type": "MX", "data": [f"10 mx-tx.{DOMAIN}."]},
            {"name": f"mx-tx.{DOMAIN}", "type": "A", "data": [TX_HOST]},
        ],
    }


def routes(hosts: int, port: int, domains: int = 1000) -> dict[str, tuple[str, int]]:
    """Postfix transport_maps: the same domain -> MX host mapping the DNS zone gives."""
    table = {f"d{n}.{DOMAIN}": (mx_address(n % hosts), port) for n in range(domains)}
    table[TX_DOMAIN] = (TX_HOST, port)
    return table
