"""Bounces through the whole engine: a 5xx from a sink, an asynchronous DSN to the
VERP address the sink saw, and an ARF report carrying the trace header each change
the recipient's state and the suppression list as specified."""

from __future__ import annotations

import json
import os
import re
import signal
import smtplib
import subprocess

from tests.integration.test_bounces import arf, dsn
from tests.support.ports import free_port
from tests.support.serve import BULKMAIL, ROOT, cli, events, status
from tests.support.waiting import wait_until
from tests.support.world import MailWorld, submit, wait_done

BOUNCE = {"BULKMAIL_BOUNCE_DOMAIN": "bounce.e2e.test", "BULKMAIL_BOUNCE_SECRET": "s3cret-for-tests"}
LISTENER = "127.0.0.31"


def suppressed(world: MailWorld) -> dict[str, str]:
    result = cli(world.redis_url, "suppress", "list", "sender.test")
    assert result.returncode == 0, result.stderr
    rows = [line.split(",") for line in result.stdout.splitlines()[1:]]
    return {row[1]: row[3] for row in rows}  # address -> source


def test_bounces_and_complaints_end_to_end(mail_world: MailWorld) -> None:
    domains = mail_world.domains(3)
    for sink in mail_world.sinks:
        sink.rcpt = {"gone": "550 5.1.1 <gone>: no such user"}
    mail_world.serve(env=BOUNCE)
    rcpts = [f"alice@{domains[0]}", f"bob@{domains[1]}", f"gone@{domains[2]}"]
    job, stdout, _ = submit(mail_world, {"from": "news@sender.test", "text": "hi {{email}}", "recipients": rcpts}, "--wait")
    assert json.loads(stdout.splitlines()[-1])["delivered"] == 2

    # a 5xx during the session: bounced, classified, suppressed
    (bounce,) = [e for e in events(mail_world.redis_url, job) if e["status"] == "bounced"]
    assert (bounce["rcpt"], bounce["category"], bounce["fault"]) == (rcpts[2], "bad_mailbox", "recipient")
    assert wait_until(lambda: suppressed(mail_world).get(rcpts[2]) == "smtp", 10, what="the smtp suppression")

    # VERP envelope senders and trace headers on what was sent
    sent = {m.rcpt_tos[0]: m for m in mail_world.received()}
    verp = sent[rcpts[0]].mail_from
    assert re.fullmatch(r"bounces\+[a-z2-7]{10}-0-.+@bounce\.e2e\.test", verp) or verp.endswith("@bounce.e2e.test")
    trace = re.search(rb"X-Bulkmail-Trace: ([^\r\n]+)", sent[rcpts[1]].data).group(1).decode()  # type: ignore[union-attr]

    port = free_port(LISTENER)
    listener = subprocess.Popen(
        [*BULKMAIL, "bounces", "serve", "--redis", mail_world.redis_url, "--listen", f"{LISTENER}:{port}"],
        cwd=ROOT, env={**os.environ, **BOUNCE}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: _listening(port), 20, what="bulkmail bounces serve")
        # an asynchronous DSN to the VERP address of a delivered recipient
        with smtplib.SMTP(LISTENER, port, timeout=10) as smtp:
            smtp.sendmail("", [verp], dsn(rcpts[0]))
        wait_until(lambda: status(mail_world.redis_url, job)["bounced"] == 2, 20, what="the async bounce")
        assert suppressed(mail_world).get(rcpts[0]) == "async"
        # an ARF complaint matched through the trace header
        with smtplib.SMTP(LISTENER, port, timeout=10) as smtp:
            smtp.sendmail("", ["fbl@bounce.e2e.test"], arf(trace))
        wait_until(lambda: suppressed(mail_world).get(rcpts[1]) == "arf", 20, what="the complaint")
    finally:
        listener.send_signal(signal.SIGTERM)
        listener.wait(timeout=20)

    # mail to suppressed addresses never opens a connection
    before = len(mail_world.received())
    again, stdout, _ = submit(mail_world, {"from": "news@sender.test", "text": "again", "recipients": rcpts}, "--wait")
    final = wait_done(mail_world, again)
    assert final["suppressed"] == 3 and final["delivered"] == 0
    assert len(mail_world.received()) == before
    assert {e["status"] for e in events(mail_world.redis_url, again)} == {"suppressed"}


def _listening(port: int) -> bool:
    try:
        with smtplib.SMTP(LISTENER, port, timeout=2):
            return True
    except OSError:
        return False
