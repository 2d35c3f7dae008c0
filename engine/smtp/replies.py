"""SMTP reply values (RFC 5321 section 4.2) and enhanced status codes (RFC 2034/3463).

The incremental reply parser lives here too (``ReplyParser``), with its limits
passed in, never read from module globals.

Parsing rules, and why:

* A line is ``code [SP|"-"] text`` ending in CRLF. A bare LF also ends a line
  (some servers send one; it cannot smuggle anything into *our* output).
* Every line of a multi-line reply must carry the same code, and the code's
  first digit must be 2-5; anything else is a ``RemoteProtocolError``: a peer
  that does not speak SMTP must not have its bytes paired with our commands.
* An enhanced code (RFC 2034) is taken from the text only when it is clearly
  one: ``class.subject.detail`` whose class equals the reply's first digit,
  followed by a space or the end of the line. It is parsed whether or not the
  server announced ENHANCEDSTATUSCODES, because many servers send them anyway.
* Memory is bounded by ``SmtpLimits``: a line, the lines of one reply and the
  bytes of one reply each have a maximum.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from engine.config import SmtpLimits
from engine.errors import LocalProtocolError, RemoteProtocolError

_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?: +|$)", re.ASCII)
_CACHE_SIZE = 64  # distinct single-line replies remembered per parser


@dataclass(frozen=True, slots=True)
class EnhancedCode:
    klass: int  # 2, 4 or 5
    subject: int
    detail: int

    def __str__(self) -> str:
        return f"{self.klass}.{self.subject}.{self.detail}"

    @classmethod
    def parse(cls, text: str) -> EnhancedCode | None:
        parts = text.split(".")
        if len(parts) != 3 or not all(p.isdigit() and 0 < len(p) <= 3 for p in parts):
            return None
        klass = int(parts[0])
        if klass not in (2, 4, 5):
            return None
        return cls(klass, int(parts[1]), int(parts[2]))


@dataclass(frozen=True, slots=True)
class Reply:
    """One complete (possibly multi-line) reply.

    ``lines`` hold the text after the code and separator, without the enhanced
    code. ``command`` names what it answered (``"MAIL"``, ``"RCPT"``, ``"DATA"``,
    ``"."``, ...). ``local`` marks a reply bulkmail made up itself for a refusal
    decided before anything reached the wire (SMTPUTF8 missing, SIZE exceeded...).
    """

    code: int
    lines: tuple[str, ...] = ()
    enhanced: EnhancedCode | None = None
    command: str = ""
    local: bool = False

    @property
    def text(self) -> str:
        return " ".join(line for line in self.lines if line)

    @property
    def is_positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def is_transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        return self.code >= 500

    def __str__(self) -> str:
        enh = f" {self.enhanced}" if self.enhanced else ""
        return f"{self.code}{enh} {self.text}".rstrip()


class LocalRefusal(LocalProtocolError):
    """Input that must not reach the wire, with the reply that reports it.

    Raised by ``commands`` and ``data``; the client turns it into a per-recipient
    or per-transaction result, so a bad address is a value, not a crash.
    """

    def __init__(self, code: int, enhanced: str, text: str, command: str) -> None:
        self.reply = Reply(code, (text,), EnhancedCode.parse(enhanced), command, local=True)
        super().__init__(str(self.reply))


# the one-digit codes (2.0.0, 5.1.1, 4.7.0...) built once: most replies carry one of them
_SHORT = {
    str(c): c
    for c in (EnhancedCode(k, s, d) for k in (2, 4, 5) for s in range(10) for d in range(10))
}


def split_enhanced(code: int, text: str) -> tuple[EnhancedCode | None, str]:
    """Separate an RFC 2034 code from the text, only when it is clearly one."""
    short = _SHORT.get(text[:5])
    if short is not None and short.klass == code // 100 and text[5:6] in (" ", ""):
        return short, text[5:].lstrip(" ")
    m = _ENHANCED.match(text)
    if m is None or int(m.group(1)) != code // 100:
        return None, text
    return EnhancedCode(code // 100, int(m.group(2)), int(m.group(3))), text[m.end() :]


def new_reply(code: int, lines: tuple[str, ...], enhanced: EnhancedCode | None, command: str) -> Reply:
    """``Reply(code, lines, enhanced, command)``, without the frozen ``__init__``'s per-field
    ``object.__setattr__`` (about 250 ns instead of 560 ns: one per uncached reply)."""
    reply = _new(Reply)
    _set_code(reply, code)
    _set_lines(reply, lines)
    _set_enhanced(reply, enhanced)
    _set_command(reply, command)
    _set_local(reply, False)
    return reply


_new = object.__new__
_set_code = vars(Reply)["code"].__set__
_set_lines = vars(Reply)["lines"].__set__
_set_enhanced = vars(Reply)["enhanced"].__set__
_set_command = vars(Reply)["command"].__set__
_set_local = vars(Reply)["local"].__set__


class ReplyParser:
    """Bytes in (``feed``), complete replies out (``next_reply``), memory bounded.

    ``next_reply(command)`` returns ``None`` until a whole reply is buffered; the
    caller names the command the reply answers, so the value is built once.
    Single-line replies are remembered per (raw line, command): the common
    ``250 2.0.0 Ok`` costs a slice and a dict lookup. The first ``_CACHE_SIZE``
    distinct lines are kept and later ones are not added, so unique replies
    ("250 2.0.0 Ok: queued as 4Q...") never push the common ones out.

    Each chunk is cut into lines once, by ``bytes.split`` (one C call, instead
    of a ``find`` and a slice per line); a partial line left over is joined
    with the next chunk (it is at most ``max_reply_line`` + 1 octets).
    """

    __slots__ = ("_lines", "_next", "_code", "_texts", "_size", "_limits", "_max_line", "_cache")

    def __init__(self, limits: SmtpLimits) -> None:
        self._limits = limits
        self._max_line = limits.max_reply_line
        # the bytes received, cut at each LF (``bytes.split``): every item but the last is a
        # whole line without its LF, the last one the partial line after them (b"" if none)
        self._lines: list[bytes] = [b""]
        self._next = 0  # the first whole line not yet returned
        self._code = 0
        self._texts: list[bytes] = []  # lines of the reply being read
        self._size = 0
        self._cache: dict[tuple[bytes, str], Reply] = {}

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as a reply."""
        waiting = self._lines[self._next :]
        return sum(map(len, waiting)) + len(waiting) - 1 + self._size

    def feed(self, data: bytes) -> None:
        lines = self._lines
        data = bytes(data)  # no copy for bytes; a bytearray must not change under us
        if self._next == len(lines) - 1:  # every whole line taken (the usual case)
            rest = lines[-1]
            self._lines = (rest + data if rest else data).split(b"\n")
        else:
            self._lines = lines[self._next : -1] + (lines[-1] + data).split(b"\n")
        self._next = 0

    def next_reply(self, command: str = "") -> Reply | None:
        lines = self._lines
        i = self._next
        last = len(lines) - 1
        longest = self._max_line + 1  # CR included
        while i < last:
            raw = lines[i]
            i += 1
            self._next = i  # before any error: the parser is past the line
            if len(raw) > longest:
                raise RemoteProtocolError(f"reply line longer than {self._max_line} octets")
            if not self._texts:
                cached = self._cache.get((raw, command))
                if cached is not None:  # validated when it was first parsed
                    return cached
            reply = self._line(raw[:-1] if raw[-1:] == b"\r" else raw, command)
            if reply is not None:
                if len(reply.lines) == 1 and len(self._cache) < _CACHE_SIZE:
                    self._cache[(raw, command)] = reply
                return reply
        if len(lines[last]) > longest:
            raise RemoteProtocolError(f"reply line longer than {self._max_line} octets")
        return None

    def _line(self, line: bytes, command: str) -> Reply | None:
        """Take one line; return the reply when it was the last one."""
        if len(line) < 3 or not line[:3].isdigit() or not 50 <= line[0] <= 53:
            raise RemoteProtocolError(f"not an SMTP reply line: {line[:80]!r}")
        sep = line[3:4]
        if sep not in (b" ", b"-", b""):
            raise RemoteProtocolError(f"bad separator after reply code: {line[:80]!r}")
        code = int(line[:3])
        if self._texts and code != self._code:
            raise RemoteProtocolError(
                f"reply code changed inside a multi-line reply: {line[:80]!r}"
            )
        if sep != b"-" and not self._texts:
            enhanced, text = split_enhanced(code, line[4:].decode("utf-8", "replace"))
            return new_reply(code, (text,), enhanced, command)
        self._code = code
        self._texts.append(line[4:])
        self._size += len(line) + 2
        if (
            self._size > self._limits.max_reply_bytes
            or len(self._texts) > self._limits.max_reply_lines
        ):
            raise RemoteProtocolError("reply exceeds the configured size or line count")
        if sep == b"-":
            return None
        texts, self._texts, self._size = self._texts, [], 0
        return self._build(code, texts, command)

    @staticmethod
    def _build(code: int, texts: list[bytes], command: str) -> Reply:
        decoded = [t.decode("utf-8", "replace") for t in texts]
        enhanced, first = split_enhanced(code, decoded[0])
        if enhanced is not None:
            prefix = str(enhanced)
            decoded[0] = first
            for i in range(1, len(decoded)):
                if decoded[i].startswith(prefix):
                    decoded[i] = split_enhanced(code, decoded[i])[1]
        return new_reply(code, tuple(decoded), enhanced, command)
