"""Envelope addresses: RFC 5321 ``Mailbox`` syntax, checked before anything reaches the wire.

Every address a job gives us ends up inside ``MAIL FROM:<...>`` / ``RCPT TO:<...>`` and in
a header, so this module is the gate against command and header injection (RELIABILITY.md
3.2): CR, LF, NUL, every other C0 control, DEL, ``<`` and ``>`` are refused anywhere in the
text, even inside a quoted local part where RFC 5321 would allow ``<`` and ``>``.

Accepted:

* local part: a dot-atom, or a quoted string (spaces allowed only inside the quotes), at
  most 64 octets; non-ASCII (RFC 6531) is allowed and sets ``needs_smtputf8``;
* domain: LDH labels (1-63 octets, no leading/trailing hyphen), at most 255 octets, the last
  label not all digits (so ``1.2.3.4`` is not mistaken for an IPv4 address); an
  internationalised domain is converted to its A-label form; existing ``xn--`` labels must
  decode;
* the whole address at most 254 octets (RFC 5321 path limit of 256 minus the brackets).

Refused on purpose: address literals (``user@[192.0.2.1]``), because bulkmail routes by MX
only and a literal would bypass the per-domain queues and throttles; display names and angle
brackets (give the bare address); a trailing dot on the domain.

The common case (ASCII dot-atom at an ASCII domain) is one regex match, so a recipient costs
well under a microsecond here; the slow path only runs to explain a refusal or for IDN/quoted
input. IDNA 2008 with UTS 46 mapping comes from the ``idna`` package when it is installed
(it is in this environment, pulled in by trustme/requests; dnspython lists it only as an
optional extra), else Python's built-in IDNA 2003 codec.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from engine.errors import InputError

try:  # IDNA 2008 + UTS 46 when available; the stdlib codec implements the older IDNA 2003
    import idna as _idna
except ImportError:  # pragma: no cover - exercised only where idna is not installed
    _idna = None  # type: ignore[assignment]

__all__ = ["Address", "parse_address", "normalise_address", "to_ascii_domain", "IDNA_LIBRARY"]

IDNA_LIBRARY = "idna" if _idna is not None else "stdlib-idna2003"

MAX_LOCAL = 64
MAX_DOMAIN = 255
MAX_ADDRESS = 254
MAX_LABEL = 63

_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~\-"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
# The fast path: ASCII dot-atom "@" LDH domain, with possessive quantifiers so the match
# never backtracks (about 0.2 us). Label and total lengths are checked after the match.
_FAST_LABEL = r"[A-Za-z0-9]++(?:-++[A-Za-z0-9]++)*+"
_FAST = re.compile(rf"[{_ATEXT}]++(?:\.[{_ATEXT}]++)*+@((?:{_FAST_LABEL}\.)*+{_FAST_LABEL})")
_LDH_DOMAIN = re.compile(rf"(?:{_LABEL}\.)*{_LABEL}")
# Non-ASCII characters allowed in a local part (RFC 6531 UTF8-non-ascii), minus C1 controls,
# Unicode whitespace and lone surrogates (which cannot be encoded as UTF-8).
_UTF8 = r"[^\x00-\x9f\s\ud800-\udfff]"
_DOT_ATOM_LOCAL = re.compile(rf"(?:[{_ATEXT}]|{_UTF8})+(?:\.(?:[{_ATEXT}]|{_UTF8})+)*")
# qtextSMTP and quoted-pairSMTP without "<" and ">" (refused everywhere, see above).
_QUOTED_LOCAL = re.compile(
    rf'"(?:[\x20\x21\x23-\x3b\x3d\x3f-\x5b\x5d-\x7e]|\\[\x20-\x3b\x3d\x3f-\x7e]|{_UTF8})+"'
)
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f<>]")


@dataclass(frozen=True, slots=True)
class Address:
    """A validated mailbox; ``str()`` is the form written inside ``<...>`` on the wire."""

    local: str  # as given (quotes kept for a quoted local part)
    domain: str  # lower-case ASCII, A-labels for IDN
    needs_smtputf8: bool  # the local part has non-ASCII characters

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}"


def parse_address(text: str, field: str = "address") -> Address:
    """Validate ``text`` as an RFC 5321 Mailbox; raise ``InputError(msg, field=field)``."""
    fast = _fast(text)
    if fast is not None:
        return Address(fast[0][: -len(fast[1]) - 1], fast[1], False)
    try:
        return _parse_slow(text)
    except InputError as exc:
        raise InputError(str(exc), field=field) from None


def normalise_address(text: str, field: str = "address") -> tuple[str, str]:
    """``(str(address), address.domain)`` without building an ``Address``.

    This is the per-recipient hot path of job submission: skipping the frozen dataclass
    saves about 0.4 us per recipient, a third of the budget.
    """
    fast = _fast(text)
    if fast is not None:
        return fast
    address = parse_address(text, field)
    return str(address), address.domain


def _fast(text: object) -> tuple[str, str] | None:
    """The common ASCII case, or None to take the slow path (which also explains refusals)."""
    if type(text) is not str or len(text) > MAX_ADDRESS:
        return None
    match = _FAST.fullmatch(text)
    if match is None:
        return None
    domain = match.group(1)
    at = match.start(1) - 1
    if (
        at > MAX_LOCAL
        or (len(domain) > MAX_LABEL and max(map(len, domain.split("."))) > MAX_LABEL)
        or domain.rpartition(".")[2].isdigit()
    ):
        return None
    if not domain.islower():
        domain = domain.lower()
        text = f"{text[:at]}@{domain}"
    if "xn--" in domain:
        return None
    return text, domain


def to_ascii_domain(domain: str) -> str:
    """Validate a domain and return its lower-case ASCII (A-label) form, or raise InputError."""
    if not domain:
        raise InputError("empty domain")
    if domain.startswith("["):
        raise InputError(
            "address literals are not accepted (bulkmail delivers by MX lookup only)"
        )
    if domain.endswith("."):
        raise InputError("domain must not end with a dot")
    if domain.isascii():
        ascii_domain = domain.lower()
        _check_ldh(ascii_domain)
        if "xn--" in ascii_domain:
            _check_a_labels(ascii_domain)
        return ascii_domain
    bad = re.search(r"[\s\x80-\x9f]", domain)
    if bad is not None:
        raise InputError(f"domain contains an invalid character {bad.group()!r}")
    ascii_domain = _idna_encode(domain)
    _check_ldh(ascii_domain)
    return ascii_domain


def _parse_slow(text: object) -> Address:
    if not isinstance(text, str):
        raise InputError(f"must be a string, not {type(text).__name__}")
    if not text:
        raise InputError("empty address")
    bad = _FORBIDDEN.search(text)
    if bad is not None:
        char = bad.group()
        if char in "<>":
            raise InputError("angle brackets and display names are not allowed: give the bare address")
        raise InputError(f"contains a control character {char!r} (CR, LF, NUL and C0 controls are refused)")
    local, at, domain = text.rpartition("@")
    if not at:
        raise InputError("missing '@'")
    if not local:
        raise InputError("empty local part")
    needs_utf8 = not local.isascii()
    _check_local(local)
    ascii_domain = to_ascii_domain(domain)
    if len(local.encode()) + 1 + len(ascii_domain) > MAX_ADDRESS:
        raise InputError(f"address longer than {MAX_ADDRESS} octets")
    return Address(local, ascii_domain, needs_utf8)


def _check_local(local: str) -> None:
    if len(local.encode()) > MAX_LOCAL:
        raise InputError(f"local part longer than {MAX_LOCAL} octets")
    if local.startswith('"'):
        if not _QUOTED_LOCAL.fullmatch(local):
            raise InputError("malformed quoted local part")
        return
    if _DOT_ATOM_LOCAL.fullmatch(local):
        return
    if local.startswith(".") or local.endswith("."):
        raise InputError("local part must not start or end with a dot")
    if ".." in local:
        raise InputError("local part has consecutive dots")
    if re.search(r"\s", local):
        raise InputError("spaces are allowed only inside a quoted local part")
    bad = re.search(rf"[^{_ATEXT}.]", local)
    char = bad.group() if bad else "?"
    raise InputError(f"local part has an invalid character {char!r} (quote it)")


def _check_ldh(domain: str) -> None:
    if len(domain) > MAX_DOMAIN:
        raise InputError(f"domain longer than {MAX_DOMAIN} octets")
    if not _LDH_DOMAIN.fullmatch(domain):
        for label in domain.split("."):
            if not label:
                raise InputError("domain has an empty label")
            if len(label) > MAX_LABEL:
                raise InputError(f"domain label longer than {MAX_LABEL} octets")
            if label.startswith("-") or label.endswith("-"):
                raise InputError(f"domain label {label!r} starts or ends with a hyphen")
        bad = re.search(r"[^A-Za-z0-9.-]", domain)
        char = bad.group() if bad else "?"
        raise InputError(f"domain has an invalid character {char!r}")
    if domain.rpartition(".")[2].isdigit():
        raise InputError("the last domain label is all digits (IP addresses are not accepted)")


def _check_a_labels(domain: str) -> None:
    """An ``xn--`` label that does not decode would be refused by every receiving MTA."""
    for label in domain.split("."):
        if label.startswith("xn--"):
            try:
                if _idna is not None:
                    _idna.decode(label)
                else:
                    label.encode("ascii").decode("idna")
            except (UnicodeError, ValueError) as exc:
                raise InputError(f"invalid IDNA label {label!r}: {exc}") from None


def _idna_encode(domain: str) -> str:
    try:
        if _idna is not None:
            return _idna.encode(domain, uts46=True, transitional=False).decode("ascii").lower()
        return domain.encode("idna").decode("ascii").lower()
    except (UnicodeError, ValueError) as exc:
        raise InputError(f"invalid internationalised domain {domain!r}: {exc}") from None
