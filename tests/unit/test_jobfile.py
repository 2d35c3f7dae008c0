"""Streaming job JSON: same answers as json.loads + validation, errors with positions.

Every case runs both ways: recipients decoded at once (a job text up to WHOLE_ARRAY_TEXT)
and streamed one item at a time (larger ones; ``whole_limit=0`` here)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import InputError
from engine.job import load_job
from engine.jobfile import WHOLE_ARRAY_TEXT, stream_job

BASE = {"from": "a@b.test", "text": "hi {{name}}"}
WAYS = [WHOLE_ARRAY_TEXT, 0]


@pytest.mark.parametrize("whole", WAYS)
def test_fields_after_the_recipients_are_read(whole: int) -> None:
    text = '{"recipients": ["x@y.test", {"to": "z@w.test", "vars": {"name": "Z"}}], "from": "a@b.test", "text": "t", "priority": "transactional"}'
    spec, count, recipients = stream_job(text, whole)
    assert (spec.sender, spec.priority, count) == ("a@b.test", "transactional", 2)
    assert [r.to for r in recipients] == ["x@y.test", "z@w.test"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"from": "a@b.test", "text": "x", "recipients": [1,]}', "line 1 column"),
        ('{"from": "a@b.test", "text": "x", "recipients": ["a@b.test"]} trailing', "extra data"),
        ('{"from": "a@b.test", "text": "x"}', "recipients"),
        ('{"from": "a@b.test", "text": "x", "recipients": []}', "at least one recipient"),
        ('{"from": "a@b.test", "text": "x", "recipients": [NaN]}', "NaN"),
        ('{"text": "x", "recipients": ["a@b.test"]}', "from"),
        ("[]", "expected '{'"),
        ('{"from": "a@b.test",\n "text": "x",\n "recipients": ["a@b.test" "c@d.test"]}', "line 3"),
    ],
)
@pytest.mark.parametrize("whole", WAYS)
def test_errors_are_clear(text: str, message: str, whole: int) -> None:
    with pytest.raises(InputError) as info:
        _, _, recipients = stream_job(text, whole)
        list(recipients)
    assert message in str(info.value)


@pytest.mark.parametrize("whole", WAYS)
def test_bad_recipient_is_named_when_reached(whole: int) -> None:
    _, count, recipients = stream_job(json.dumps({**BASE, "recipients": ["ok@a.test", "ok@b.test", "bad"]}), whole)
    assert count == 3
    with pytest.raises(InputError) as info:
        list(recipients)
    assert info.value.field == "recipients[2]"


def test_invalid_utf8() -> None:
    with pytest.raises(InputError, match="UTF-8"):
        stream_job(b'{"from": "a@b.test", "text": "\xff", "recipients": ["a@b.test"]}')


emails = st.from_regex(r"[a-z]{1,8}@[a-z]{1,8}\.test", fullmatch=True)
people = st.one_of(emails, st.fixed_dictionaries({"to": emails, "vars": st.dictionaries(
    st.from_regex(r"[a-z]{1,5}", fullmatch=True), st.text(max_size=10) | st.integers(), max_size=3)}))


@given(st.lists(people, min_size=1, max_size=20), st.sampled_from([0, 2, None]), st.sampled_from(WAYS))
def test_same_result_as_loading_the_whole_document(recipients: list[object], indent: int | None, whole: int) -> None:
    text = json.dumps({**BASE, "recipients": recipients}, indent=indent)
    spec, count, streamed = stream_job(text, whole)
    whole_spec, whole = load_job(text)
    assert spec == whole_spec and count == len(whole) and list(streamed) == whole
