"""The Postfix peers themselves work: proven with the stdlib smtplib client only.

If these fail, interop failures elsewhere say nothing about bulkmail.
"""

from __future__ import annotations

import smtplib
import subprocess
from collections.abc import Callable

import pytest

from tests.support.postfix import PostfixInstance, SmtpSinkProcess, bare_newline_setting

pytestmark = pytest.mark.postfix

SinkFactory = Callable[..., SmtpSinkProcess]
MtaFactory = Callable[..., PostfixInstance]
MESSAGE = b"From: a@sender.test\r\nTo: b@dest.test\r\nSubject: peers\r\n\r\nline one\r\n.starts with a dot\r\n"


def connect(address: tuple[str, int]) -> smtplib.SMTP:
    return smtplib.SMTP(*address, timeout=30)


def test_sink_dumps_each_transaction_and_counts_it(smtp_sink_process: SinkFactory) -> None:
    sink = smtp_sink_process(dump=True)
    with connect(sink.address) as client:
        assert client.sendmail("a@sender.test", ["b@dest.test", "c@dest.test"], MESSAGE) == {}
        assert client.sendmail("<>", ["d@dest.test"], b"Subject: second\r\n\r\nbody\r\n") == {}

    first, second = sink.wait_for_messages(2)
    assert (first.sender, first.recipients) == ("a@sender.test", ("b@dest.test", "c@dest.test"))
    # The dump is LF-terminated and unstuffed: ".starts" went out as "..starts".
    assert first.message == MESSAGE.replace(b"\r\n", b"\n")
    assert (second.mail_args, second.recipients) == ("<>", ("d@dest.test",))
    assert sink.counters().messages == 2


def test_sink_soft_and_custom_hard_rejects(smtp_sink_process: SinkFactory) -> None:
    soft = smtp_sink_process(soft_reject=("RCPT",), soft_reply="451 4.7.1 Greylisted")
    hard = smtp_sink_process("127.0.0.3", hard_reject=("MAIL",), hard_reply="554 5.7.1 Go away")

    with connect(soft.address) as client:
        client.ehlo()
        assert not client.has_extn("pipelining")  # -r implies -p
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            client.sendmail("a@sender.test", ["b@dest.test"], MESSAGE)
    assert refused.value.recipients == {"b@dest.test": (451, b"4.7.1 Greylisted")}

    with connect(hard.address) as client, pytest.raises(smtplib.SMTPSenderRefused) as sender:
        client.sendmail("a@sender.test", ["b@dest.test"], MESSAGE)
    assert (sender.value.smtp_code, sender.value.smtp_error) == (554, b"5.7.1 Go away")


def test_sink_421_and_silent_disconnect(smtp_sink_process: SinkFactory) -> None:
    closing = smtp_sink_process(close_421=("RCPT",))
    dropping = smtp_sink_process("127.0.0.3", drop=("DATA",))

    with connect(closing.address) as client, pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        client.sendmail("a@sender.test", ["b@dest.test"], MESSAGE)
    assert refused.value.recipients["b@dest.test"][0] == 421

    client = connect(dropping.address)
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.sendmail("a@sender.test", ["b@dest.test"], MESSAGE)
    client.close()
    assert dropping.counters().messages == 0


def test_sink_hides_extensions_and_esmtp(smtp_sink_process: SinkFactory) -> None:
    plain = smtp_sink_process(pipelining=False, enhanced_status=False, eightbitmime=False, dsn=False)
    old = smtp_sink_process("127.0.0.3", esmtp=False, dump=True)

    with connect(plain.address) as client:
        code, _ = client.ehlo()
        assert code == 250
        assert not any(client.has_extn(name) for name in ("pipelining", "enhancedstatuscodes", "8bitmime", "dsn"))

    with connect(old.address) as client:
        assert client.ehlo()[0] == 500
        assert client.helo()[0] == 250
        client.sendmail("a@sender.test", ["b@dest.test"], MESSAGE)
    (txn,) = old.wait_for_messages(1)
    assert txn.helo is not None


def test_postfix_relays_what_it_accepts_to_the_recording_sink(postfix_mta: MtaFactory) -> None:
    mta = postfix_mta()
    assert mta.send("a@sender.test", ["b@dest.test", "c@other.test"], MESSAGE) == {}

    assert mta.relay_sink is not None
    (txn,) = mta.relay_sink.wait_for_messages(1)
    assert sorted(txn.recipients) == ["b@dest.test", "c@other.test"]
    assert b"\nSubject: peers\n" in txn.message
    assert txn.message.endswith(b"\n\nline one\n.starts with a dot\n")
    mta.wait_until_queue_empty()
    assert "status=sent" in mta.log()


@pytest.mark.parametrize(
    ("version", "setting"),
    [("3.7.9", "yes"), ("3.7.11", "reject"), ("3.8.4", "yes"), ("3.8.5", "reject"), ("3.6.14", "reject")]
    + [("3.9.0", "reject"), ("3.10.1", "reject")],
)
def test_bare_newline_setting_follows_the_backports(version: str, setting: str) -> None:
    assert bare_newline_setting(version) == setting


def test_postfix_runs_with_the_strictest_bare_newline_setting(postfix_mta: MtaFactory) -> None:
    mta = postfix_mta()
    assert mta.forbid_bare_newline == bare_newline_setting(mta.version)
    postconf = ["/usr/sbin/postconf", "-c", str(mta.config_dir), "-h", "smtpd_forbid_bare_newline", "smtpd_forbid_bare_newline_exclusions"]
    assert subprocess.run(postconf, capture_output=True, text=True, check=True, timeout=30).stdout == f"{mta.forbid_bare_newline}\n\n"


@pytest.mark.parametrize("smuggle", [b"\n.\n", b"\r\n.\n", b"\n.\r\n"], ids=repr)
def test_postfix_rejects_a_bare_lf_smuggling_attempt(postfix_mta: MtaFactory, smuggle: bytes) -> None:
    mta = postfix_mta()
    smuggled = b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@y.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n.\r\n"
    with connect(mta.address) as client:
        client.ehlo()
        assert client.mail("a@sender.test")[0] == 250
        assert client.rcpt("b@dest.test")[0] == 250
        client.putcmd("data")
        assert client.getreply()[0] == 354
        client.send(b"Subject: hi\r\n\r\nbody" + smuggle + smuggled)  # raw bytes: data() would repair them
        code, text = client.getreply()
    assert (code, b"bare <LF> received" in text) == (550, True)

    # A clean message afterwards is the sync point: when it has arrived, nothing else will.
    assert mta.send("a@sender.test", ["after@dest.test"], MESSAGE) == {}
    assert mta.relay_sink is not None
    (txn,) = mta.relay_sink.wait_for_messages(1)
    assert txn.recipients == ("after@dest.test",)
    mta.wait_until_queue_empty()
    assert len(mta.relay_sink.transactions()) == 1
    assert "bare <LF> received" in mta.log()


def test_postfix_relay_mode_routes_each_domain_to_its_own_sink(postfix_mta: MtaFactory, smtp_sink_process: SinkFactory) -> None:
    sinks = {f"d{i}.test": smtp_sink_process(f"127.0.0.{20 + i}", dump=True) for i in range(3)}
    mta = postfix_mta(routes={domain: sink.address for domain, sink in sinks.items()})
    for domain in sinks:
        for n in range(2):
            assert mta.send("a@sender.test", [f"r{n}@{domain}"], MESSAGE) == {}

    mta.wait_until_queue_empty()
    for domain, sink in sinks.items():
        received = sink.wait_for_messages(2)
        assert sorted(r for txn in received for r in txn.recipients) == [f"r0@{domain}", f"r1@{domain}"]
