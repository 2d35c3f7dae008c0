"""Events read back from both stream layouts: report.lua's compact ``r``/``x`` entry and the
one-field-per-value entry of asynchronous bounces."""

from __future__ import annotations

from engine.queue.store import event_dict


def test_compact_entry_keeps_a_reply_text_holding_the_separator() -> None:
    x = b"deferred|451|4.7.1|mx1.a.test|2|1800000000123|1|throttled|remote|4.7.1 try later | rate limited"
    event = event_dict("J", b"1-0", {b"r": b"u@a.test", b"x": x})
    assert event == {
        "id": "1-0", "job": "J", "rcpt": "u@a.test", "status": "deferred", "code": 451, "enhanced": "4.7.1",
        "reply": "4.7.1 try later | rate limited", "mx": "mx1.a.test", "attempt": 2, "ts": 1800000000.123,
        "possible_duplicate": True, "category": "throttled", "fault": "remote", "source": "smtp",
    }  # fmt: skip


def test_compact_entry_with_empty_values_reads_as_the_old_layout_did() -> None:
    compact = event_dict("J", "2-0", {"r": "u@a.test", "x": "expired|0||||1800000000000|0|||"})
    spread = event_dict("J", "2-0", {"r": "u@a.test", "s": "expired", "c": "0", "e": "", "t": "", "m": "",
                                     "a": "0", "ts": "1800000000000"})  # fmt: skip
    assert compact == spread
    assert (compact["code"], compact["enhanced"], compact["mx"], compact["possible_duplicate"]) == (None, None, None, False)
