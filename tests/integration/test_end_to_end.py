"""From ``bulkmail submit`` to the sinks and back to ``bulkmail status``, with
real processes: redis-server, the DNS server, aiosmtpd sinks, bulkmail serve."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections import Counter

import redis

from engine.queue.keys import Keys
from tests.support.serve import BULKMAIL, ROOT, events, status
from tests.support.waiting import wait_until
from tests.support.world import FAST, MailWorld, audit_ok, newsletter, submit, wait_done


def test_newsletter_delivered_once_each_personalized_over_reused_connections(mail_world: MailWorld) -> None:
    domains = mail_world.domains(12)
    mail_world.serve(workers=2)
    job, stdout, stderr = submit(mail_world, newsletter(domains, 600), "--wait")
    final = json.loads(stdout.splitlines()[-1])
    assert final["job"] == job and final["done"] is True and final["delivered"] == 600
    assert "0 waiting for a retry" in stderr

    received = mail_world.received()
    rcpts = Counter(r for m in received for r in m.rcpt_tos)
    assert len(rcpts) == 600 and set(rcpts.values()) == {1}
    for message in received:
        (to,) = message.rcpt_tos
        number = int(re.match(r"user(\d+)@", to).group(1))  # type: ignore[union-attr]
        body = message.data.decode()
        assert f"Dear Person {number},\r\nyour number is {number}." in body
        assert f"To: {to}" in body and f"Subject: News for Person {number}" in body
    assert mail_world.connections() <= 60  # persistent connections: far fewer than messages

    evs = events(mail_world.redis_url, job)
    assert len(evs) == 600
    assert {e["status"] for e in evs} == {"delivered"}
    sample = evs[0]
    assert set(sample) >= {"job", "rcpt", "status", "code", "enhanced", "reply", "mx", "attempt", "ts"}
    assert sample["code"] == 250 and sample["attempt"] == 1 and sample["mx"].endswith("e2e.test")
    audit_ok(mail_world, job)


def test_4xx_deferred_then_delivered_on_retry(mail_world: MailWorld) -> None:
    domains = mail_world.domains(3)
    for sink in mail_world.sinks:
        sink.rcpt = {"later": "451 4.3.0 try again later"}
    mail_world.serve(config=mail_world.config(FAST))
    job_def = newsletter(domains, 20)
    for i in range(5):
        job_def["recipients"][i]["to"] = f"later{i}@{domains[i % 3]}"  # type: ignore[index]
    job, stdout, stderr = submit(mail_world, job_def, "--wait")
    after_wait = json.loads(stdout.splitlines()[-1])
    assert after_wait["queued"] == 0 and after_wait["in_flight"] == 0
    assert after_wait["delivered"] == 15 and after_wait["deferred"] + after_wait["delivered"] <= 20
    assert re.search(r"\d+ waiting for a retry", stderr)
    for sink in mail_world.sinks:
        sink.rcpt = {}
    final = wait_done(mail_world, job)
    assert final["delivered"] == 20
    history = [e for e in events(mail_world.redis_url, job) if e["rcpt"] == f"later0@{domains[0]}"]
    assert [e["status"] for e in history][0] == "deferred" and history[-1]["status"] == "delivered"
    assert history[0]["code"] == 451 and history[0]["enhanced"] == "4.3.0" and history[-1]["attempt"] >= 2
    audit_ok(mail_world, job)


def test_5xx_bounced_with_the_reply(mail_world: MailWorld) -> None:
    domains = mail_world.domains(3)
    for sink in mail_world.sinks:
        sink.rcpt = {"gone": "550 5.1.1 no such user here"}
    mail_world.serve()
    job_def = newsletter(domains, 10)
    job_def["recipients"][3]["to"] = f"gone@{domains[0]}"  # type: ignore[index]
    job, stdout, _ = submit(mail_world, job_def, "--wait")
    final = json.loads(stdout.splitlines()[-1])
    assert final["done"] is True and final["bounced"] == 1 and final["delivered"] == 9
    (bounce,) = [e for e in events(mail_world.redis_url, job) if e["status"] == "bounced"]
    assert bounce["rcpt"] == f"gone@{domains[0]}" and bounce["code"] == 550
    assert bounce["enhanced"] == "5.1.1" and "no such user" in bounce["reply"]


def test_dns_failures_are_classified(mail_world: MailWorld) -> None:
    domains = mail_world.domains(1)
    mail_world.dns.null_mx("nullmx.test")
    mail_world.dns.servfail("broken.test")
    mail_world.serve(config=mail_world.config("[retry]\nbase = 3600\n"))
    job_def = newsletter(domains, 1)
    job_def["recipients"] += [  # type: ignore[operator]
        {"to": "a@nowhere.test"}, {"to": "b@nullmx.test"}, {"to": "c@broken.test"}
    ]
    job, stdout, _ = submit(mail_world, job_def, "--wait")
    final = json.loads(stdout.splitlines()[-1])
    assert (final["delivered"], final["bounced"], final["deferred"], final["done"]) == (1, 2, 1, False)
    by_rcpt = {e["rcpt"]: e for e in events(mail_world.redis_url, job)}
    assert by_rcpt["a@nowhere.test"]["enhanced"] == "5.1.2"
    assert by_rcpt["b@nullmx.test"]["enhanced"] == "5.1.10"
    assert by_rcpt["c@broken.test"]["status"] == "deferred" and by_rcpt["c@broken.test"]["enhanced"] == "4.4.3"


def test_identical_content_goes_several_recipients_per_transaction(mail_world: MailWorld) -> None:
    domains = mail_world.domains(2)
    mail_world.serve(workers=1)
    raw = "From: news@sender.test\r\nSubject: same for all\r\n\r\nHello everybody.\r\n"
    recipients = [f"r{i}@{domains[i % 2]}" for i in range(30)]
    job, stdout, _ = submit(mail_world, {"from": "news@sender.test", "message": raw, "recipients": recipients}, "--wait")
    assert json.loads(stdout.splitlines()[-1])["delivered"] == 30
    received = mail_world.received()
    assert sorted(r for m in received for r in m.rcpt_tos) == sorted(recipients)
    assert len(received) < 30 and max(len(m.rcpt_tos) for m in received) > 1
    assert all(m.data.endswith(b"Hello everybody.\r\n") for m in received)


def test_killed_worker_work_is_finished_by_another(mail_world: MailWorld) -> None:
    domains = mail_world.domains(12)
    serve = mail_world.serve(workers=2, config=mail_world.config(FAST))
    job, _, _ = submit(mail_world, newsletter(domains, 3000))
    client = redis.Redis.from_url(mail_world.redis_url)
    # kill a worker that holds leases right now
    owners = wait_until(lambda: client.hvals(Keys().owner), 30, 0.01, "a leased chunk")
    victim = int(owners[0].decode().split(":")[1])
    os.kill(victim, signal.SIGKILL)
    client.close()
    final = wait_done(mail_world, job, timeout=60)
    assert final["delivered"] == 3000
    assert victim not in serve.worker_pids()
    wait_until(lambda: len(serve.worker_pids()) == serve.workers + 1, 20, what="the supervisor restarting the killed worker")
    received = Counter(r for m in mail_world.received() for r in m.rcpt_tos)
    assert len(received) == 3000
    evs = events(mail_world.redis_url, job)
    flagged = {e["rcpt"] for e in evs if e["possible_duplicate"]}
    assert {r for r, n in received.items() if n > 1} <= flagged
    audit_ok(mail_world, job)


def test_sigterm_stops_everything_and_a_restart_finishes(mail_world: MailWorld) -> None:
    domains = mail_world.domains(12)
    serve = mail_world.serve(workers=2, config=mail_world.config(FAST))
    job, _, _ = submit(mail_world, newsletter(domains, 4000))
    wait_until(lambda: len(mail_world.received()) >= 200, 30, what="delivery under way")
    workers = serve.worker_pids()
    assert serve.stop(timeout=20) == 0
    assert not any(os.path.exists(f"/proc/{pid}") for pid in workers)
    stopped = status(mail_world.redis_url, job)
    assert stopped["in_flight"] == 0  # leases returned, nothing left dangling
    mail_world.serve(workers=2, config=mail_world.config(FAST))
    final = wait_done(mail_world, job, timeout=60)
    assert final["delivered"] == 4000
    received = Counter(r for m in mail_world.received() for r in m.rcpt_tos)
    assert len(received) == 4000
    flagged = {e["rcpt"] for e in events(mail_world.redis_url, job) if e["possible_duplicate"]}
    assert {r for r, n in received.items() if n > 1} <= flagged
    audit_ok(mail_world, job)


def test_events_follow_prints_events_as_they_happen(mail_world: MailWorld) -> None:
    domains = mail_world.domains(2)
    job, _, _ = submit(mail_world, newsletter(domains, 20))
    follower = subprocess.Popen([*BULKMAIL, "events", "--redis", mail_world.redis_url, "--job", job, "--follow"],
                                cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        mail_world.serve(workers=1)
        assert follower.stdout is not None
        lines = [json.loads(follower.stdout.readline()) for _ in range(20)]  # blocks until they come
        assert {e["status"] for e in lines} == {"delivered"} and len({e["rcpt"] for e in lines}) == 20
        assert follower.poll() is None  # still following
    finally:
        follower.terminate()
        follower.wait(timeout=10)
