"""Bounce categories, who is at fault, and the tables that drive classification.

Two data files ship in ``engine/bounce_data`` (copied from the corpus, licence
``LICENSE.go-sisimai.txt`` next to them, BSD-2-Clause):

* ``enhanced-status-codes.csv``: RFC 3463 / IANA enhanced status -> sisimai reason;
* ``smtp-replies.csv``: provider reply fragments (Google, Microsoft, Yahoo, ...)
  -> sisimai reason, with the reply code / enhanced status they are paired with.

Both speak sisimai's taxonomy (33 reasons); ``SISIMAI_REASONS`` below is the one
table that maps it to ours (13 categories). It is used to load the data and by
the corpus test to score agreement, so the two can never drift apart.

Everything here is built once at import and never changes (tuples, frozen
dataclasses, dicts nobody writes to).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from importlib import resources
from typing import Final

# -- categories -----------------------------------------------------------------

BAD_MAILBOX: Final = "bad_mailbox"
BAD_DOMAIN: Final = "bad_domain"
MAILBOX_FULL: Final = "mailbox_full"
MESSAGE_TOO_BIG: Final = "message_too_big"
CONTENT: Final = "content_rejected"  # spam/virus/content or format of the message
POLICY: Final = "policy"  # relaying, sender address refused, generic "not authorized"
REPUTATION: Final = "reputation"  # sender reputation or blocklist (IP, domain, PTR)
RATE_LIMITED: Final = "rate_limited"
AUTH: Final = "auth_failure"  # SPF / DKIM / DMARC
TLS: Final = "tls_failure"
NETWORK: Final = "network"  # network, timeout, receiving system trouble
EXPIRED: Final = "expired"
OTHER: Final = "other"

CATEGORIES: Final = (
    BAD_MAILBOX, BAD_DOMAIN, MAILBOX_FULL, MESSAGE_TOO_BIG, CONTENT, POLICY, REPUTATION,
    RATE_LIMITED, AUTH, TLS, NETWORK, EXPIRED, OTHER,
)  # fmt: skip

# -- who is at fault --------------------------------------------------------------

RECIPIENT: Final = "recipient"
SENDER: Final = "sender"
MESSAGE: Final = "message"
RECEIVER: Final = "network"  # the network in between or the receiving system

FAULTS: Final = (RECIPIENT, SENDER, MESSAGE, RECEIVER)

FAULT_OF: Final[dict[str, str]] = {
    BAD_MAILBOX: RECIPIENT,
    BAD_DOMAIN: RECIPIENT,
    MAILBOX_FULL: RECIPIENT,
    MESSAGE_TOO_BIG: MESSAGE,
    CONTENT: MESSAGE,
    POLICY: SENDER,
    REPUTATION: SENDER,
    RATE_LIMITED: SENDER,
    AUTH: SENDER,
    TLS: RECEIVER,
    NETWORK: RECEIVER,
    EXPIRED: RECEIVER,
    OTHER: RECEIVER,
}

# Signals for the adaptive throttle (the policy issue): slow down, do not suppress.
THROTTLE: Final = frozenset({RATE_LIMITED, REPUTATION})

# -- sisimai reasons -> our categories (THE mapping table; docs/BOUNCES.md) -------

SISIMAI_REASONS: Final[dict[str, str]] = {
    "userunknown": BAD_MAILBOX,
    "hasmoved": BAD_MAILBOX,
    "suspend": BAD_MAILBOX,  # mailbox disabled / suspended
    "filtered": BAD_MAILBOX,  # recipient-level refusal after DATA, mostly "unknown user" text
    "hostunknown": BAD_DOMAIN,
    "notaccept": BAD_DOMAIN,  # null MX, host does not accept mail
    "mailboxfull": MAILBOX_FULL,
    "mesgtoobig": MESSAGE_TOO_BIG,
    "exceedlimit": MESSAGE_TOO_BIG,  # exceeds the recipient's size limit
    "spamdetected": CONTENT,
    "spandetected": CONTENT,  # (sic) a typo in the upstream table
    "virusdetected": CONTENT,
    "contenterror": CONTENT,
    "notcompliantrfc": CONTENT,
    "policyviolation": POLICY,
    "rejected": POLICY,  # the envelope sender was refused
    "norelaying": POLICY,
    "securityerror": POLICY,
    "blocked": REPUTATION,
    "blokced": REPUTATION,  # (sic)
    "badreputation": REPUTATION,
    "requireptr": REPUTATION,  # no PTR / rDNS for the sending IP
    "speeding": RATE_LIMITED,
    "toomanyconn": RATE_LIMITED,
    "authfailure": AUTH,
    "failedstarttls": TLS,
    "networkerror": NETWORK,
    "systemerror": NETWORK,
    "systemfull": NETWORK,
    "expired": EXPIRED,
    "mailererror": OTHER,
    "onhold": OTHER,
    "syntaxerror": OTHER,
    "undefined": OTHER,
    "suppressed": OTHER,
}

# -- RFC 3463 enhanced codes ------------------------------------------------------

# Where we disagree with sisimai's reason for a code alone (the text usually decides).
_ENHANCED_OVERRIDES: Final[dict[tuple[int, int], str]] = {
    (0, 0): OTHER,
    (1, 0): BAD_MAILBOX,
    (1, 7): POLICY,  # bad sender mailbox syntax
    (1, 8): POLICY,  # bad sender system address
    (2, 0): BAD_MAILBOX,
    (2, 1): BAD_MAILBOX,  # mailbox disabled
    (2, 4): OTHER,  # mailing list expansion problem
    (3, 0): NETWORK,
    (4, 0): NETWORK,
    (4, 1): NETWORK,  # "no answer from host"; Microsoft also sends it for directory refusals
    (4, 7): EXPIRED,
    (5, 0): OTHER,
    (5, 3): RATE_LIMITED,  # too many recipients
    (7, 0): POLICY,
    (7, 1): POLICY,
    (7, 13): BAD_MAILBOX,  # user account disabled
    (7, 17): BAD_MAILBOX,  # mailbox owner has changed
    (7, 18): BAD_MAILBOX,
    (7, 25): REPUTATION,  # reverse DNS validation failed
}

# Subjects whose details we do not list fall back to the subject's meaning.
_SUBJECT_DEFAULT: Final[dict[int, str]] = {
    0: OTHER,
    1: BAD_MAILBOX,
    2: BAD_MAILBOX,
    3: NETWORK,
    4: NETWORK,
    5: OTHER,
    6: CONTENT,
    7: POLICY,
}


def _read(name: str) -> list[dict[str, str]]:
    text = (resources.files("engine") / "bounce_data" / name).read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


def _enhanced_table() -> dict[tuple[int, int, int], str]:
    """(class, subject, detail) -> category; class 0 holds the class-independent entry."""
    table: dict[tuple[int, int, int], str] = {}
    for row in _read("enhanced-status-codes.csv"):
        parts = row["enhanced_status"].split(".")
        category = SISIMAI_REASONS.get(row["sisimai_reason"])
        if len(parts) == 3 and all(p.isdigit() for p in parts) and category and row["active"] == "yes":
            klass, subject, detail = (int(p) for p in parts)
            table[(klass, subject, detail)] = category
            table.setdefault((0, subject, detail), category)
    for (subject, detail), category in _ENHANCED_OVERRIDES.items():
        for klass in (0, 4, 5):
            table[(klass, subject, detail)] = category
    return table


ENHANCED: Final = _enhanced_table()


def category_of_enhanced(subject: int, detail: int, klass: int = 0) -> str:
    return (
        ENHANCED.get((klass, subject, detail))
        or ENHANCED.get((0, subject, detail))
        or _SUBJECT_DEFAULT.get(subject, OTHER)
    )


# Codes too vague to overrule what the text says ("5.7.1 ... recipient rejected").
VAGUE_ENHANCED: Final = frozenset(
    {(0, 0), (1, 0), (2, 0), (3, 0), (4, 0), (4, 1), (5, 0), (5, 1), (5, 2), (7, 0), (7, 1)}
)


def is_precise(subject: int, detail: int) -> bool:
    return subject > 0 and (subject, detail) not in VAGUE_ENHANCED


# -- provider reply fragments -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProviderRule:
    provider: str
    text: str  # lower-cased fragment
    code: int  # 0: any
    low: tuple[int, int] | None  # (subject, detail) range the fragment is paired with
    high: tuple[int, int] | None
    category: str

    def fits(self, code: int, subject: int, detail: int) -> bool:
        """Fragments are paired with codes; the class (4/5) never matters here."""
        if self.low is not None and self.high is not None and subject >= 0:
            return self.low <= (subject, detail) <= self.high
        if self.code and code:
            return self.code % 100 == code % 100  # 451 pairs with 551: the class is the code's business
        return True


def _span(value: str) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
    ends = []
    for part in value.split("-")[:2]:
        bits = part.strip().split(".")
        if len(bits) != 3 or not all(b.isdigit() for b in bits):
            return None, None
        ends.append((int(bits[1]), int(bits[2])))
    if not ends:
        return None, None
    return ends[0], ends[-1]


# Fragments shorter than this are too generic to match outside their provider.
_MIN_FRAGMENT = 12


def _provider_rules() -> tuple[ProviderRule, ...]:
    rules = []
    for row in _read("smtp-replies.csv"):
        category = SISIMAI_REASONS.get(row["category"])
        text = row["match_text"].strip().lower()
        if not category or len(text) < _MIN_FRAGMENT:
            continue
        code = int(row["reply_code"]) if row["reply_code"].isdigit() else 0
        low, high = _span(row["enhanced_status"])
        rules.append(ProviderRule(row["provider"], text, code, low, high, category))
    return tuple(rules)


PROVIDER_RULES: Final = _provider_rules()
PROVIDER_BY_TEXT: Final[dict[str, tuple[ProviderRule, ...]]] = {
    text: tuple(r for r in PROVIDER_RULES if r.text == text) for text in {r.text for r in PROVIDER_RULES}
}
# One scan finds every fragment; longer fragments first so the most specific wins.
PROVIDER_PATTERN: Final = re.compile(
    "|".join(re.escape(t) for t in sorted(PROVIDER_BY_TEXT, key=len, reverse=True))
)


def _provider_codes() -> dict[str, str]:
    """Provider error codes quoted in replies (Cox CXBL, GoDaddy IB401, Spectrum AUP#1000)."""
    codes: dict[str, str] = {}
    for row in _read("smtp-replies.csv"):
        category = SISIMAI_REASONS.get(row["category"])
        code = row["provider_code"].strip().upper()
        if not category or not code or code.isdigit():
            continue
        if "-" in code and code.startswith("AUP#"):
            low, high = code[4:].split("-", 1)
            for n in range(int(low), int(high) + 1, 10):
                codes.setdefault(f"AUP#{n}", category)
        else:
            codes.setdefault(code, category)
        # Facebook's codes are written in the fragment column ("POL-P7")
    for row in _read("smtp-replies.csv"):
        text = row["match_text"].strip()
        if row["provider"] == "facebook" and re.fullmatch(r"[A-Z]{3}-[PT]\d", text):
            codes.setdefault(text, SISIMAI_REASONS.get(row["category"], OTHER))
    return codes


PROVIDER_CODES: Final = _provider_codes()
# Orange / La Poste (franceptt) quote a number: "OFR006_102", "LPN007_426", "ofr_506 [506]".
ORANGE_CODES: Final[dict[str, str]] = {
    row["provider_code"]: SISIMAI_REASONS[row["category"]]
    for row in _read("smtp-replies.csv")
    if row["provider"] == "franceptt" and row["provider_code"].isdigit() and row["category"] in SISIMAI_REASONS
}
ORANGE_PATTERN: Final = re.compile(r"\b(?:ofr|lpn)\d{0,3}_(\d{3})\b", re.IGNORECASE)
PROVIDER_CODE_PATTERN: Final = re.compile(
    r"\b(CX[A-Z]{2,6}|CDRBL|IPBL\d{4,5}|URLBL\d{3,4}|IB\d{3}|AUP#\d{4}|(?:POL|MSG|RCP|DNS|INT|CON)-[PT]\d)\b"
)
