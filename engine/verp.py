"""VERP return paths and the trace header: which job and recipient a bounce or a
complaint is about, signed so that forged ones are recognised.

Envelope sender for recipient ``index`` of job ``J``::

    bounces+<mac>-<index base 36>-<job>@bounce.example.org

* ``mac`` is 10 base-32 characters (50 bits) of HMAC-SHA256(secret, job, index):
  a forged or altered token does not verify;
* the whole token is lower case, because some MTAs lower-case the local part
  of the address they bounce to. A job id that is not already lower case, that
  would not be a valid dot-atom, or that would make the local part longer than
  64 octets (RFC 5321 4.5.3.1.1) is replaced by ``~`` and 16 hex digits of its
  SHA-256, which the bounce store resolves (``job_digest``);
* ``-`` separates the three fields; the job id (the last field) may contain it.

The trace header (``X-Bulkmail-Trace: j=J; i=7; r=<base64url rcpt>; m=<mac>``)
carries the same facts plus the recipient's address, signed together, for
feedback loops that send ARF reports to a fixed address and redact the
recipient: the header comes back in the reported message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Final

from engine.config import BounceConfig

TRACE_HEADER: Final = "X-Bulkmail-Trace"
MAX_LOCAL_PART: Final = 64
_DOT_ATOM_LOWER = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")
_TOKEN = re.compile(r"([a-z2-7]{10})-([0-9a-z]{1,13})-(~[0-9a-f]{16}|[a-z0-9_.-]{1,64})")
_TRACE_FIELD = re.compile(r"([jirm])=([^;\s]*)")


@dataclass(frozen=True, slots=True)
class VerpRef:
    """A parsed token; ``job_id`` is None when the token carries a digest."""

    mac: str
    index: int
    job_id: str | None
    digest: str  # job_digest(job_id), always set


@dataclass(frozen=True, slots=True)
class TraceRef:
    job_id: str
    index: int
    rcpt: str
    verified: bool


def job_digest(job_id: str) -> str:
    return hashlib.sha256(job_id.encode()).hexdigest()[:16]


def _mac(secret: str, *parts: str) -> str:
    message = "\x00".join(("bulkmail-v1", *parts)).encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return base64.b32encode(digest).decode().lower()


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


def envelope_sender(config: BounceConfig, job_id: str, index: int) -> str:
    """The MAIL FROM for recipient ``index`` of ``job_id``."""
    if not config.domain or not config.secret:
        raise ValueError("VERP needs bounce.domain and bounce.secret")
    mac = _mac(config.secret, job_id, str(index))[:10]
    head = f"{config.prefix}+{mac}-{_base36(index)}-"
    plain = job_id if _DOT_ATOM_LOWER.fullmatch(job_id) else ""
    job_part = plain if plain and len(head) + len(plain) <= MAX_LOCAL_PART else "~" + job_digest(job_id)
    return f"{head}{job_part}@{config.domain}"


def parse_address(config: BounceConfig, address: str) -> VerpRef | None:
    """The token in ``address`` when it is one of ours in form (not yet verified)."""
    local, _, domain = address.strip().strip("<>").rpartition("@")
    prefix = config.prefix.lower() + "+"
    if domain.lower() != config.domain or not local.lower().startswith(prefix):
        return None
    m = _TOKEN.fullmatch(local[len(prefix) :].lower())
    if m is None:
        return None
    mac, index, job = m.groups()
    if job.startswith("~"):
        return VerpRef(mac, int(index, 36), None, job[1:])
    return VerpRef(mac, int(index, 36), job, job_digest(job))


def verify(config: BounceConfig, ref: VerpRef, job_id: str) -> bool:
    """True when ``ref`` was made by us for recipient ``ref.index`` of ``job_id``."""
    if not config.secret or job_digest(job_id) != ref.digest:
        return False
    return hmac.compare_digest(_mac(config.secret, job_id, str(ref.index))[:10], ref.mac)


def trace_header(config: BounceConfig, job_id: str, index: int, rcpt: str) -> tuple[str, str]:
    """(name, value) of the header to add to the message for ``rcpt``."""
    encoded = base64.urlsafe_b64encode(rcpt.encode()).decode().rstrip("=")
    mac = _mac(config.secret, job_id, str(index), rcpt.lower())[:16]
    return TRACE_HEADER, f"j={job_id}; i={index}; r={encoded}; m={mac}"


def parse_trace(config: BounceConfig, value: str) -> TraceRef | None:
    fields = dict(_TRACE_FIELD.findall(value or ""))
    if not {"j", "i", "r", "m"} <= fields.keys() or not fields["i"].isdigit():
        return None
    try:
        raw = fields["r"] + "=" * (-len(fields["r"]) % 4)
        rcpt = base64.b64decode(raw.encode(), altchars=b"-_", validate=True).decode()
    except (binascii.Error, ValueError):
        return None
    if "@" not in rcpt:
        return None
    job, index = fields["j"], int(fields["i"])
    expected = _mac(config.secret, job, str(index), rcpt.lower())[:16] if config.secret else ""
    verified = bool(expected) and hmac.compare_digest(expected, fields["m"])
    return TraceRef(job, index, rcpt, verified)
