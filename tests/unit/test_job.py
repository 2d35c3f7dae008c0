"""engine.job: every refusal names its field, nothing unsafe gets through, records round-trip."""

from __future__ import annotations

import json
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.errors import InputError
from engine.job import JobSpec, Recipient, load_job, parse_job, parse_recipient


def job(**fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "from": "news@example.com",
        "subject": "Hello {{name}}",
        "text": "Dear {{name}},\nthis is for {{email}}.\n",
        "recipients": ["a@example.org"],
    }
    data.update(fields)
    return {k: v for k, v in data.items() if v is not _DROP}


_DROP = object()


def refused(data: Any, field: str | None, fragment: str = "") -> InputError:
    with pytest.raises(InputError) as info:
        if isinstance(data, (str, bytes)):
            load_job(data)
        else:
            load_job(json.dumps(data))
    assert info.value.field == field, str(info.value)
    assert fragment in str(info.value)
    if field:
        assert str(info.value).startswith(f"{field}: ")
    return info.value


# --- the happy path ------------------------------------------------------------------------


def test_minimal_job() -> None:
    spec, recipients = load_job(json.dumps(job()))
    assert spec == JobSpec(
        id=None,
        sender="news@example.com",
        subject="Hello {{name}}",
        text="Dear {{name}},\nthis is for {{email}}.\n",
        html=None,
        headers=(),
        message=None,
        priority="bulk",
        max_age=None,
    )
    assert spec.header_vars == frozenset({"name"})
    assert recipients == [Recipient("a@example.org", "example.org", None)]


def test_full_job() -> None:
    data = job(
        id="camp-2024.01_a",
        html="<p>Hi {{name}}</p>",
        headers={"Reply-To": "help@example.com", "X-Campaign": "{{campaign}}", "To": "list@example.com"},
        priority="transactional",
        max_age=3600,
        recipients=[
            "A@Example.ORG",
            {"to": "b@bücher.example", "vars": {"name": "Bob", "n": 3, "x": 1.5, "t": True, "f": False, "z": None}},
            {"to": "c@example.org", "vars": {}},
            {"to": "d@example.org", "vars": None},
            {"to": "e@example.org"},
        ],
    )
    spec, recipients = load_job(json.dumps(data).encode())
    assert spec.id == "camp-2024.01_a"
    assert spec.priority == "transactional"
    assert spec.max_age == 3600.0 and isinstance(spec.max_age, float)
    assert spec.headers == (
        ("Reply-To", "help@example.com"),
        ("X-Campaign", "{{campaign}}"),
        ("To", "list@example.com"),
    )
    assert spec.header_vars == frozenset({"name", "campaign"})
    assert recipients[0] == Recipient("A@example.org", "example.org", None)
    assert recipients[1] == Recipient(
        "b@xn--bcher-kva.example",
        "xn--bcher-kva.example",
        {"name": "Bob", "n": "3", "x": "1.5", "t": "true", "f": "false", "z": ""},
    )
    assert [r.vars for r in recipients[2:]] == [None, None, None]


def test_raw_message_job() -> None:
    raw = "From: a@example.com\r\nSubject: é\r\n\r\nbody\r\n"
    spec, _ = load_job(json.dumps(job(subject=_DROP, text=_DROP, message=raw)))
    assert spec.message == raw.encode("utf-8")
    assert spec.subject is spec.text is spec.html is None
    assert spec.header_vars == frozenset()


def test_html_only_and_no_subject() -> None:
    spec, _ = load_job(json.dumps(job(subject=_DROP, text=_DROP, html="<b>x</b>")))
    assert spec.subject is None and spec.text is None and spec.html == "<b>x</b>"


def test_duplicates_are_kept() -> None:
    _, recipients = load_job(json.dumps(job(recipients=["a@x.org", "A@X.ORG", "a@x.org"])))
    assert [r.to for r in recipients] == ["a@x.org", "A@x.org", "a@x.org"]


def test_parse_job_returns_raw_items_for_streaming() -> None:
    items = ["a@x.org", {"to": "b@y.org", "vars": {"name": "B"}}]
    spec, raw = parse_job(job(recipients=items))
    assert raw is not None and raw == items
    assert [parse_recipient(item, i, spec).to for i, item in enumerate(raw)] == ["a@x.org", "b@y.org"]


def test_recipient_vars_are_a_copy() -> None:
    spec, _ = parse_job(job())
    given_vars = {"name": "x"}
    recipient = parse_recipient({"to": "a@x.org", "vars": given_vars}, 0, spec)
    given_vars["name"] = "changed"
    assert recipient.vars == {"name": "x"}


# --- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("{", "invalid JSON at line 1 column 2"),
        ('{"from": NaN}', "NaN is not valid JSON"),
        (b"\xff\xfe{}", ""),
        (b'{"from": "\xe9"}', "not valid UTF-8"),
        ("[]", "a job is a JSON object, not a list"),
        ('"x"', "not a string"),
    ],
)
def test_bad_json(text: str | bytes, fragment: str) -> None:
    refused(text, None, fragment)


@pytest.mark.parametrize(
    ("fields", "field", "fragment"),
    [
        ({"bogus": 1}, "bogus", "unknown field"),
        ({"From": "x@y.com"}, "From", "unknown field"),
        ({"from": _DROP}, "from", "required"),
        ({"from": None}, "from", "required"),
        ({"from": ""}, "from", "empty address"),
        ({"from": 3}, "from", "must be a str, not a number"),
        ({"from": "Alice <a@x.com>"}, "from", "angle brackets"),
        ({"from": "a@x.com\r\nRCPT TO:<v@y.com>"}, "from", "control character"),
        ({"id": "a:b"}, "id", "A-Z"),
        ({"id": ""}, "id", "A-Z"),
        ({"id": "x" * 65}, "id", "A-Z"),
        ({"id": 5}, "id", "must be a str"),
        ({"subject": 5}, "subject", "must be a str, not a number"),
        ({"subject": ["a"]}, "subject", "not a list"),
        ({"subject": "a\r\nBcc: v@x.com"}, "subject", "CR, LF and NUL"),
        ({"subject": "a\nb"}, "subject", "'\\n'"),
        ({"subject": "\ud800"}, "subject", "lone surrogate"),
        ({"text": {"a": 1}}, "text", "not an object"),
        ({"text": "a\x00b"}, "text", "NUL"),
        ({"html": "a\x00b"}, "html", "NUL"),
        ({"text": _DROP}, "text", "'text' and/or 'html'"),
        ({"text": None}, "text", "'text' and/or 'html'"),
        ({"message": "Subject: x\r\n\r\nb"}, "message", "cannot be combined with 'subject'"),
        ({"subject": _DROP, "message": "Subject: x\r\n\r\nb"}, "message", "cannot be combined with 'text'"),
        ({"subject": _DROP, "text": _DROP, "html": "x", "message": "S: x\n\nb"}, "message", "'html'"),
        ({"subject": _DROP, "text": _DROP, "headers": {"X": "y"}, "message": "S: x\n\nb"}, "message", "'headers'"),
        ({"subject": _DROP, "text": _DROP, "message": "no header\n\nbody"}, "message", "line 1 is not a header"),
        ({"subject": _DROP, "text": _DROP, "message": "S: x\n\n" + "a" * 999}, "message", "line 3 is 999 octets"),
        ({"subject": _DROP, "text": _DROP, "message": "S: x\nBcc: a@b.com\n\nb"}, "message", "line 2: a Bcc"),
        ({"subject": _DROP, "text": _DROP, "message": 5}, "message", "must be a str"),
        ({"recipients": _DROP}, "recipients", "must be a list"),
        ({"recipients": "a@x.org"}, "recipients", "must be a list of addresses, not a string"),
        ({"recipients": []}, "recipients", "at least one recipient"),
        ({"priority": "urgent"}, "priority", "bulk, transactional"),
        ({"priority": None}, "priority", "bulk, transactional"),
        ({"max_age": 0}, "max_age", "positive"),
        ({"max_age": -5}, "max_age", "positive"),
        ({"max_age": "60"}, "max_age", "positive"),
        ({"max_age": True}, "max_age", "positive"),
        ({"max_age": 1e309}, None, "Infinity is not valid JSON"),
        ({"headers": ["X-A"]}, "headers", "must be an object"),
        ({"headers": {"X-A": 5}}, "headers.X-A", "must be a string, not a number"),
        ({"headers": {"X A": "v"}}, "headers.X A", "printable ASCII"),
        ({"headers": {"X:A": "v"}}, "headers.X:A", "printable ASCII"),
        ({"headers": {"": "v"}}, "headers.", "printable ASCII"),
        ({"headers": {"Xé": "v"}}, "headers.Xé", "printable ASCII"),
        ({"headers": {"X-A": "v\r\nBcc: x@y.com"}}, "headers.X-A", "CR, LF and NUL"),
        ({"headers": {"X-A": "v\x00"}}, "headers.X-A", "'\\x00'"),
        ({"headers": {"X-A": "v\ndata"}}, "headers.X-A", "'\\n'"),
        ({"headers": {"Bcc": "x@y.com"}}, "headers.Bcc", "Bcc is never allowed"),
        ({"headers": {"bcc": "x@y.com"}}, "headers.bcc", "Bcc"),
        ({"headers": {"From": "x@y.com"}}, "headers.From", "sets this header itself"),
        ({"headers": {"DATE": "x"}}, "headers.DATE", "sets this header itself"),
        ({"headers": {"Message-ID": "<x@y>"}}, "headers.Message-ID", "itself"),
        ({"headers": {"MIME-Version": "1.0"}}, "headers.MIME-Version", "itself"),
        ({"headers": {"Content-Type": "text/html"}}, "headers.Content-Type", "itself"),
        ({"headers": {"Content-Transfer-Encoding": "8bit"}}, "headers.Content-Transfer-Encoding", "itself"),
        ({"headers": {"To": "a@x.com", "to": "b@x.com"}}, "headers.to", "only one To"),
    ],
)
def test_job_refusals_name_the_field(fields: dict[str, Any], field: str | None, fragment: str) -> None:
    refused(job(**fields), field, fragment)


@pytest.mark.parametrize(
    ("item", "field", "fragment"),
    [
        ("bad", "recipients[1]", "missing '@'"),
        ("a@x.org\r\nDATA", "recipients[1]", "control character"),
        ("<a@x.org>", "recipients[1]", "angle brackets"),
        ("a@[127.0.0.1]", "recipients[1]", "address literals"),
        (5, "recipients[1]", "not a number"),
        (None, "recipients[1]", "not null"),
        (["a@x.org"], "recipients[1]", "not a list"),
        ({"to": "a@x.org", "name": "A"}, "recipients[1].name", "unknown field"),
        ({"email": "a@x.org"}, "recipients[1].email", "unknown field"),
        ({"vars": {}}, "recipients[1].to", "must be an address string, not null"),
        ({"to": 5}, "recipients[1].to", "not a number"),
        ({"to": "a b@x.org"}, "recipients[1].to", "quoted"),
        ({"to": "a@x.org", "vars": []}, "recipients[1].vars", "must be an object, not a list"),
        ({"to": "a@x.org", "vars": "x"}, "recipients[1].vars", "not a string"),
        ({"to": "a@x.org", "vars": {"a": [1]}}, "recipients[1].vars.a", "not a list"),
        ({"to": "a@x.org", "vars": {"a": {"b": 1}}}, "recipients[1].vars.a", "not an object"),
        ({"to": "a@x.org", "vars": {"name": "x\r\nBcc: v@y.com"}}, "recipients[1].vars.name", "used in a header"),
        ({"to": "a@x.org", "vars": {"name": "x\n"}}, "recipients[1].vars.name", "used in a header"),
        ({"to": "a@x.org", "vars": {"name": "x\x00"}}, "recipients[1].vars.name", "used in a header"),
        ({"to": "a@x.org", "vars": {"tag": "x\r\ny"}}, "recipients[1].vars.tag", "used in a header"),
        ({"to": "a@x.org", "vars": {"body": "\ud800"}}, "recipients[1].vars.body", "lone surrogate"),
    ],
)
def test_recipient_refusals_name_the_field(item: Any, field: str, fragment: str) -> None:
    data = job(recipients=["ok@x.org", item], headers={"X-Tag": "{{ tag }}"})
    refused(data, field, fragment)


def test_parse_recipient_with_python_values() -> None:
    spec, _ = parse_job(job())
    with pytest.raises(InputError) as info:
        parse_recipient({"to": "a@x.org", "vars": {1: "x"}}, 7, spec)
    assert info.value.field == "recipients[7].vars"
    with pytest.raises(InputError) as info:
        parse_recipient({"to": "a@x.org", "vars": {"v": float("nan")}}, 7, spec)
    assert info.value.field == "recipients[7].vars.v" and "non-finite" in str(info.value)
    with pytest.raises(InputError) as info:
        parse_recipient({"to": "a@x.org", "vars": {"v": b"x"}}, 7, spec)
    assert info.value.field == "recipients[7].vars.v"


def test_address_placeholders_are_not_header_vars() -> None:
    """{{email}} and {{to}} always render the address, so vars of those names never reach a header."""
    spec, _ = parse_job(job(subject="{{email}} {{to}} {{name}}"))
    assert spec.header_vars == frozenset({"name"})
    recipient = parse_recipient({"to": "a@x.org", "vars": {"email": "x\ny"}}, 0, spec)
    assert recipient.vars == {"email": "x\ny"}


def test_body_only_vars_may_hold_line_breaks() -> None:
    spec, _ = parse_job(job(text="{{body}}"))
    recipient = parse_recipient({"to": "a@x.org", "vars": {"body": "line1\nline2\r\n", "name": "ok"}}, 0, spec)
    assert recipient.vars == {"body": "line1\nline2\r\n", "name": "ok"}


def test_nothing_returned_when_a_late_recipient_is_bad() -> None:
    """load_job is all or nothing: the caller gets an exception, not a partial list."""
    refused(job(recipients=["a@x.org"] * 1000 + ["broken"]), "recipients[1000]", "missing '@'")


@given(st.text(), st.sampled_from(["\r", "\n", "\x00"]), st.text())
def test_header_injection_through_vars_always_refused(before: str, bad: str, after: str) -> None:
    spec, _ = parse_job(job())
    with pytest.raises(InputError) as info:
        parse_recipient({"to": "a@x.org", "vars": {"name": before + bad + after}}, 0, spec)
    assert info.value.field == "recipients[0].vars.name"


# --- records -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"id": "j1", "html": "<p>{{name}}</p>", "headers": {"X-A": "1", "To": "{{name}} <l@x.com>"}},
        {"priority": "transactional", "max_age": 12.5},
        {"subject": _DROP, "text": _DROP, "message": "Subject: ü\r\n\r\nbody\r\n"},
    ],
)
def test_record_round_trip_through_msgpack(fields: dict[str, Any]) -> None:
    spec, _ = parse_job(job(**fields))
    record = spec.to_record()
    _check_plain(record)
    back = JobSpec.from_record(msgpack.unpackb(msgpack.packb(record), raw=False))
    assert back == spec
    assert back.header_vars == spec.header_vars


def _check_plain(value: Any) -> None:
    assert type(value) in (str, bytes, int, float, list, dict), value
    if isinstance(value, dict):
        for key, item in value.items():
            assert type(key) is str
            _check_plain(item)
    elif isinstance(value, list):
        for item in value:
            _check_plain(item)


def test_record_version_checked() -> None:
    spec, _ = parse_job(job())
    record = spec.to_record()
    record["v"] = 99
    with pytest.raises(InputError) as info:
        JobSpec.from_record(record)
    assert info.value.field == "record.v"
