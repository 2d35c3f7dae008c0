"""The suppression list against a real redis-server, the `bounces`/`suppress`
commands, and the synchronous path: a sink's 5xx, through the real SMTP
client, classified and suppressed (or not)."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest
from redis.asyncio import Redis

from engine import bounce_rules as r
from engine.classify import from_reply
from engine.config import SmtpConfig, SmtpTimeouts
from engine.errors import InputError
from engine.net.smtp_protocol import SmtpSession
from engine.queue.suppression import Suppressed, SuppressionList, read_csv
from engine.smtp import Envelope, Transaction
from tests.support.clock import ManualClock
from workers.bounce_commands import add_bounce_commands, add_suppress_commands

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "bounces"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bulkmail")
    sub = p.add_subparsers(dest="command", required=True)
    add_bounce_commands(sub)
    add_suppress_commands(sub)
    return p


def run(*argv: str) -> int:
    args = parser().parse_args(list(argv))
    return int(args.func(args))


async def test_add_check_remove_many_in_one_round_trip(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    lists = SuppressionList(redis, "bm", ManualClock(1000.0))
    try:
        added = await lists.add_many(
            [Suppressed("Example.org", "A@x.test", "bad_mailbox: gone", "async", 0.0, r.BAD_MAILBOX),
             Suppressed("example.org", "b@y.test", "complaint", "arf", 5.0)]  # fmt: skip
        )
        assert added == 2
        assert await lists.add("example.org", "a@X.TEST", "again") is False  # replaced, not new
        found = await lists.check("example.org", ["a@x.test", "B@Y.test", "c@z.test"])
        assert set(found) == {"a@x.test", "B@Y.test"} and found["B@Y.test"].time == 5.0
        assert found["a@x.test"].reason == "again" and found["a@x.test"].time == 1000.0
        assert await lists.check("other.org", ["a@x.test"]) == {}  # per sender domain
        assert await lists.remove("example.org", ["A@x.test", "nobody@x.test"]) == 1
        assert [e.address async for e in lists.entries("example.org")] == ["b@y.test"]
        assert await lists.domains() == ["example.org"]
    finally:
        await redis.aclose()


async def test_csv_round_trip(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    lists = SuppressionList(redis, "bm", ManualClock(50.0))
    try:
        text = "sender_domain,address,reason,source,time\nexample.org,a@x.test,bounce,import,12.5\n"
        text += "# a comment\nother.org,b@y.test,,,\n"
        assert await lists.import_csv(io.StringIO(text)) == 2
        assert await lists.import_csv(io.StringIO("c@z.test,complained\n"), default_domain="example.org") == 1
        out = io.StringIO()
        assert await lists.export_csv(out) == 3
        rows = read_csv(io.StringIO(out.getvalue()))
        assert [(e.sender_domain, e.address, e.reason, e.source, e.time) for e in rows] == [
            ("example.org", "a@x.test", "bounce", "import", 12.5),
            ("example.org", "c@z.test", "complained", "import", 50.0),
            ("other.org", "b@y.test", "", "import", 50.0),
        ]
        with pytest.raises(InputError):
            read_csv(io.StringIO("example.org,not-an-address\n"))
    finally:
        await redis.aclose()


def test_suppress_commands(redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("suppress", "add", "--redis", redis_url, "example.org", "a@x.test", "b@x.test", "--reason", "asked") == 0
    assert run("suppress", "remove", "--redis", redis_url, "example.org", "b@x.test") == 0
    capsys.readouterr()
    assert run("suppress", "list", "--redis", redis_url, "example.org") == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[0] == "sender_domain,address,reason,source,time" and listed[1].startswith("example.org,a@x.test,asked,manual,")
    csv_file = tmp_path / "in.csv"
    csv_file.write_text("c@y.test,imported\n")
    assert run("suppress", "import", "--redis", redis_url, str(csv_file)) == 2  # no sender domain for a short row
    assert run("suppress", "import", "--redis", redis_url, "--domain", "other.org", str(csv_file)) == 0
    exported = tmp_path / "out.csv"
    assert run("suppress", "export", "--redis", redis_url, str(exported)) == 0
    assert len(exported.read_text().splitlines()) == 3


def test_bounces_parse_prints_one_object_per_bounced_recipient(capsys: pytest.CaptureFixture[str]) -> None:
    files = [CORPUS / "sisimai/bsd/lhost-exim-02.eml", CORPUS / "sisimai/bsd/rfc3834-01.eml",
             CORPUS / "sisimai/bsd/arf-02.eml"]  # fmt: skip
    assert run("bounces", "parse", *map(str, files)) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["recipient"] for row in rows] == ["kijitora@example.jp", "sabatora@example.jp",
                                                  "this-local-part-does-not-exist-on-yahoo@yahoo.com"]  # fmt: skip
    first = rows[0]
    assert set(first) == {"file", "recipient", "action", "status", "code", "category", "fault", "permanent"}
    assert (first["action"], first["status"], first["code"], first["category"], first["fault"], first["permanent"]) == (
        "failed", "5.1.1", 550, r.BAD_MAILBOX, r.RECIPIENT, True
    )
    assert rows[2]["action"] == "complained" and rows[2]["feedback_type"] == "abuse"
    assert run("bounces", "parse", "/nonexistent/file.eml") == 1


def test_a_sink_5xx_to_rcpt_suppresses_only_when_it_is_the_recipients_fault(smtp_sink, aio) -> None:  # type: ignore[no-untyped-def]
    sink = smtp_sink(rcpt={"gone": "550 5.1.1 <gone@y.test>: Recipient address rejected: User unknown",
                           "busy": "452 4.2.2 Mailbox full, try later",
                           "ip": "554 5.7.1 Service unavailable; Client host [127.0.0.1] blocked using zen.spamhaus.org"})  # fmt: skip
    config = SmtpConfig(helo="client.test", tls_policy="none", timeouts=SmtpTimeouts(*([5.0] * 12)))

    async def deliver() -> list[tuple[str, bool, str]]:
        session = await SmtpSession.connect(sink.host, sink.port, server_name="mx.test", config=config)
        txn = Transaction(Envelope("news@example.org", ("gone@y.test", "busy@y.test", "ip@y.test", "ok@y.test")),
                          b"Subject: hi\r\n\r\nhello\r\n")  # fmt: skip
        result = await session.submit(txn)
        await session.quit()
        verdicts = [(x.recipient, from_reply(x.reply, x.delivered)) for x in result.recipients]
        return [(a, v.suppress, v.category) for a, v in verdicts]

    assert aio(deliver()) == [
        ("gone@y.test", True, r.BAD_MAILBOX),
        ("busy@y.test", False, r.MAILBOX_FULL),
        ("ip@y.test", False, r.REPUTATION),
        ("ok@y.test", False, ""),
    ]
