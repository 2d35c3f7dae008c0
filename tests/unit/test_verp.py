"""VERP envelope senders and the trace header: round trips, forgeries, limits."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.address import parse_address as parse_mailbox
from engine.config import BounceConfig
from engine.verp import (
    MAX_LOCAL_PART,
    envelope_sender,
    job_digest,
    parse_address,
    parse_trace,
    trace_header,
    verify,
)

CONFIG = BounceConfig(domain="bounce.example.org", secret="s3cret")
JOB_IDS = st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True)


def test_round_trip_for_a_generated_job_id() -> None:
    sender = envelope_sender(CONFIG, "0193a1b2c3d4e5f6a7b8", 41)
    assert sender.startswith("bounces+") and sender.endswith("@bounce.example.org")
    ref = parse_address(CONFIG, sender)
    assert ref is not None and ref.job_id == "0193a1b2c3d4e5f6a7b8" and ref.index == 41
    assert verify(CONFIG, ref, "0193a1b2c3d4e5f6a7b8")


@given(JOB_IDS, st.integers(min_value=0, max_value=2**32))
def test_every_job_id_and_index_round_trip_within_64_octets(job_id: str, index: int) -> None:
    sender = envelope_sender(CONFIG, job_id, index)
    local = sender.rpartition("@")[0]
    assert len(local) <= MAX_LOCAL_PART
    parse_mailbox(sender)  # a valid RFC 5321 mailbox
    ref = parse_address(CONFIG, sender.upper())  # some MTAs change the case of what they bounce to
    assert ref is not None and ref.index == index and ref.digest == job_digest(job_id)
    assert ref.job_id in (job_id, None)
    assert verify(CONFIG, ref, job_id)


def test_a_mixed_case_or_long_job_id_travels_as_a_digest() -> None:
    for job_id in ("Spring-Newsletter", "x" * 60, "a..b"):
        ref = parse_address(CONFIG, envelope_sender(CONFIG, job_id, 3))
        assert ref is not None and ref.job_id is None and ref.digest == job_digest(job_id)
        assert verify(CONFIG, ref, job_id)


@pytest.mark.parametrize(
    "change",
    [
        lambda s: s.replace("bounces+", "bounces+a", 1)[:-1],  # one more character in the mac
        lambda s: s[:8] + ("b" if s[8] != "b" else "c") + s[9:],  # the mac altered
        lambda s: s.replace("-7-", "-8-", 1),  # another recipient
        lambda s: s.replace("job-1", "job-2", 1),  # another job
    ],
)
def test_altered_tokens_do_not_verify(change: object) -> None:
    sender = envelope_sender(CONFIG, "job-1", 7)
    forged = change(sender)  # type: ignore[operator]
    ref = parse_address(CONFIG, forged)
    if ref is not None:
        assert not verify(CONFIG, ref, ref.job_id or "job-1")


def test_another_secret_or_no_secret_does_not_verify() -> None:
    ref = parse_address(CONFIG, envelope_sender(CONFIG, "job-1", 7))
    assert ref is not None
    assert not verify(replace(CONFIG, secret="other"), ref, "job-1")
    assert not verify(replace(CONFIG, secret=""), ref, "job-1")


@pytest.mark.parametrize(
    "address",
    [
        "bounces+abcdefghij-7-job@other.example.org",  # not our domain
        "news@bounce.example.org",  # not our prefix
        "bounces+short-7-job@bounce.example.org",  # the mac has the wrong size
        "bounces+abcdefghij-7-@bounce.example.org",  # no job
        "bounces+abcdefgh1j-7-job@bounce.example.org",  # 1 is not base 32
        "",
        "@",
    ],
)
def test_addresses_that_are_not_tokens(address: str) -> None:
    assert parse_address(CONFIG, address) is None


def test_verp_needs_a_domain_and_a_secret() -> None:
    with pytest.raises(ValueError):
        envelope_sender(BounceConfig(secret="x"), "job", 1)
    with pytest.raises(ValueError):
        envelope_sender(BounceConfig(domain="b.example"), "job", 1)


def test_trace_header_round_trip_and_forgery() -> None:
    name, value = trace_header(CONFIG, "Spring-Newsletter", 12, "Jane.Doe@Example.com")
    assert name == "X-Bulkmail-Trace" and "\n" not in value
    ref = parse_trace(CONFIG, value)
    assert ref is not None and ref.verified
    assert (ref.job_id, ref.index, ref.rcpt) == ("Spring-Newsletter", 12, "Jane.Doe@Example.com")
    forged = value.replace("i=12", "i=13")
    other = parse_trace(CONFIG, forged)
    assert other is not None and not other.verified
    assert parse_trace(CONFIG, "j=x; i=1; r=!!!; m=abc") is None
    assert parse_trace(CONFIG, "garbage") is None


def test_config_from_environment() -> None:
    cfg = BounceConfig.from_env({"BULKMAIL_BOUNCE_DOMAIN": "B.Example.ORG", "BULKMAIL_BOUNCE_SECRET": "k"})
    assert cfg.domain == "b.example.org" and cfg.secret == "k" and cfg.prefix == "bounces"
