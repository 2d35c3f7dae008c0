"""Delivery policy with the real stack: fleet-wide limits with several workers, adaptive
throttling on 421, transactional mail ahead of bulk, and the operator's controls."""

from __future__ import annotations

import json

from tests.support.serve import cli, events, status
from tests.support.waiting import wait_until
from tests.support.world import FAST, MailWorld, audit_ok, newsletter, submit, wait_done

SITE = "mx0.pol.test"  # every domain below has this one MX host: one site


def sites(world: MailWorld) -> dict[str, dict[str, object]]:
    result = cli(world.redis_url, "sites", "--json")
    assert result.returncode == 0, result.stderr
    return {row["site"]: row for row in map(json.loads, result.stdout.splitlines())}


def site_log(world: MailWorld, site: str) -> list[dict[str, str]]:
    result = cli(world.redis_url, "sites", "--log", site)
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_limits_hold_across_several_worker_processes(mail_world: MailWorld) -> None:
    domains = mail_world.domains(6, tld="pol.test", hosts=1)
    config = FAST + """
[shaping.default]
max_connections = 3
initial_connections = 3
max_messages_per_connection = 10
max_recipients_per_transaction = 4
messages_per_second = 60
"""
    mail_world.serve(workers=3, config=mail_world.config(config))
    job, _, _ = submit(mail_world, newsletter(domains, 150))
    raw = "From: a@sender.test\r\nSubject: same\r\n\r\nsame for all\r\n"
    same, _, _ = submit(mail_world, {"from": "a@sender.test", "message": raw,
                                     "recipients": [f"r{i}@{domains[0]}" for i in range(20)]})
    wait_done(mail_world, job, timeout=60)
    wait_done(mail_world, same, timeout=60)
    sink = mail_world.sinks[0]
    messages = sink.messages
    assert sink.max_concurrent <= 3
    per_connection: dict[int, int] = {}
    for m in messages:
        per_connection[m.connection] = per_connection.get(m.connection, 0) + 1
    assert max(per_connection.values()) <= 10
    assert max(len(m.rcpt_tos) for m in messages) <= 4
    # at most a full bucket (60) plus one second of refill in any one-second window
    times = sorted(m.at for m in messages)
    assert max(sum(1 for t in times[i:] if t - start < 1.0) for i, start in enumerate(times)) <= 120
    row = sites(mail_world)[SITE]
    assert row["connections_max"] == 3 and row["connections_limit"] <= 3
    audit_ok(mail_world, job)


def test_421_slows_the_site_down_and_successes_bring_it_back(mail_world: MailWorld) -> None:
    domains = mail_world.domains(4, tld="pol.test", hosts=1)
    config = FAST + """
[shaping.default]
max_connections = 8
initial_connections = 8
[shaping.adaptive]
cooldown = 0.2
"""
    mail_world.serve(workers=2, config=mail_world.config(config))
    sink = mail_world.sinks[0]
    sink.close_after = 2  # "421 4.7.0 too many messages on this connection" after 2 messages
    job, _, _ = submit(mail_world, newsletter(domains, 200))
    wait_until(lambda: any(c["change"] == "decrease" for c in site_log(mail_world, SITE)), 30, 0.2,
               "a decrease after the 421s")
    sink.close_after = None
    wait_done(mail_world, job, timeout=60)
    more, _, _ = submit(mail_world, newsletter(domains, 400))
    wait_done(mail_world, more, timeout=60)
    log = site_log(mail_world, SITE)
    first_drop = next(i for i, c in enumerate(log) if c["change"] == "decrease")
    assert "421" in log[first_drop]["reason"] and int(log[first_drop]["connections"]) < 8
    lowest = min(int(c["connections"]) for c in log)
    assert any(c["change"] == "increase" and int(c["connections"]) > lowest for c in log[first_drop:])
    row = sites(mail_world)[SITE]
    assert "421" in str(row["last_reason"])
    assert status(mail_world.redis_url, job)["delivered"] == 200  # 421 is deferred and retried, not lost
    audit_ok(mail_world, job)


def test_transactional_mail_overtakes_a_queued_newsletter(mail_world: MailWorld) -> None:
    domains = mail_world.domains(4, tld="pol.test", hosts=1)
    config = FAST + "\n[shaping.default]\nmessages_per_second = 200\n"
    mail_world.serve(workers=1, config=mail_world.config(config))
    bulk, _, _ = submit(mail_world, newsletter(domains, 1200))
    wait_until(lambda: len(mail_world.sinks[0].messages) >= 50, 30, what="the newsletter under way")
    reset = {"from": "security@sender.test", "subject": "Password reset", "text": "Your code: 123456",
             "recipients": [f"someone@{domains[1]}"], "priority": "transactional"}
    tx, _, _ = submit(mail_world, reset)
    wait_done(mail_world, tx, timeout=30)
    still_queued = status(mail_world.redis_url, bulk)
    assert still_queued["delivered"] < 900, "the reset waited behind the newsletter"
    wait_done(mail_world, bulk, timeout=60)
    audit_ok(mail_world, bulk)


def test_pause_resume_and_cancel_a_job(mail_world: MailWorld) -> None:
    domains = mail_world.domains(4, tld="pol.test", hosts=1)
    mail_world.serve(workers=2, config=mail_world.config(FAST + "\n[shaping.default]\nmessages_per_second = 100\n"))
    job, _, _ = submit(mail_world, newsletter(domains, 1000))
    wait_until(lambda: status(mail_world.redis_url, job)["delivered"] >= 50, 30, what="delivery under way")
    assert cli(mail_world.redis_url, "pause", job).returncode == 0
    paused = wait_until(lambda: (s := status(mail_world.redis_url, job))["in_flight"] == 0 and s, 30, 0.1,
                        "in-flight work to finish")
    assert paused["state"] == "paused" and paused["queued"] > 0
    # another job goes through meanwhile; the paused one does not move
    other, _, _ = submit(mail_world, newsletter(domains, 30, prefix="other"))
    wait_done(mail_world, other, timeout=30)
    assert status(mail_world.redis_url, job)["delivered"] == paused["delivered"]
    assert cli(mail_world.redis_url, "resume", job).returncode == 0
    wait_until(lambda: status(mail_world.redis_url, job)["delivered"] > paused["delivered"] + 20, 30,
               what="delivery resumed")
    result = cli(mail_world.redis_url, "cancel", job)
    assert result.returncode == 0 and "cancelled" in result.stdout
    final = wait_done(mail_world, job, timeout=30)
    assert final["state"] == "cancelled" and final["cancelled"] > 0
    assert final["delivered"] + final["cancelled"] == 1000 and final["queued"] == final["deferred"] == 0
    delivered_at_sink = {r for m in mail_world.received() for r in m.rcpt_tos if r.startswith("user")}
    assert len(delivered_at_sink) == final["delivered"]
    audit_ok(mail_world, job)
    assert cli(mail_world.redis_url, "cancel", "no-such-job").returncode == 4


def test_pause_a_site_then_resume_and_retry_now(mail_world: MailWorld) -> None:
    domains = mail_world.domains(2, tld="pol.test", hosts=1)
    mail_world.serve(workers=1, config=mail_world.config(FAST.replace("base = 0.5", "base = 3600")))
    first, _, _ = submit(mail_world, newsletter(domains, 5), "--wait")  # makes the site known
    assert cli(mail_world.redis_url, "pause", "--site", SITE).returncode == 0
    wait_until(lambda: sites(mail_world)[SITE]["paused"], 10, what="the pause to show")
    job, stdout, _ = submit(mail_world, newsletter(domains, 10), "--wait")
    after = json.loads(stdout.splitlines()[-1])
    assert after["deferred"] == 10 and after["delivered"] == 0
    assert {e["enhanced"] for e in events(mail_world.redis_url, job)} == {"4.3.2"}
    assert cli(mail_world.redis_url, "resume", "--site", SITE).returncode == 0
    result = cli(mail_world.redis_url, "retry-now", SITE)
    assert result.returncode == 0 and "due now" in result.stdout
    final = wait_done(mail_world, job, timeout=30)
    assert final["delivered"] == 10
    assert cli(mail_world.redis_url, "pause", "--site", "unknown.site").returncode == 4
    audit_ok(mail_world, job)
