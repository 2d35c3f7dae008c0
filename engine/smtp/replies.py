"""SMTP reply values (RFC 5321 section 4.2) and enhanced status codes (RFC 2034/3463).

The incremental reply parser lives here too (``ReplyParser``), with its limits
passed in, never read from module globals.
"""

from __future__ import annotations

from dataclasses import dataclass


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
