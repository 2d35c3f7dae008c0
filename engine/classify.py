"""Turn what happened to a recipient (a reply, a DNS answer, a broken session)
into its status. The bounce issue refines this with categories and fault."""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import BulkmailError, DnsError, DnsPermanent, SmtpTimeout, TlsError
from engine.outcome import BOUNCED, DEFERRED, DELIVERED
from engine.smtp.replies import Reply


@dataclass(frozen=True, slots=True)
class Verdict:
    status: str  # delivered | deferred | bounced
    code: int
    enhanced: str
    text: str


def from_reply(reply: Reply, delivered: bool) -> Verdict:
    if delivered:
        status = DELIVERED
    elif reply.is_permanent:
        status = BOUNCED
    else:
        status = DEFERRED  # 4xx, or a positive reply to something that still did not deliver
    return Verdict(status, reply.code, str(reply.enhanced) if reply.enhanced else "", reply.text)


def from_error(error: BaseException) -> Verdict:
    """A failure without a (relevant) SMTP reply: DNS, network, TLS, protocol."""
    if isinstance(error, DnsError):
        status = BOUNCED if isinstance(error, DnsPermanent) else DEFERRED
        return Verdict(status, 0, error.enhanced or ("5.1.2" if status == BOUNCED else "4.4.3"), str(error))
    if isinstance(error, SmtpTimeout):
        return Verdict(DEFERRED, 0, "4.4.2", str(error))
    if isinstance(error, TlsError):
        return Verdict(DEFERRED, 0, "4.7.5", str(error))
    if isinstance(error, BulkmailError | OSError):
        return Verdict(DEFERRED, 0, "4.4.1", str(error) or type(error).__name__)
    return Verdict(DEFERRED, 0, "4.0.0", f"{type(error).__name__}: {error}")


def is_too_many_recipients(reply: Reply) -> bool:
    """452 (or 4.5.3) to RCPT means 'send the rest in another transaction', not a failure."""
    return reply.command == "RCPT" and (
        (reply.enhanced is not None and str(reply.enhanced) == "4.5.3")
        or (reply.code == 452 and "too many recipients" in reply.text.lower())
    )
