"""Asynchronous bounces (RFC 3464 DSNs and the non-standard zoo) -> per-recipient results.

``parse_message(data)`` takes the raw bytes of anything that arrived at the
bounce address and says what it is: a ``bounce`` (one ``BounceRecord`` per
failed or delayed recipient), a ``complaint`` (RFC 5965, ``engine.arf``), an
``autoreply`` (vacation, RFC 3834: not a bounce), ``delivered`` (a success
DSN), or ``none``. It never raises: input it cannot make sense of gives
``kind="none"`` and ``error`` says why.

Where the recipients come from, in order: the delivery-status fields
(``Final-Recipient``...), Exim's ``X-Failed-Recipients`` header, the
addresses the human-readable text names (``engine.bounce_text``), and last the
``To:`` of the returned message. Each recipient's diagnostic is its
``Diagnostic-Code``, else the text near its address, else the whole report; the
category and fault come from ``engine.classify`` on that diagnostic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Final

from engine.arf import Complaint, complaint_from_view
from engine.bounce_mime import Fields, MailView, ParseLimits, parse_fields, view_message, view_of
from engine.bounce_rules import EXPIRED, FAULT_OF, NETWORK, RECIPIENT
from engine.bounce_text import (
    Mention,
    bare_names,
    header_addresses,
    inline_header,
    mentions,
    split_report,
)
from engine.classify import Classification, category_from_text, classify

TRACE_HEADER: Final = "x-bulkmail-trace"

# Failures only: a 2xx in a transcript (a greeting, "250 ok") is never the diagnostic.
_ENHANCED = re.compile(r"(?<![\d.])([45])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_CODE = re.compile(r"(?<![\d.#:/-])([45][0-5]\d)(?=[ ,;)-]|$)", re.MULTILINE)
_PHASE = re.compile(
    r"(?:in reply to|after|while sending|>>>|\[)\s*(?:the\s+)?(rcpt[ _]to|mail[ _]from|end of data|data|"
    r"helo|ehlo|starttls|initial connection|connect|\.)|(my name|sender) was rejected",
    re.IGNORECASE,
)
_PHASES: Final = {"rcpt": "RCPT", "mail": "MAIL", "end": ".", "data": "DATA", "helo": "EHLO", "ehlo": "EHLO",
                  "starttls": "STARTTLS", "initial": "CONNECT", "connect": "CONNECT", ".": ".",
                  "my": "EHLO", "sender": "MAIL"}  # fmt: skip
# Only when no code says it: words that make a report a warning, or final.
_TEMPORARY = re.compile(
    r"\bdelayed\b|will (?:be )?retried|will (?:keep|continue to) (?:try|retry|attempt)|attempts will continue|"
    r"not yet been delivered|warning message only|still (?:trying|retrying)|\(delay\)|is deferred|"
    r"has been deferred|only a temporary|retried for|warning: (?:message|could not)",
    re.IGNORECASE,
)
_FINAL = re.compile(
    r"permanent (?:error|failure)|permanently|giving up|gave up|not going to try again|unrecoverable",
    re.IGNORECASE,
)
_DAEMON = re.compile(
    r"mailer-?daemon|postmaster|mail ?delivery|mail administrator|mdaemon|delivery subsystem|mail system|"
    r"maildaemon|post_master|mail-?router|smtp gateway|mail server|nobody@|bounce|notification",
    re.IGNORECASE,
)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|delivery (?:status|fail|notif|problem|report|error)|failure|returned mail|returned to sender|"
    r"mail delivery|could not be delivered|non-?deliver|not delivered|warning: (?:message|could)|delayed mail|"
    r"\bbounce|rejected|\bfailed|delivery error|nondeliverable|unzustellbar|non remis|not (?:be )?sent",
    re.IGNORECASE,
)
_FAILURE_TEXT = re.compile(
    r"(?:could not|couldn't|cannot|can't|unable to|was not|were not) (?:be )?deliver|undeliverable|"
    r"delivery (?:has |to the following recipients? )?failed|permanent (?:error|failure)|"
    r"(?:remote host|server) said:|the following address(?:es)? (?:had|failed)|\bno such user\b|"
    r"\buser unknown\b|invalid (?:user|recipient) address|returned mail",
    re.IGNORECASE,
)
_AUTOREPLY_SUBJECT = re.compile(
    r"^(?:auto(?:matic)?[ -]?(?:reply|response|antwort)|out of (?:the )?office|vacation|away|autoreply|"
    r"abwesenheit|absence|r[eé]ponse automatique)",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class BounceRecord:
    recipient: str
    action: str  # failed | delayed
    status: str  # enhanced status; "5.0.0"/"4.0.0" when only the class is known
    code: int  # SMTP reply code quoted by the reporter, 0 when none
    text: str  # the diagnostic
    category: str
    fault: str
    permanent: bool
    phase: str = ""  # what the remote server was answering (RCPT, MAIL, DATA, ...)
    remote_mta: str = ""

    @property
    def suppress(self) -> bool:
        return self.action == "failed" and self.permanent and self.fault == RECIPIENT


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    kind: str  # bounce | complaint | autoreply | delivered | none
    records: tuple[BounceRecord, ...] = ()
    complaint: Complaint | None = None
    trace: str = ""  # our X-Bulkmail-Trace header, when the original came back with it
    original_to: tuple[str, ...] = ()
    error: str = ""


# A final report whose cause is that no server could be reached (no reply code):
# the reporter retried until its queue lifetime ran out.
_UNREACHED = re.compile(r"timed out|connection refused|not reachable|unreachable|connect to", re.IGNORECASE)
_NOT_FAILED: Final = frozenset({"delivered", "relayed", "expanded", "deliverable"})
_NAME_AT: Final = re.compile(
    r"\btry (?:e-?mailing|sending|writing)(?: it)?(?: to)? NAME@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)", re.IGNORECASE
)
_INLINE_DSN = re.compile(r"^(?:final|original)-recipient\s*:", re.IGNORECASE | re.MULTILINE)
_DSN_FIELDS: Final = frozenset({"final-recipient", "original-recipient", "action", "status", "reporting-mta"})


def diagnostic(text: str) -> tuple[int, str, str, int]:
    """(reply code, enhanced code, phase, where the reply starts) quoted in a
    diagnostic; 0/""/""/-1 when absent."""
    enhanced = _ENHANCED.search(text)
    code = _CODE.search(text)
    phase = _PHASE.search(text)
    name = ""
    if phase is not None:
        word = (phase.group(1) or phase.group(2)).lower().replace("_", " ").split(" ")[0]
        name = _PHASES.get(word, "")
    starts = [m.start() for m in (code, enhanced) if m is not None]
    return (
        int(code.group(1)) if code else 0,
        ".".join(enhanced.groups()) if enhanced else "",
        name,
        min(starts) if starts else -1,
    )


def _judge(code: int, status: str, text: str, at: int, phase: str) -> Classification:
    """Classify the quoted reply first: the words around it (a preamble, qmail's
    "I'm not going to try again") say less about the cause."""
    whole = classify(code, status, text, phase)
    if at > 0:
        focused = classify(code, status, text[at : at + 1000], phase)
        if focused.basis == "strong" or (focused.basis != "code" and whole.basis != "strong"):
            return focused
    return whole


def _recipient(fields: dict[str, str]) -> str:
    """The address we sent to: Original-Recipient when it is one (Final-Recipient
    may be an alias it expanded to, or an X.400 name), else Final-Recipient."""
    for name in ("original-recipient", "final-recipient"):
        found = header_addresses(fields.get(name, "").split(";", 1)[-1])
        if found:
            return found[0]
    return ""


def _status_of(value: str) -> str:
    m = _ENHANCED.search(value)
    return ".".join(m.groups()) if m else ""


def _record(
    recipient: str, action: str, status: str, texts: list[str], remote_mta: str = "", hint: str = ""
) -> BounceRecord:
    """Classify one recipient from the first of ``texts`` that quotes a code or says something."""
    code, enhanced, phase, at = 0, "", "", -1
    chosen = ""
    for raw in texts:
        text = " ".join(raw.split())
        if not text:
            continue
        code, enhanced, phase, at = diagnostic(text)
        chosen = text
        if code or enhanced or category_from_text(text)[0]:
            break
    status = status or enhanced
    klass = int(status[0]) if status else (code // 100 if code else 0)
    if status and enhanced and status.endswith(".0.0") and enhanced[0] == status[0]:
        status = enhanced
    if klass == 4 and action == "failed" and code // 100 == 5:
        klass, status = 5, (enhanced if enhanced.startswith("5") else "5.0.0")  # the remote's own 5xx
    if not klass:
        klass = _class_from_words(action, " ".join(texts) + "\n" + hint)
    status = status or f"{klass}.0.0"
    if not action:
        action = "delayed" if klass == 4 else "failed"
    c = _judge(code if code // 100 == klass else klass * 100, status, chosen, at, phase)
    if action == "failed" and not code and c.category == NETWORK and _UNREACHED.search(chosen):
        c = replace(c, category=EXPIRED, fault=FAULT_OF[EXPIRED])  # no server answered until it gave up
    return BounceRecord(recipient, action, status, code, chosen[:1000], c.category, c.fault, c.permanent, phase, remote_mta)


def _class_from_words(action: str, whole: str) -> int:
    """4 or 5 for a report that quotes no code."""
    if action == "delayed" or (_TEMPORARY.search(whole) and not _FINAL.search(whole)):
        return 4
    return 5


def _dsn_recipients(groups: list[Fields]) -> list[dict[str, str]]:
    """Per-recipient field sets; the per-message fields end up in the first (harmless)."""
    current: dict[str, str] = {}
    recipients: list[dict[str, str]] = []
    for group in groups:
        if "final-recipient" in current or "original-recipient" in current:
            recipients.append(current)  # RFC 3464: one group per recipient
            current = {}
        for name, value in group:
            if name in ("final-recipient", "original-recipient", "action") and name in current:
                recipients.append(current)  # several recipients run together in one group
                current = {}
            current.setdefault(name, value)
    recipients.append(current)
    return [r for r in recipients if "final-recipient" in r or "original-recipient" in r or "action" in r]


def _groups_to_records(
    groups: list[Fields], found: list[Mention], report: str, to: list[str], hint: str
) -> list[BounceRecord]:
    records = []
    near = {m.address.lower(): m.snippet for m in found}
    spare = [m.address for m in found] + to  # for a recipient field that holds no address
    for n, fields in enumerate(_dsn_recipients(groups)):
        address = _recipient(fields) or (spare[n] if n < len(spare) else "")
        action = fields.get("action", "").lower().split(" ")[0].strip("();")
        action = {"failure": "failed", "fail": "failed", "delay": "delayed"}.get(action, action)
        status = _status_of(fields.get("status", ""))
        if not address or action in _NOT_FAILED or fields.get("status", "").strip().startswith("2"):
            continue
        diag = fields.get("diagnostic-code", "").split(";", 1)[-1]
        comment = fields.get("status", "").partition("(")[2]  # "4.0.0 (host name lookup failure)"
        snippet = near.get(address.lower(), "")
        mta = fields.get("remote-mta", "").split(";", 1)[-1].strip()
        records.append(_record(address, action, status, [diag, comment, snippet, report], mta, hint))
    return records


def _exclusions(view: MailView) -> set[str]:
    """Addresses that are the sender's or the reporter's, never the failed recipient."""
    excluded: set[str] = set()
    for name in ("to", "from", "return-path", "sender", "reply-to", "cc"):
        excluded.update(a.lower() for a in header_addresses(view.header(name)))
    for name in ("from", "return-path", "sender", "reply-to"):
        excluded.update(a.lower() for a in header_addresses(view.original_header(name)))
    return excluded


def _is_bounce_like(view: MailView, report: str) -> bool:
    if view.status_groups or view.header("x-failed-recipients"):
        return True
    sender = view.header("from") + " " + view.header("return-path")
    if _DAEMON.search(sender) or _BOUNCE_SUBJECT.search(view.header("subject")):
        return True
    return _FAILURE_TEXT.search(report[:20000]) is not None


def _is_autoreply(view: MailView) -> bool:
    auto = view.header("auto-submitted").lower()
    return bool(
        auto.startswith("auto-replied")
        or view.header("x-autoreply")
        or view.header("x-autorespond")
        or view.header("x-auto-response-suppress")
        or view.header("precedence").lower() == "auto_reply"
        or _AUTOREPLY_SUBJECT.search(view.header("subject"))
    )


def _text_records(view: MailView, report: str, rest: str, found: list[Mention]) -> list[BounceRecord]:
    hint = view.header("subject")
    failed = header_addresses(view.header("x-failed-recipients"))
    if failed:
        near = {m.address.lower(): m.snippet for m in found}
        return [_record(a, "", "", [near.get(a.lower(), ""), report], hint=hint) for a in failed]
    named = _named(view, rest, report)  # a list of bare names beats addresses in the prose
    if named:
        return named
    if found:
        return [_record(m.address, "", "", [m.snippet, report], hint=hint) for m in found]
    to = view.original_header("to") or inline_header(rest, "to")
    return [_record(a, "", "", [report], hint=hint) for a in header_addresses(to)[:1]]


def _named(view: MailView, rest: str, report: str) -> list[BounceRecord]:
    """Recipients listed by name only: the returned message's address with that
    local part, else the name at the reporter's own domain."""
    known = header_addresses(rest) + [a for _, v in view.original for a in header_addresses(v)]
    reporter = header_addresses(view.header("from"))
    domain = reporter[0].rsplit("@", 1)[1] if reporter else ""
    # a reporter that says where the name lives now ("try emailing to NAME@cs.example.edu
    # instead") names a second address the recipient is known by
    moved = [d.lower() for d in _NAME_AT.findall(report) if d.lower() != domain.lower()]
    records = []
    for name, line in bare_names(report):
        same = [a for a in known if a.rsplit("@", 1)[0].lower() == name.lower()]
        address = same[0] if same else (f"{name}@{domain}" if domain else "")
        for candidate in dict.fromkeys(([address] if address else []) + [f"{name}@{d}" for d in moved]):
            records.append(_record(candidate, "", "", [line, report], hint=view.header("subject")))
    return records


def _inline_groups(text: str) -> list[Fields]:
    """Delivery-status fields written into the text (a DSN whose MIME is broken)."""
    if not _INLINE_DSN.search(text):
        return []
    return [g for g in parse_fields(text) if any(name in _DSN_FIELDS for name, _ in g)]


def records_of(view: MailView, report: str, rest: str) -> list[BounceRecord]:
    found = mentions(report, _exclusions(view))
    if not view.status_groups:
        view.status_groups = _inline_groups(report + "\n" + rest)
    if view.status_groups:
        to = header_addresses(view.original_header("to") or inline_header(rest, "to"))
        records = _groups_to_records(view.status_groups, found, report, to, view.header("subject"))
        if records or any(k == "action" for g in view.status_groups for k, _ in g):
            return records
    return _text_records(view, report, rest, found)


def _parse(view: MailView, limits: ParseLimits, unwrap: bool = True) -> ParsedMessage:
    trace = view.original_header(TRACE_HEADER)
    original_to = tuple(header_addresses(view.original_header("to")))
    complaint = complaint_from_view(view)
    if complaint is not None:
        return ParsedMessage("complaint", (), complaint, trace or complaint.trace, original_to)
    report, rest = split_report("\n".join(view.texts))
    if unwrap and view.inner is not None and not view.status_groups and (
        not report.strip() or view.inner.get_content_type() == "multipart/report"
    ):
        inner = _parse(view_of(view.inner, limits), limits, False)  # a report forwarded as an attachment
        if inner.kind in ("bounce", "complaint"):
            return inner
    if not _is_bounce_like(view, report):
        kind = "autoreply" if _is_autoreply(view) else "none"
        return ParsedMessage(kind, (), None, trace, original_to)
    records = records_of(view, report, rest)
    if records:
        return ParsedMessage("bounce", tuple(records), None, trace, original_to)
    kind = "delivered" if view.status_groups else ("autoreply" if _is_autoreply(view) else "none")
    return ParsedMessage(kind, (), None, trace, original_to)


def parse_message(data: bytes, limits: ParseLimits | None = None) -> ParsedMessage:
    """Never raises: whatever arrives at the bounce address gives a ParsedMessage."""
    try:
        limits = limits or ParseLimits()
        return _parse(view_message(bytes(data), limits), limits)
    except Exception as exc:  # noqa: BLE001 - hostile input must not stop the listener
        return ParsedMessage("none", error=f"{type(exc).__name__}: {exc}"[:200])
