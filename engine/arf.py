"""Complaints: RFC 5965 Abuse Reporting Format (feedback loop) reports.

A report is ``multipart/report; report-type=feedback-report`` with a
human-readable part, a ``message/feedback-report`` part of fields, and the
complained-about message (``message/rfc822``, or only its headers in
``text/rfc822-headers``). Many providers redact the recipient; ours is then
found through the trace header bulkmail adds to every message
(``engine.verp.trace_header``), which comes back in the returned headers.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.bounce_mime import MailView, first
from engine.bounce_text import header_addresses

_REDACTED = ("redacted", "undisclosed", "removed", "xxx")


@dataclass(frozen=True, slots=True)
class Complaint:
    feedback_type: str  # abuse | fraud | virus | opt-out | not-spam | other | ...
    recipients: tuple[str, ...]  # who complained, when the report says (often redacted)
    original_mail_from: str = ""
    reported_domain: str = ""
    source_ip: str = ""
    user_agent: str = ""
    arrival_date: str = ""
    message_id: str = ""
    trace: str = ""  # X-Bulkmail-Trace of the complained-about message


def _all(fields: tuple[tuple[str, str], ...], name: str) -> list[str]:
    return [value for key, value in fields if key == name]


def _usable(address: str) -> bool:
    local = address.rsplit("@", 1)[0].lower()
    return not any(word in local for word in _REDACTED)


def complaint_from_view(view: MailView) -> Complaint | None:
    """The complaint in ``view``, or None when it is not a feedback report."""
    fields = view.feedback
    if not fields and "feedback-report" not in view.header("content-type").lower():
        return None
    found: list[str] = []
    for name in ("original-rcpt-to", "removal-recipient"):
        for value in _all(fields, name):
            found.extend(header_addresses(value))
    if not found:
        found = header_addresses(view.original_header("to"))
    recipients = tuple(dict.fromkeys(a for a in found if _usable(a)))
    mail_from = header_addresses(first(fields, "original-mail-from"))
    kind = first(fields, "feedback-type").lower().split()
    return Complaint(
        feedback_type=kind[0] if kind else "abuse",
        recipients=recipients,
        original_mail_from=mail_from[0] if mail_from else "",
        reported_domain=first(fields, "reported-domain"),
        source_ip=first(fields, "source-ip"),
        user_agent=first(fields, "user-agent"),
        arrival_date=first(fields, "arrival-date") or first(fields, "received-date"),
        message_id=view.original_header("message-id"),
        trace=view.original_header("x-bulkmail-trace"),
    )
