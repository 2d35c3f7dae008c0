"""Peer and network faults through ``bulkmail serve`` (RELIABILITY.md 4.1 #13-15, 21, 22).

The SMTP session layer has its own tests (test_smtp_session*.py, test_smtp_postfix_interop.py);
here each fault is met by worker processes end to end, and each must end in the right
classified outcome with no worker stuck or restarted: the next MX by preference after a
refused connection or a 4xx/5xx greeting, a deferral (retried later) when every MX is down,
per-phase timeouts that close the connection while the worker goes on delivering other mail,
garbage replies deferred, and each kind of DNS failure classified. ``bulkmail audit`` runs
after every test.

The faulty MX hosts are ``FaultSmtpServer``s (tests/support/fault_servers.py) on 127.0.0.5+
at the world's SMTP port; healthy ones are the world's recording sinks on 127.0.0.2-4.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.fault_servers import HANG, FaultSmtpServer
from tests.support.serve import Serve, events, status
from tests.support.sinks import RecordingSink
from tests.support.waiting import wait_until
from tests.support.world import MailWorld, audit_ok, newsletter, submit, wait_done

# Leases short enough to notice a stuck worker; retries far off, so a deferred recipient stays
# deferred while the test looks at it (tests that want the retry set their own base).
BASE = """
[queue]
lease = 2.0
heartbeat = 0.5
reap_interval = 0.3
[retry]
base = {retry}
jitter = 0.0
[dns]
timeout = 1.0
[smtp.timeouts]
{timeouts}
"""


def config(world: MailWorld, retry: float = 3600.0, **timeouts: float) -> str:
    return world.config(BASE.format(retry=retry, timeouts="\n".join(f"{k} = {v}" for k, v in timeouts.items())))


@pytest.fixture
def fault_server(mail_world: MailWorld) -> Iterator[Any]:
    """``fault_server(host, **replies)`` on the world's port, stopped at teardown."""
    started: list[FaultSmtpServer] = []

    def make(host: str, **replies: bytes) -> FaultSmtpServer:
        server = FaultSmtpServer(host, mail_world.port, **replies).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def two_mx(world: MailWorld, domain: str, first: str, second: str) -> None:
    """``domain``: MX 10 -> ``first``, MX 20 -> ``second`` (addresses)."""
    world.dns.add_mx(domain, [(10, f"mx1.{domain}"), (20, f"mx2.{domain}")])
    world.dns.add_a(f"mx1.{domain}", [first])
    world.dns.add_a(f"mx2.{domain}", [second])


def one_mx(world: MailWorld, domain: str, address: str) -> None:
    world.dns.add_mx(domain, [(10, f"mx.{domain}")])
    world.dns.add_a(f"mx.{domain}", [address])


def job_to(domain: str, n: int, prefix: str = "u") -> dict[str, Any]:
    return {"from": "news@sender.test", "subject": "Hi {{name}}", "text": "Hello {{name}}\n",
            "recipients": [{"to": f"{prefix}{i}@{domain}", "vars": {"name": str(i)}} for i in range(n)]}


def mixed(domains: list[str], bad: str, n_bad: int, n_good: int) -> dict[str, Any]:
    job = newsletter(domains, n_good, prefix="good")
    job["recipients"] = [{"to": f"bad{i}@{bad}"} for i in range(n_bad)] + job["recipients"]  # type: ignore[operator]
    return job


def settled(world: MailWorld, job: str) -> dict[str, Any] | None:
    """Status once nothing is queued or in flight (deferred recipients wait for a retry)."""
    s = status(world.redis_url, job)
    return s if s["queued"] == 0 and s["in_flight"] == 0 else None


def by_rcpt(world: MailWorld, job: str) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for event in events(world.redis_url, job):
        found.setdefault(event["rcpt"], []).append(event)
    return found


def still_the_same_workers(serve: Serve, pids: list[int]) -> None:
    assert sorted(serve.worker_pids()) == sorted(pids) and "exited with" not in serve.log_text()


def the_worker_goes_on(world: MailWorld, domains: list[str], serve: Serve, pids: list[int]) -> None:
    """After the fault: a new job is delivered by the same worker processes."""
    later, _, _ = submit(world, newsletter(domains, 20, prefix="later"))
    assert wait_done(world, later)["delivered"] == 20
    still_the_same_workers(serve, pids)
    audit_ok(world, later)


# -- MX selection ---------------------------------------------------------------------------------


def test_first_mx_refusing_connections_sends_to_the_second(mail_world: MailWorld) -> None:
    two_mx(mail_world, "pref.test", "127.0.0.5", "127.0.0.2")  # nothing listens on .5
    mail_world.serve(workers=1, config=config(mail_world))
    job, _, _ = submit(mail_world, job_to("pref.test", 20))
    assert wait_done(mail_world, job)["delivered"] == 20
    evs = events(mail_world.redis_url, job)
    assert {(e["status"], e["mx"], e["attempt"]) for e in evs} == {("delivered", "mx2.pref.test", 1)}
    assert len(mail_world.sinks[0].messages) == 20
    audit_ok(mail_world, job)


@pytest.mark.parametrize("greeting", [b"421 4.3.2 service not available, closing\r\n",
                                      b"554 5.7.1 no mail from you\r\n"], ids=["421", "554"])
def test_refused_greeting_sends_to_the_next_mx(mail_world: MailWorld, fault_server: Any, greeting: bytes) -> None:
    refusing = fault_server("127.0.0.5", greeting=greeting)
    two_mx(mail_world, "greet.test", "127.0.0.5", "127.0.0.2")
    mail_world.serve(workers=1, config=config(mail_world))
    job, _, _ = submit(mail_world, job_to("greet.test", 20))
    assert wait_done(mail_world, job)["delivered"] == 20
    assert {(e["status"], e["mx"]) for e in events(mail_world.redis_url, job)} == {("delivered", "mx2.greet.test")}
    assert refusing.connections >= 1 and refusing.messages == []
    wait_until(lambda: refusing.open == 0, 10, what="the refusing server's connections closed")
    audit_ok(mail_world, job)


def test_all_mx_hosts_down_defers_with_a_connect_error_then_a_retry_delivers(
    mail_world: MailWorld, smtp_sink: Any
) -> None:
    two_mx(mail_world, "down.test", "127.0.0.5", "127.0.0.6")  # nothing listens on either
    mail_world.serve(workers=1, config=config(mail_world, retry=0.5))
    job, _, _ = submit(mail_world, job_to("down.test", 10))
    wait_until(lambda: status(mail_world.redis_url, job)["deferred"] == 10, 30, what="all deferred")
    first = {rcpt: evs[0] for rcpt, evs in by_rcpt(mail_world, job).items()}
    assert len(first) == 10
    for event in first.values():
        assert (event["status"], event["enhanced"], event["category"]) == ("deferred", "4.4.1", "network")
        assert "refused" in event["reply"].lower() or "connect" in event["reply"].lower(), event
        assert not event["possible_duplicate"]

    late: RecordingSink = smtp_sink("127.0.0.6", mail_world.port)  # the second MX comes back
    final = wait_done(mail_world, job, timeout=60)
    assert final["delivered"] == 10
    assert sorted(r for m in late.messages for r in m.rcpt_tos) == sorted(first)
    for history in by_rcpt(mail_world, job).values():
        assert history[-1]["status"] == "delivered" and history[-1]["attempt"] >= 2
        assert {e["status"] for e in history[:-1]} == {"deferred"}
        assert not any(e["possible_duplicate"] for e in history)
    audit_ok(mail_world, job)


# -- hangs and garbage ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phase", "timeout", "flagged"),
    [("greeting", "greeting", False), ("data", "data", False), ("end", "data_end", True)],
    ids=["no-greeting", "no-354", "no-reply-to-dot"],
)
def test_a_hanging_server_is_deferred_and_disconnected_while_other_mail_goes_out(
    mail_world: MailWorld, fault_server: Any, phase: str, timeout: str, flagged: bool
) -> None:
    hanging = fault_server("127.0.0.5", **{phase: HANG})
    one_mx(mail_world, "hang.test", "127.0.0.5")
    domains = mail_world.domains(3)
    serve = mail_world.serve(workers=1, config=config(mail_world, **{timeout: 1.0}))
    pids = serve.worker_pids()
    job, _, _ = submit(mail_world, mixed(domains, "hang.test", 3, 60))
    final = wait_until(lambda: settled(mail_world, job), 60, 0.2, "the job settled")
    assert final is not None
    assert (final["delivered"], final["deferred"]) == (60, 3)

    bad = {rcpt: evs for rcpt, evs in by_rcpt(mail_world, job).items() if rcpt.endswith("@hang.test")}
    assert len(bad) == 3
    for history in bad.values():
        last = history[-1]
        # 4.4.2 (from_error(SmtpTimeout)); after the end of data the timeout comes wrapped in a
        # SessionLost and is reported 4.4.1 (see the report: a classification nit, not a loss)
        assert last["status"] == "deferred" and last["enhanced"] in ("4.4.2", "4.4.1"), last
        assert "timeout" in last["reply"] or "failed recently" in last["reply"], last
        assert last["possible_duplicate"] is flagged, last  # flagged exactly when "." was sent
    assert any("timeout" in h[-1]["reply"] for h in bad.values())
    sent = {line.split(b": ", 1)[1].strip().decode() for m in hanging.messages for line in m.split(b"\r\n")
            if line.startswith(b"To: ")}
    assert sent == ({rcpt for rcpt in bad} if flagged else set())  # the server got the data of each flagged one
    # every connection to the hanging server was closed by bulkmail, none left open
    wait_until(lambda: hanging.open == 0, 10, what="no connection left open to the hanging server")
    assert hanging.closed_by_client == hanging.connections >= 1
    the_worker_goes_on(mail_world, domains, serve, pids)
    audit_ok(mail_world, job)


@pytest.mark.parametrize(
    ("phase", "garbage", "flagged"),
    [
        ("ehlo", b"hello there, how are you\r\n", False),
        ("greeting", b"220-fine\r\n250 mixed codes\r\n", False),
        ("rcpt", b"2x0 what\r\n", False),
        ("end", b"\xff\xfe\x00 binary\r\n", True),
        ("mail", b"250-" + b"x" * 200 + b"\r\n" + b"250-more\r\n" * 500, False),  # an endless continuation
    ],
    ids=["ehlo-words", "mixed-codes", "bad-code", "binary-after-dot", "endless-continuation"],
)
def test_garbage_replies_are_deferred_and_the_connection_dropped(
    mail_world: MailWorld, fault_server: Any, phase: str, garbage: bytes, flagged: bool
) -> None:
    babbling = fault_server("127.0.0.5", **{phase: garbage})
    one_mx(mail_world, "garbage.test", "127.0.0.5")
    domains = mail_world.domains(3)
    serve = mail_world.serve(workers=1, config=config(mail_world, **{"mail": 2.0}))
    pids = serve.worker_pids()
    job, _, _ = submit(mail_world, mixed(domains, "garbage.test", 3, 30))
    final = wait_until(lambda: settled(mail_world, job), 60, 0.2, "the job settled")
    assert final is not None
    assert (final["delivered"], final["deferred"]) == (30, 3)
    for rcpt, history in by_rcpt(mail_world, job).items():
        if rcpt.endswith("@garbage.test"):
            assert history[-1]["status"] == "deferred" and history[-1]["enhanced"].startswith("4."), history
            if not flagged:
                assert not history[-1]["possible_duplicate"]
    if flagged:  # the end of data was sent: the outcome is unknown, so retried and flagged
        assert any(h[-1]["possible_duplicate"] for r, h in by_rcpt(mail_world, job).items() if r.endswith("@garbage.test"))
    wait_until(lambda: babbling.open == 0, 10, what="the babbling server's connections closed")
    the_worker_goes_on(mail_world, domains, serve, pids)
    audit_ok(mail_world, job)


# -- DNS --------------------------------------------------------------------------------------------


def test_dns_failures_of_each_kind_through_serve(mail_world: MailWorld) -> None:
    """NXDOMAIN, null MX and SERVFAIL are in test_end_to_end.py; these are the others."""
    dns = mail_world.dns
    one_mx(mail_world, "timeout.test", "127.0.0.2")
    dns.no_answer("timeout.test")  # the nameserver never answers
    one_mx(mail_world, "refused.test", "127.0.0.2")
    dns.refuse("refused.test")
    dns.add_a("implicit.test", ["127.0.0.2"])  # no MX (NODATA): the domain itself is the mail host
    one_mx(mail_world, "truncated.test", "127.0.0.3")
    dns.truncate("truncated.test")  # TC=1 over UDP: the full answer over TCP
    one_mx(mail_world, "spoofed.test", "127.0.0.4")
    dns.spoof("spoofed.test")  # a wrong-ID bogus answer arrives first
    dns.add_mx("noaddress.test", [(10, "nowhere.noaddress.test")])  # its MX host has no address
    dns.add_mx("slowhost.test", [(10, "mx.slowhost.test")])
    dns.add_a("mx.slowhost.test", ["127.0.0.2"])
    dns.no_answer("mx.slowhost.test")  # the MX host's address lookup times out
    serve = mail_world.serve(workers=1, config=config(mail_world))
    pids = serve.worker_pids()
    names = ["timeout", "refused", "implicit", "truncated", "spoofed", "noaddress", "slowhost"]
    job, _, _ = submit(mail_world, {"from": "news@sender.test", "text": "hi",
                                    "recipients": [f"user@{name}.test" for name in names]})
    wait_until(lambda: settled(mail_world, job), 60, 0.2, "the job settled")
    outcome = {rcpt.split("@")[1].split(".")[0]: evs[-1] for rcpt, evs in by_rcpt(mail_world, job).items()}
    expected = {
        "timeout": ("deferred", "4.4.3"),
        "refused": ("deferred", "4.4.3"),
        "implicit": ("delivered", None),
        "truncated": ("delivered", None),
        "spoofed": ("delivered", None),
        "noaddress": ("bounced", "5.4.4"),
        "slowhost": ("deferred", "4.4.3"),
    }
    for name, (state, enhanced) in expected.items():
        event = outcome[name]
        assert event["status"] == state, (name, event)
        if enhanced:
            assert event["enhanced"] == enhanced, (name, event)
    assert "timed out" in outcome["timeout"]["reply"]
    assert outcome["implicit"]["mx"] == "implicit.test" and outcome["spoofed"]["mx"] == "mx.spoofed.test"
    received = {r for m in mail_world.received() for r in m.rcpt_tos}
    assert received == {"user@implicit.test", "user@truncated.test", "user@spoofed.test"}
    still_the_same_workers(serve, pids)
    audit_ok(mail_world, job)
