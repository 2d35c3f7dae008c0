"""Redis faults: killed and restarted from its AOF mid-run, unreachable at submit time."""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Callable

from engine.queue.embedded import RedisProcess
from tests.support.serve import cli, events
from tests.support.waiting import wait_until
from tests.support.world import FAST, MailWorld, audit_ok, newsletter, submit, wait_done


def test_redis_killed_mid_run_and_restarted_from_its_aof_loses_nothing(
    redis_factory: Callable[..., RedisProcess], world_factory: Callable[[str], MailWorld]
) -> None:
    server = redis_factory(appendfsync="always")
    world = world_factory(server.url)
    domains = world.domains(12)
    world.serve(workers=2, config=world.config(FAST))
    job, _, _ = submit(world, newsletter(domains, 3000))
    wait_until(lambda: len(world.received()) >= 300, 30, what="delivery under way")

    server.stop(signal.SIGKILL)
    refused = cli(server.url, "submit", world.job_file(newsletter(domains, 5)), timeout=30)
    assert refused.returncode == 3 and "nothing was submitted" in refused.stderr
    server.start()  # same directory and port: it loads the AOF

    final = wait_done(world, job, timeout=90)
    assert final["delivered"] == 3000 and final["total"] == 3000
    received = Counter(r for m in world.received() for r in m.rcpt_tos)
    assert len(received) == 3000
    flagged = {e["rcpt"] for e in events(world.redis_url, job) if e["possible_duplicate"]}
    assert {r for r, n in received.items() if n > 1} <= flagged
    audit_ok(world, job)
