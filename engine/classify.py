"""Turn what happened to a recipient (a reply, a DNS answer, a broken session)
into its status, a category and who is at fault.

Theory of operation:

* **Permanence comes from the code**, never from the text: a 5xx reply (or a
  5.x.x enhanced code when there is no reply code) is permanent, anything else
  is temporary. Google sends the same words with 4.7.x and 5.7.x.
* **The category comes from the text first** when it is clear (provider error
  codes such as Cox ``CXBL``, then provider fragments paired with their codes,
  then our generic patterns in ``engine.bounce_patterns``), then from the RFC
  3463 enhanced code, then from the reply code and the phase.
* **The phase matters.** A 5xx to MAIL is about the sender, never about the
  recipient; a refusal at the greeting or EHLO is about the connecting IP; an
  unexplained 5xx to the end of data is about the message.
* **Fault** follows the category (``engine.bounce_rules.FAULT_OF``), and only a
  permanent, recipient-fault failure may suppress the address; rate limiting and
  reputation refusals set ``throttle`` for the adaptive throttle instead.

Cheap on the failure path: the enhanced-code and reply-code tables are dicts
built at import; provider fragments are looked up through an index of their
rarest word, so a reply is scanned by a handful of precompiled patterns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from engine.bounce_patterns import STRONG, WEAK
from engine.bounce_rules import (
    BAD_DOMAIN,
    BAD_MAILBOX,
    CONTENT,
    FAULT_OF,
    MAILBOX_FULL,
    MESSAGE_TOO_BIG,
    NETWORK,
    ORANGE_CODES,
    ORANGE_PATTERN,
    OTHER,
    POLICY,
    PROVIDER_CODE_PATTERN,
    PROVIDER_CODES,
    PROVIDER_RULES,
    RECEIVER,
    RECIPIENT,
    REPUTATION,
    THROTTLE,
    TLS,
    ProviderRule,
    category_of_enhanced,
    is_precise,
)
from engine.errors import BulkmailError, DnsError, DnsPermanent, SmtpTimeout, TlsError
from engine.outcome import BOUNCED, DEFERRED, DELIVERED
from engine.smtp.replies import EnhancedCode, Reply


@dataclass(frozen=True, slots=True)
class Verdict:
    status: str  # delivered | deferred | bounced
    code: int
    enhanced: str
    text: str
    category: str = ""  # engine.bounce_rules.CATEGORIES; "" when delivered
    fault: str = ""  # recipient | sender | message | network; "" when delivered
    permanent: bool = False
    throttle: bool = False  # a rate-limit / reputation signal for the adaptive throttle

    @property
    def suppress(self) -> bool:
        """Only a permanent failure that is the recipient's fault suppresses the address."""
        return self.permanent and self.fault == RECIPIENT


@dataclass(frozen=True, slots=True)
class Classification:
    category: str
    fault: str
    permanent: bool
    throttle: bool
    basis: str = ""  # what decided: "strong"/"weak" words, the "enhanced" code, or the reply "code"


# -- phases (Reply.command) ---------------------------------------------------------

_SESSION = frozenset({"CONNECT", "EHLO", "HELO", "GREETING"})
_DATA_END = frozenset({".", "DOT", "DATA_END"})
_RECIPIENT_SIDE = frozenset({BAD_MAILBOX, BAD_DOMAIN, MAILBOX_FULL})

# Reply code alone, when neither the text nor a specific enhanced code decides.
_BY_CODE: Final[dict[int, str]] = {
    421: NETWORK, 450: NETWORK, 451: NETWORK, 452: NETWORK, 454: TLS,
    521: BAD_DOMAIN, 556: BAD_DOMAIN, 550: BAD_MAILBOX, 551: BAD_MAILBOX, 552: MAILBOX_FULL,
    553: BAD_MAILBOX, 554: POLICY, 530: POLICY, 535: POLICY, 538: POLICY, 571: POLICY,
}  # fmt: skip


def _index_rules() -> dict[str, tuple[ProviderRule, ...]]:
    """Provider fragments keyed by their longest word: a reply only tries the
    fragments whose key word it contains."""
    index: dict[str, list[ProviderRule]] = {}
    for rule in PROVIDER_RULES:
        words = _words(rule.text) or [rule.text]
        index.setdefault(max(words, key=len), []).append(rule)
    return {word: tuple(rules) for word, rules in index.items()}


_NOT_WORD = str.maketrans({c: " " for c in "\t!\"#$%&()*+,-./:;<=>?@[\\]^_`{|}~"})


def _words(lower: str) -> set[str]:
    return set(lower.translate(_NOT_WORD).split())
_RULE_INDEX: Final = _index_rules()


def _split_enhanced(enhanced: str | EnhancedCode | None) -> tuple[int, int, int]:
    """(class, subject, detail); -1 where unknown. sisimai's pseudo codes x.0.9xx
    mean 'no detail' and are treated so."""
    if isinstance(enhanced, EnhancedCode):
        klass, subject, detail = enhanced.klass, enhanced.subject, enhanced.detail
    else:
        parts = (enhanced or "").strip().split(".")
        if len(parts) != 3 or not all(p.isdigit() and len(p) <= 3 for p in parts):
            return -1, -1, -1
        klass, subject, detail = (int(p) for p in parts)
    if klass not in (2, 4, 5):
        return -1, -1, -1
    if subject == 0 and detail >= 900:
        return klass, -1, -1
    return klass, subject, detail


def _provider_category(
    text: str, lower: str, code: int, subject: int, detail: int, codes_only: bool = False
) -> str:
    if codes_only:
        for m in PROVIDER_CODE_PATTERN.finditer(text):
            found = PROVIDER_CODES.get(m.group(1).upper())
            if found:
                return found
        orange = ORANGE_PATTERN.search(text)
        return ORANGE_CODES.get(orange.group(1), "") if orange is not None else ""
    best: tuple[int, int, str] | None = None  # (position, -length, category): the first stated reason
    for word in _words(lower):
        for rule in _RULE_INDEX.get(word, ()):
            at = lower.find(rule.text)
            if at >= 0 and rule.fits(code, subject, detail):
                candidate = (at, -len(rule.text), rule.category)
                best = candidate if best is None or candidate < best else best
    return best[2] if best is not None else ""


_QMAIL_TRAILER = "i'm not going to try again; this message has been in the queue too long."


def _denoise(lower: str) -> str:
    """Addresses say nothing about the cause ("blocked@example.org", "filtered@...")
    and qmail's trailer says why it gave up, not what failed."""
    if "@" in lower:
        lower = " ".join(word for word in lower.split() if "@" not in word)
    if _QMAIL_TRAILER in lower:
        lower = lower.replace(_QMAIL_TRAILER, " ")
    if "giving up on" in lower:
        lower = re.sub(r"giving up on \S+", " ", lower)
    return lower


def category_from_text(text: str, code: int = 0, subject: int = -1, detail: int = -1) -> tuple[str, str]:
    """(category, strength) the words say: strength "strong" (provider codes and
    fragments, phrases that name a cause), "weak", or ("", "") for nothing."""
    if not text:
        return "", ""
    found = _provider_category(text, "", code, subject, detail, codes_only=True)
    if found:
        return found, "strong"
    lower = _denoise(text.lower())
    for category, pattern in STRONG:
        if pattern.search(lower):
            return category, "strong"
    found = _provider_category(text, lower, code, subject, detail)
    if found:
        return found, "strong"
    for category, pattern in WEAK:
        if pattern.search(lower):
            return category, "weak"
    return "", ""


def _by_phase(category: str, code: int, phase: str, basis: str) -> str:
    """Who a refusal can be about depends on what it answered."""
    from_text = basis in ("strong", "weak")
    if phase == "MAIL" and category in _RECIPIENT_SIDE:
        return POLICY
    about_us = phase in ("EHLO", "HELO") and category == BAD_DOMAIN  # our HELO name was refused
    if phase in _SESSION and (category in (BAD_MAILBOX, MAILBOX_FULL) or about_us or (
        basis != "strong" and category in (BAD_DOMAIN, POLICY)
    )):
        return REPUTATION if code // 100 == 5 else NETWORK
    if phase == "STARTTLS" and not from_text:
        return TLS
    if phase in _DATA_END and not from_text:
        if category == MAILBOX_FULL and code == 552:
            return MESSAGE_TOO_BIG
        if category in (BAD_MAILBOX, POLICY):
            return CONTENT
    return category


def _category(code: int, klass: int, subject: int, detail: int, text: str) -> tuple[str, str]:
    """(category, basis): basis is "strong"/"weak" (the text), "enhanced" or "code"."""
    category, strength = category_from_text(text, code, subject, detail)
    if strength == "strong":
        return category, strength
    if is_precise(subject, detail):
        return category_of_enhanced(subject, detail, klass), "enhanced"
    if category:
        return category, strength
    if subject >= 0 and (subject, detail) != (0, 0):
        return category_of_enhanced(subject, detail, klass), "enhanced"
    return _BY_CODE.get(code, "") or (OTHER if code == 0 else category_of_enhanced(0, 0)), "code"


def classify(
    code: int, enhanced: str | EnhancedCode | None, text: str, phase: str = ""
) -> Classification:
    klass, subject, detail = _split_enhanced(enhanced)
    if code and code // 100 in (2, 4, 5):
        klass = code // 100
    category, basis = _category(code, klass, subject, detail, text)
    category = _by_phase(category, code, phase.upper(), basis)
    return Classification(category, FAULT_OF[category], klass == 5, category in THROTTLE, basis)


def from_reply(reply: Reply, delivered: bool, phase: str | None = None) -> Verdict:
    enhanced = str(reply.enhanced) if reply.enhanced else ""
    if delivered:
        return Verdict(DELIVERED, reply.code, enhanced, reply.text)
    c = classify(reply.code, reply.enhanced, reply.text, reply.command if phase is None else phase)
    # 4xx, or a positive reply to something that still did not deliver
    status = BOUNCED if reply.is_permanent else DEFERRED
    return Verdict(status, reply.code, enhanced, reply.text, c.category, c.fault, c.permanent, c.throttle)


def from_error(error: BaseException) -> Verdict:
    """A failure without a (relevant) SMTP reply: DNS, network, TLS, protocol."""
    if isinstance(error, DnsError):
        if isinstance(error, DnsPermanent):
            return Verdict(BOUNCED, 0, error.enhanced or "5.1.2", str(error), BAD_DOMAIN, RECIPIENT, True)
        return Verdict(DEFERRED, 0, error.enhanced or "4.4.3", str(error), NETWORK, RECEIVER)
    if isinstance(error, SmtpTimeout) or isinstance(getattr(error, "reason", None), SmtpTimeout):
        # a timeout, also when it cost the session (SessionLost wraps it after the end of data)
        return Verdict(DEFERRED, 0, "4.4.2", str(error), NETWORK, RECEIVER)
    if isinstance(error, TlsError):
        return Verdict(DEFERRED, 0, "4.7.5", str(error), TLS, RECEIVER)
    if isinstance(error, BulkmailError | OSError):
        return Verdict(DEFERRED, 0, "4.4.1", str(error) or type(error).__name__, NETWORK, RECEIVER)
    return Verdict(DEFERRED, 0, "4.0.0", f"{type(error).__name__}: {error}", OTHER, RECEIVER)


def is_too_many_recipients(reply: Reply) -> bool:
    """452 (or 4.5.3) to RCPT means 'send the rest in another transaction', not a failure."""
    return reply.command == "RCPT" and (
        (reply.enhanced is not None and str(reply.enhanced) == "4.5.3")
        or (reply.code == 452 and "too many recipients" in reply.text.lower())
    )


__all__ = [
    "Classification",
    "Verdict",
    "category_from_text",
    "classify",
    "from_error",
    "from_reply",
    "is_too_many_recipients",
]
