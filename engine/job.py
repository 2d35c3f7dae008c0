"""The job model: a submitted job's JSON validated into a ``JobSpec`` and ``Recipient`` values.

Everything is checked at submit time, so that a worker never meets an input it cannot send
and a bad job enqueues nothing. Every refusal is an ``InputError`` whose ``field`` names the
place (``subject``, ``headers.X-Tag``, ``recipients[3].to``, ``recipients[3].vars.name``).

Choices worth knowing:

* duplicate recipients are kept and each gets its own message: de-duplicating millions of
  recipients would need a set of them all in the submitting process, and a caller that sends
  the same address twice may mean it; de-duplicate upstream if you must;
* a var that a header or the subject uses must not contain CR, LF or NUL (header injection);
  vars used only in bodies may (line breaks become CRLF, the part is encoded as needed);
* var values that are numbers or booleans become strings (``true``/``false`` as in JSON),
  null becomes ""; nested values and non-finite numbers are refused;
* headers bulkmail writes itself cannot be given (From, Date, Message-ID, MIME-Version,
  Content-*), nor Bcc (it would show every recipient the list); ``To`` may be given, and is
  then a fixed (or templated) value instead of the recipient's address.

``parse_job`` and ``parse_recipient`` are separate so that the queue can stream recipients
one at a time; ``load_job`` is the all-in-memory convenience.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from engine.address import normalise_address, parse_address
from engine.errors import InputError
from engine.headers import check_name, check_value
from engine.rawmessage import check_raw_message
from engine.template import ADDRESS_NAMES, placeholder_names

__all__ = [
    "Priority",
    "Recipient",
    "JobSpec",
    "parse_job",
    "parse_recipient",
    "load_job",
    "RESERVED_HEADERS",
]

Priority = Literal["bulk", "transactional"]
PRIORITIES: tuple[str, ...] = ("bulk", "transactional")
RECORD_VERSION = 1
RESERVED_HEADERS = frozenset({"from", "date", "message-id", "mime-version", "bcc"})
JOB_FIELDS = frozenset(
    {"id", "from", "subject", "text", "html", "headers", "message", "recipients", "priority", "max_age"}
)
_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_CR_LF_NUL = re.compile(r"[\r\n\x00]")


@dataclass(frozen=True, slots=True)
class Recipient:
    to: str  # normalised "local@ascii-domain"
    domain: str  # ASCII domain, the routing key
    vars: dict[str, str] | None  # None when the recipient has no vars


@dataclass(frozen=True, slots=True)
class JobSpec:
    id: str | None
    sender: str
    subject: str | None
    text: str | None
    html: str | None
    headers: tuple[tuple[str, str], ...]
    message: bytes | None
    priority: Priority = "bulk"
    max_age: float | None = None
    # Derived: the var names that reach a header (subject or custom headers). parse_recipient
    # refuses CR/LF/NUL in exactly these.
    header_vars: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names: set[str] = set()
        for text in (self.subject or "", *(value for _, value in self.headers)):
            names |= placeholder_names(text)
        object.__setattr__(self, "header_vars", frozenset(names - ADDRESS_NAMES))

    def to_record(self) -> dict[str, Any]:
        """A msgpack-able mapping; None fields are left out."""
        record: dict[str, Any] = {"v": RECORD_VERSION, "from": self.sender, "priority": self.priority}
        for key, value in (
            ("id", self.id),
            ("subject", self.subject),
            ("text", self.text),
            ("html", self.html),
            ("message", self.message),
            ("max_age", self.max_age),
        ):
            if value is not None:
                record[key] = value
        if self.headers:
            record["headers"] = [[name, value] for name, value in self.headers]
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> JobSpec:
        """Trusts the content (it was validated before it was stored) but not the version."""
        if record.get("v") != RECORD_VERSION:
            raise InputError(f"unsupported job record version {record.get('v')!r}", field="record.v")
        max_age = record.get("max_age")
        return cls(
            id=record.get("id"),
            sender=record["from"],
            subject=record.get("subject"),
            text=record.get("text"),
            html=record.get("html"),
            headers=tuple((str(n), str(v)) for n, v in record.get("headers", ())),
            message=record.get("message"),
            priority=record.get("priority", "bulk"),
            max_age=None if max_age is None else float(max_age),
        )


def load_job(text: str | bytes) -> tuple[JobSpec, list[Recipient]]:
    """JSON text to a validated job and all its recipients (held in memory)."""
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"job is not valid UTF-8: {exc.reason} at byte {exc.start}") from None
    spec, items = parse_job(data)
    return spec, [parse_recipient(item, i, spec) for i, item in enumerate(items)]


def parse_job(data: Any) -> tuple[JobSpec, list[Any]]:
    """Validate everything but the recipients' items; return the raw, non-empty recipients list."""
    if not isinstance(data, Mapping):
        raise InputError(f"a job is a JSON object, not {_kind(data)}")
    unknown = sorted(str(k) for k in data if k not in JOB_FIELDS)
    if unknown:
        raise InputError(f"unknown field (allowed: {', '.join(sorted(JOB_FIELDS))})", field=unknown[0])
    job_id = _optional(data, "id", str)
    if job_id is not None and not _ID.fullmatch(job_id):
        raise InputError("1 to 64 characters from A-Z a-z 0-9 . _ -", field="id")
    if "from" not in data:
        raise InputError("the sender is required", field="from")
    sender = str(parse_address(_required(data, "from", str), field="from"))
    recipients = data.get("recipients")
    if not isinstance(recipients, list):
        raise InputError(f"must be a list of addresses, not {_kind(recipients)}", field="recipients")
    if not recipients:
        raise InputError("a job needs at least one recipient", field="recipients")
    priority = data.get("priority", "bulk")
    if priority not in PRIORITIES:
        raise InputError(f"must be one of {', '.join(PRIORITIES)}", field="priority")
    max_age = data.get("max_age")
    if max_age is not None:
        if type(max_age) not in (int, float) or not math.isfinite(max_age) or max_age <= 0:
            raise InputError("must be a positive number of seconds", field="max_age")
        max_age = float(max_age)
    subject = _optional(data, "subject", str)
    text = _optional(data, "text", str)
    html = _optional(data, "html", str)
    headers = _parse_headers(data.get("headers"))
    message = _optional(data, "message", str)
    raw: bytes | None = None
    if message is not None:
        for other in ("subject", "text", "html", "headers"):
            if data.get(other) is not None:
                raise InputError(f"cannot be combined with '{other}' (the message is sent as is)", field="message")
        raw = _utf8(message, "message")
        check_raw_message(raw, field="message")
    elif text is None and html is None:
        raise InputError("a job needs 'message', or 'text' and/or 'html'", field="text")
    if subject is not None:
        check_value(subject, "subject")
        _utf8(subject, "subject")
    for name, value in (("text", text), ("html", html)):
        if value is not None:
            if "\x00" in value:
                raise InputError("NUL characters are not allowed in a message body", field=name)
            _utf8(value, name)
    spec = JobSpec(job_id, sender, subject, text, html, headers, raw, priority, max_age)
    return spec, recipients


def parse_recipient(item: Any, index: int, spec: JobSpec) -> Recipient:
    """One recipient: ``"a@x"`` or ``{"to": "a@x", "vars": {...}}``. About 1 us for a string."""
    if type(item) is str:
        try:
            to, domain = normalise_address(item)
        except InputError as exc:
            raise InputError(_bare(exc), field=f"recipients[{index}]") from None
        return Recipient(to, domain, None)
    if type(item) is not dict and not isinstance(item, Mapping):  # the ABC check costs 0.4 us: JSON gives dicts
        raise InputError(f"a recipient is an address or an object, not {_kind(item)}", field=f"recipients[{index}]")
    for key in item:
        if key != "to" and key != "vars":
            raise InputError("unknown field (allowed: to, vars)", field=f"recipients[{index}].{key}")
    address = item.get("to")
    if type(address) is not str:
        raise InputError(f"must be an address string, not {_kind(address)}", field=f"recipients[{index}].to")
    try:
        to, domain = normalise_address(address)
    except InputError as exc:
        raise InputError(_bare(exc), field=f"recipients[{index}].to") from None
    raw_vars = item.get("vars")
    if raw_vars is None:
        return Recipient(to, domain, None)
    if type(raw_vars) is not dict and not isinstance(raw_vars, Mapping):
        raise InputError(f"must be an object, not {_kind(raw_vars)}", field=f"recipients[{index}].vars")
    values = dict(raw_vars)
    for key, value in values.items():
        if type(value) is not str or type(key) is not str:
            values[key] = _var_value(value, index, key)  # same keys: safe while iterating
        elif not value.isascii():
            _utf8(value, f"recipients[{index}].vars.{key}")
    for name in spec.header_vars:
        value = values.get(name)
        if value and _CR_LF_NUL.search(value):
            raise InputError(
                "used in a header: CR, LF and NUL are not allowed", field=f"recipients[{index}].vars.{name}"
            )
    return Recipient(to, domain, values or None)


def _var_value(value: Any, index: int, key: Any) -> str:
    if type(key) is not str:
        raise InputError("var names must be strings", field=f"recipients[{index}].vars")
    kind = type(value)
    if kind is str:
        return value
    if value is None:
        return ""
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if kind is float and math.isfinite(value):
        return repr(value)
    what = "non-finite number" if kind is float else _kind(value)
    raise InputError(f"must be a string, number, boolean or null, not {what}", field=f"recipients[{index}].vars.{key}")


def _parse_headers(headers: Any) -> tuple[tuple[str, str], ...]:
    if headers is None:
        return ()
    if not isinstance(headers, Mapping):
        raise InputError(f"must be an object of name -> value, not {_kind(headers)}", field="headers")
    result: list[tuple[str, str]] = []
    seen_to = False
    for name, value in headers.items():
        where = f"headers.{name}"
        if type(name) is not str:
            raise InputError("header names must be strings", field="headers")
        check_name(name, where)
        lower = name.lower()
        if lower in RESERVED_HEADERS or lower.startswith("content-"):
            raise InputError("bulkmail sets this header itself (Bcc is never allowed)", field=where)
        if lower == "to":
            if seen_to:
                raise InputError("only one To header", field=where)
            seen_to = True
        if type(value) is not str:
            raise InputError(f"must be a string, not {_kind(value)}", field=where)
        check_value(value, where)
        _utf8(value, where)
        result.append((name, value))
    return tuple(result)


def _optional(data: Mapping[str, Any], key: str, kind: type) -> Any:
    value = data.get(key)
    if value is not None and type(value) is not kind:
        raise InputError(f"must be a {kind.__name__}, not {_kind(value)}", field=key)
    return value


def _required(data: Mapping[str, Any], key: str, kind: type) -> Any:
    value = _optional(data, key, kind)
    if value is None:
        raise InputError("is required", field=key)
    return value


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)


def _utf8(text: str, field: str) -> bytes:
    """JSON allows lone surrogates ("\\ud800"); they have no UTF-8 form and could not be sent."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(f"invalid character at position {exc.start} (a lone surrogate)", field=field) from None


def _bare(exc: InputError) -> str:
    """The message of an InputError without its field prefix."""
    text = str(exc)
    return text[len(exc.field) + 2 :] if exc.field else text


def _refuse_constant(name: str) -> Any:
    raise InputError(f"{name} is not valid JSON")
