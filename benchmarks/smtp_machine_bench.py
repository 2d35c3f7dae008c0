"""The sans-IO SMTP machine alone: pipelined transactions against canned replies, no sockets.

    python -m benchmarks.smtp_machine_bench [--transactions N] [--size 2048] [--rcpts 1]
        [--queued-ids] [--repeat 5] [--profile]

What one step does is what a pipelined session into ``smtp-sink`` does per message: submit
transaction k (its MAIL/RCPT/DATA group queues behind k-1's end of data), feed the reply to
k-1's end of data together with k's MAIL, RCPT and DATA replies in one chunk (smtp-sink
answers a pipelined group in one segment), drain the events, ask for the deadline and take
the bytes to write. Every safety check is on: messages are rendered per transaction from
the benchmark's byte template (distinct bytes, so nothing can be cached by message), and
``--queued-ids`` makes every end-of-data reply distinct ("250 2.0.0 Ok: queued as ...",
like Postfix) so no reply line repeats either.

Prints microseconds of CPU (``time.process_time``) per transaction for the whole step, for
the harness part alone (rendering and building ``Transaction`` values, which the engine also
pays but not in this module) and the difference: the machine's own cost. ``--profile`` runs
one pass under cProfile and prints the top functions by own time.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import time
from collections.abc import Callable

from benchmarks.workloads import DOMAIN, SENDER, MessageTemplate
from engine.config import SmtpConfig
from engine.smtp.client import ClientConnection
from engine.smtp.states import Ready, TransactionDone
from engine.smtp.transaction import Envelope, Transaction

GREETING = b"220 smtp-sink ESMTP\r\n"
EHLO = (
    b"250-smtp-sink\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-8BITMIME\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n250-DSN\r\n250 SMTPUTF8\r\n"
)
MAIL_OK = b"250 2.1.0 Ok\r\n"
RCPT_OK = b"250 2.1.5 Ok\r\n"
DATA_GO = b"354 End data with <CR><LF>.<CR><LF>\r\n"
DOT_OK = b"250 2.0.0 Ok\r\n"


class Workload:
    def __init__(self, size: int, rcpts: int, queued_ids: bool) -> None:
        self.template = MessageTemplate(size)
        self.rcpts = rcpts
        self.queued_ids = queued_ids
        self.group = MAIL_OK + RCPT_OK * rcpts + DATA_GO

    def transaction(self, k: int) -> Transaction:
        rcpts = tuple(f"u{r}@d{r % 1000}.{DOMAIN}" for r in range(k * self.rcpts, (k + 1) * self.rcpts))
        message = self.template.render(rcpts[0].encode(), f"Reader {k}".encode())
        return Transaction(Envelope(SENDER, rcpts), message)

    def dot_ok(self, k: int) -> bytes:
        return b"250 2.0.0 Ok: queued as 4Q%07X\r\n" % k if self.queued_ids else DOT_OK


def machine_run(work: Workload, n: int) -> int:
    """``n`` transactions through one machine; returns how many were delivered."""
    conn = ClientConnection(SmtpConfig(helo=f"client.{DOMAIN}"), starttls="never")
    conn.receive_data(GREETING)
    conn.data_to_send()
    conn.receive_data(EHLO)
    assert isinstance(conn.next_event(), Ready)
    conn.data_to_send()
    delivered = 0
    conn.submit(work.transaction(0))
    conn.data_to_send()
    conn.receive_data(work.group)
    conn.data_to_send()
    group = work.group
    for k in range(1, n + 1):
        if k < n:
            conn.submit(work.transaction(k))
            conn.receive_data(work.dot_ok(k - 1) + group)
        else:
            conn.receive_data(work.dot_ok(k - 1))
        event = conn.next_event()
        while event is not None:
            if isinstance(event, TransactionDone) and all(r.delivered for r in event.result.recipients):
                delivered += 1
            event = conn.next_event()
        conn.waiting_for()
        conn.data_to_send()
    return delivered


def harness_run(work: Workload, n: int) -> int:
    """The same rendering and ``Transaction`` building with no machine: the part to subtract."""
    count = 0
    for k in range(n):
        work.transaction(k)
        work.dot_ok(k)
        count += 1
    return count


def timed(fn: Callable[[Workload, int], int], work: Workload, n: int) -> float:
    t0 = time.process_time()
    done = fn(work, n)
    seconds = time.process_time() - t0
    if done != n:
        raise SystemExit(f"{fn.__name__}: {done} of {n} transactions delivered")
    return seconds / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--transactions", type=int, default=50_000)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--rcpts", type=int, default=1)
    parser.add_argument("--queued-ids", action="store_true", help="a distinct reply to every end of data")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    work = Workload(args.size, args.rcpts, args.queued_ids)
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(machine_run, work, args.transactions)
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)
        return
    totals, harness = [], []
    for _ in range(args.repeat):  # interleaved, so both see the same machine load
        totals.append(timed(machine_run, work, args.transactions))
        harness.append(timed(harness_run, work, args.transactions))
    total, base = statistics.median(totals), statistics.median(harness)
    print(
        f"{args.transactions} transactions of {args.size} B, {args.rcpts} rcpt: "
        f"step {total:.2f} us (min {min(totals):.2f}, max {max(totals):.2f}), "
        f"harness {base:.2f} us, machine {total - base:.2f} us per transaction"
    )


if __name__ == "__main__":
    main()
