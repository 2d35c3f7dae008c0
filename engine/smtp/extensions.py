"""EHLO reply -> ``Capabilities`` (RFC 5321 section 4.1.1.1 and the extension RFCs).

Keywords are case-insensitive; parameters we do not understand are ignored, as
RFC 5321 asks. A ``SIZE`` without a number (or ``SIZE 0``) announces the
extension with no fixed limit: ``size == 0``. ``size is None`` means not
announced, and then no ``SIZE=`` parameter may be sent.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.smtp.replies import Reply


@dataclass(frozen=True, slots=True)
class Capabilities:
    esmtp: bool = False  # False after a HELO fallback: no ESMTP parameters at all
    pipelining: bool = False
    size: int | None = None
    eightbitmime: bool = False
    smtputf8: bool = False
    starttls: bool = False
    enhancedstatuscodes: bool = False
    dsn: bool = False
    chunking: bool = False
    auth: tuple[str, ...] = ()

    @classmethod
    def from_ehlo(cls, reply: Reply) -> Capabilities:
        """The first line is the server's name and greeting; each other line one keyword."""
        found: dict[str, object] = {}
        auth: list[str] = []
        for line in reply.lines[1:]:
            words = line.split()
            if not words:
                continue
            keyword = words[0].upper()
            if keyword.startswith("AUTH=") or keyword == "AUTH":
                # "AUTH=LOGIN PLAIN" is the pre-RFC 4954 spelling still seen in the wild
                rest = [keyword[5:]] if keyword.startswith("AUTH=") else []
                auth.extend(m.upper() for m in rest + words[1:] if m)
            elif keyword == "SIZE":
                found["size"] = int(words[1]) if len(words) > 1 and words[1].isdigit() else 0
            elif keyword in _FLAGS:
                found[_FLAGS[keyword]] = True
        return cls(esmtp=True, auth=tuple(dict.fromkeys(auth)), **found)  # type: ignore[arg-type]


_FLAGS = {
    "PIPELINING": "pipelining",
    "8BITMIME": "eightbitmime",
    "SMTPUTF8": "smtputf8",
    "STARTTLS": "starttls",
    "ENHANCEDSTATUSCODES": "enhancedstatuscodes",
    "DSN": "dsn",
    "CHUNKING": "chunking",
}

#: after HELO: plain RFC 821 SMTP, nothing announced
HELO_CAPABILITIES = Capabilities()
