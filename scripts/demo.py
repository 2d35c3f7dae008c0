"""The demo: a real newsletter end to end on the embedded default.

20,000 personalized recipients over 200 domains (d0..d199.demo.test), served by
a loopback DNS server and 10 SMTP sinks on 127.0.0.10-19, delivered by
``bulkmail serve`` with the embedded redis-server, submitted with
``bulkmail submit --wait``. The sinks check every message's personalization;
the final report says what arrived, how many connections it took, and what
Redis recorded. Exit status 0 only if every recipient arrived exactly once with
its own content.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.dns_server import DnsServer  # noqa: E402
from tests.support.ports import free_port  # noqa: E402
from tests.support.sinks import RecordingSink  # noqa: E402

MX = [f"127.0.0.{10 + i}" for i in range(10)]
BULKMAIL = [sys.executable, "-m", "workers.cli"]


def build_job(recipients: int, domains: int, job_id: str) -> dict[str, object]:
    cities = ["Lisbon", "Osaka", "Nairobi", "Quito", "Oslo", "Perth", "Cairo", "Lima"]
    return {
        "id": job_id,
        "from": "digest@news.demo.test",
        "subject": "{{name}}, your November digest",
        "headers": {"List-Unsubscribe": "<mailto:unsubscribe@news.demo.test?subject={{email}}>"},
        "text": (
            "Hello {{name}},\n\nHere is what happened in {{city}} this month.\n"
            "Your plan: {{plan}}. Member number {{number}}.\n\n"
            + "".join(f"Story {k}: a short paragraph about the news of the month, item {k}.\n" for k in range(20))
            + "\nSee you next month,\nThe Demo Team\n"
        ),
        "html": "<p>Hello {{name}},</p><p>News from {{city}} for member {{number}}.</p>",
        "recipients": [
            {
                "to": f"reader{i}@d{i % domains}.demo.test",
                "vars": {"name": f"Reader {i}", "city": cities[i % len(cities)], "plan": "pro" if i % 3 else "free", "number": i},
            }
            for i in range(recipients)
        ],
    }


def check_messages(sinks: list[RecordingSink], recipients: int) -> dict[str, object]:
    seen: Counter[str] = Counter()
    wrong: list[str] = []
    for message in (m for sink in sinks for m in sink.messages):
        for rcpt in message.rcpt_tos:
            seen[rcpt] += 1
            number = int(re.match(r"reader(\d+)@", rcpt).group(1))  # type: ignore[union-attr]
            body = message.data
            if f"Hello Reader {number},".encode() not in body or f"Member number {number}.".encode() not in body:
                wrong.append(rcpt)
    return {
        "messages_received": sum(seen.values()),
        "distinct_recipients": len(seen),
        "duplicates": sum(n - 1 for n in seen.values() if n > 1),
        "missing": recipients - len(seen),
        "personalization_errors": len(wrong),
        "connections": sum(sink.connections for sink in sinks),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--recipients", type=int, default=20000)
    parser.add_argument("--domains", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()

    env = {**os.environ, "BULKMAIL_LOG_LEVEL": "WARNING"}
    env.pop("BULKMAIL_REDIS_URL", None)  # the demo runs on the embedded default
    print("== starting the loopback DNS server and 10 SMTP sinks (127.0.0.10-19)")
    dns = DnsServer().start()
    dns.add_pattern(domain="d{n}.demo.test", count=args.domains, mx="mx{n%10}.demo.test", a="127.0.0.{10+n%10}")
    port = free_port(MX[0], also=tuple(MX[1:]))
    sinks = [RecordingSink(host, port).start() for host in MX]
    work = Path(tempfile.mkdtemp(prefix="bulkmail-demo-"))
    job_id = time.strftime("demo-%Y%m%d-%H%M%S")
    job_file = work / "newsletter.json"
    job_file.write_text(json.dumps(build_job(args.recipients, args.domains, job_id)))
    url = subprocess.run([*BULKMAIL, "redis", "url"], cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout.strip()
    print(f"== embedded Redis (AOF, appendfsync always): {url}")
    serve_log = work / "serve.log"
    print(f"== bulkmail serve --workers {args.workers} (log: {serve_log})")
    with open(serve_log, "wb") as log:
        serve = subprocess.Popen(
            [*BULKMAIL, "serve", "--workers", str(args.workers), "--dns", f"{dns.address[0]}:{dns.address[1]}",
             "--smtp-port", str(port), "--allow-private-mx", "--helo", "demo.bulkmail.test"],
            cwd=ROOT, env={**env, "BULKMAIL_LOG_LEVEL": "INFO"}, stdout=log, stderr=log,
        )
    try:
        print(f"== bulkmail submit {job_file.name} --wait  ({args.recipients:,} recipients over {args.domains} domains)")
        started = time.monotonic()
        result = subprocess.run([*BULKMAIL, "submit", str(job_file), "--wait", "--timeout", str(args.timeout)],
                                cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True, timeout=args.timeout + 30)
        elapsed = time.monotonic() - started
        if result.returncode != 0:
            print(f"submit failed ({result.returncode}); serve log:\n{serve_log.read_text()[-3000:]}")
            return 1
        status = json.loads(result.stdout.splitlines()[-1])
        sample = subprocess.run([*BULKMAIL, "events", "--job", job_id], cwd=ROOT, env=env, capture_output=True, text=True).stdout.splitlines()[:2]
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=60)
    checked = check_messages(sinks, args.recipients)
    for sink in sinks:
        sink.stop()
    dns.stop()
    report(job_id, status, checked, elapsed, sample)
    ok = status["delivered"] == args.recipients and checked["distinct_recipients"] == args.recipients
    ok = ok and checked["duplicates"] == 0 and checked["personalization_errors"] == 0
    print("\nRESULT:", "OK, every recipient delivered exactly once with its own content" if ok else "FAILED")
    print(f"The embedded redis-server keeps running for `bulkmail status {job_id}`; `bulkmail redis stop` stops it.")
    return 0 if ok else 1


def report(job_id: str, status: dict[str, object], checked: dict[str, object], elapsed: float, sample: list[str]) -> None:
    delivered = int(status["delivered"])  # type: ignore[call-overload]
    connections = int(checked["connections"])  # type: ignore[call-overload]
    print("\n== final report")
    print(f"job                      {job_id}")
    print(f"delivered / total        {delivered:,} / {status['total']:,}  (bounced {status['bounced']}, deferred {status['deferred']}, expired {status['expired']})")
    print(f"done                     {status['done']}")
    print(f"time, submit to done     {elapsed:.1f} s  ({delivered / max(elapsed, 1e-9):,.0f} messages/s, demo sinks are Python)")
    print(f"received at the sinks    {checked['messages_received']:,} messages, {checked['distinct_recipients']:,} distinct recipients, "
          f"{checked['duplicates']} duplicates, {checked['missing']} missing")
    print(f"personalization errors   {checked['personalization_errors']}")
    print(f"SMTP connections opened  {connections}  ->  {connections / max(delivered, 1):.4f} connections per message "
          f"({delivered / max(connections, 1):,.0f} messages per connection)")
    print("two events (bulkmail events --job ...):")
    for line in sample:
        print("  " + line)


if __name__ == "__main__":
    sys.exit(main())
