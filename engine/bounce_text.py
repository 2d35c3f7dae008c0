"""Recipients and their diagnostics from the human-readable text of a bounce.

About half of the bounces in the wild carry no ``message/delivery-status`` part
(qmail, Exim, Exchange, old Yahoo/Gmail formats...). They all write, somewhere
before the returned message, the failed addresses and, near each one, what the
remote server said. So, without a per-software parser:

1. cut the text where the copy of the original message begins;
2. find every address, dropping those that cannot be the failed recipient:
   header-like lines (``From:``, ``To:``...), ``MAIL FROM:<...>``, the
   postmaster and mailer-daemon, message ids, the sender's addresses;
3. give each remaining address the lines that follow each of its mentions, up to
   a blank line or the mention of another address (its diagnostic).

Pure functions of text; the caller classifies the snippets.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

ADDRESS: Final = re.compile(
    r"(?<![\w.+=/-])([\w!#$%&'*+/=?^`{|}~-]+(?:\.[\w!#$%&'*+/=?^`{|}~-]+)*"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*"
    r"\.[A-Za-z]{2,24})(?![\w-])"
)
_CUT: Final = re.compile(
    r"^[ \t>]*(?:-{2,}|={2,}|\*{2,}|_{2,})?[ \t]*(?:"
    r"(?:a )?copy of (?:the|your|this) (?:original )?message|below this line is a copy|"
    r"(?:the )?original message (?:follows|headers?|text)|original message ?-*$|"
    r"this is a copy of|the header of the original message|(?:start of )?returned message|"
    r"(?:un(?:delivered|sent) )?message (?:(?:text|header)s? )?(?:follows|below)|headers? of the original message|"
    r"(?:the )?(?:original )?message headers? (?:follow|are)|your (?:original )?message (?:reads|follows|headers)|"
    r"included is a copy|unsent message below|(?:the )?text of (?:your|the) message|message that caused|"
    r"original message:|rfc822-headers|forwarded message"
    r")",
    re.IGNORECASE | re.MULTILINE,
)
_HEADER_BLOCK: Final = re.compile(
    r"\n\n(?:(?:return-path|received|message-id|dkim-signature|mime-version|x-[a-z0-9-]+|from|"
    r"delivered-to|date|subject|to|content-type):[^\n]*\n(?:[ \t][^\n]*\n)*){3,}",
    re.IGNORECASE,
)
_HEADERISH: Final = re.compile(
    r"^[ \t>]*(?:from|to|cc|bcc|sent|date|reply-to|return-path|sender|message-id|received|delivered-to|"
    r"envelope-to|in-reply-to|references|errors-to|resent-[a-z]+|x-[a-z0-9-]+|list-[a-z]+|"
    r"reporting-mta|received-from-mta|arrival-date|dkim-signature|authentication-results)\s*:",
    re.IGNORECASE,
)
_SENDER_CONTEXT: Final = re.compile(
    r"(?:mail from:?|envelope-from|from:|sender:|mailto:|return-path:?|reply-to:|message-id:?|\bby)\s*<?\s*$",
    re.IGNORECASE,
)
_NOT_RECIPIENT: Final = frozenset(
    {"postmaster", "mailer-daemon", "mailerdaemon", "mail-daemon", "maildaemon", "abuse", "hostmaster",
     "double-bounce", "bounce", "nobody"}  # fmt: skip
)
_MAX_SNIPPET_LINES = 12


@dataclass(frozen=True, slots=True)
class Mention:
    address: str  # as written (case kept), no angle brackets
    snippet: str  # the lines that mention it and the ones after (its diagnostic)


def split_report(text: str) -> tuple[str, str]:
    """(the report, the returned copy of the original message that follows it)."""
    end = len(text)
    m = _CUT.search(text)
    if m is not None and m.start() > 0:
        end = m.start()
    h = _HEADER_BLOCK.search(text, 0, end + 1)
    if h is not None and h.start() > 0:
        end = min(end, h.start() + 1)
    return text[:end], text[end:]


def inline_header(text: str, name: str) -> str:
    """A header of the original message quoted inline after the report."""
    m = re.search(rf"^[ \t>]*{re.escape(name)}[ \t]*:[ \t]*(.*)$", text, re.IGNORECASE | re.MULTILINE)
    return m.group(1) if m else ""


def _candidate(line: str, m: re.Match[str], exclude: frozenset[str]) -> bool:
    address = clean(m.group(1))
    local = address.rsplit("@", 1)[0].lower()
    if address.lower() in exclude or local in _NOT_RECIPIENT or len(local) > 64:
        return False
    return _SENDER_CONTEXT.search(line[: m.start()][-20:]) is None


def mentions(text: str, exclude: Iterable[str] = (), limit: int = 500) -> list[Mention]:
    """Every plausible failed recipient in ``text`` (already cut), in order of first mention."""
    skip = frozenset(a.lower() for a in exclude)
    lines = text.split("\n")
    on_line: dict[int, set[str]] = {}
    order: dict[str, str] = {}  # lower-cased -> as first written
    for i, line in enumerate(lines):
        if "@" not in line or _HEADERISH.match(line):
            continue
        for m in ADDRESS.finditer(line):
            address = clean(m.group(1))
            if _candidate(line, m, skip) and len(order) < limit:
                on_line.setdefault(i, set()).add(address.lower())
                order.setdefault(address.lower(), address)
    covered: dict[str, set[int]] = {key: set() for key in order}
    for i, keys in on_line.items():
        for key in keys:
            covered[key].update(_snippet(lines, i, key, on_line))
    return [
        Mention(address, "\n".join(lines[j] for j in sorted(covered[key]))) for key, address in order.items()
    ]


def _snippet(lines: list[str], start: int, key: str, on_line: dict[int, set[str]]) -> list[int]:
    """Line numbers of a mention and of what follows it: up to a blank line after
    some text, or a line naming another recipient."""
    taken = [start]
    for j in range(start + 1, min(len(lines), start + _MAX_SNIPPET_LINES)):
        if not lines[j].strip():
            if len(taken) > 1:
                break
            continue
        if on_line.get(j, set()) - {key}:
            break
        taken.append(j)
    return taken


_INTRO: Final = re.compile(
    r"(?:not (?:be )?delivered|undeliverable|following (?:recipients?|addresses|users?)|failed recipients?)"
    r".*:\s*$",
    re.IGNORECASE,
)
_BARE: Final = re.compile(r"^[ \t]+([A-Za-z0-9][A-Za-z0-9._+-]{0,63})(?:[ \t]{2,}\S.*)?$")


def bare_names(text: str) -> list[tuple[str, str]]:
    """(name, its line) for recipients listed without a domain under an intro line
    ("...could not be delivered to the following recipients:" then "  jdoe")."""
    found: list[tuple[str, str]] = []
    lines = text.split("\n")
    for i, line in enumerate(lines[:-1]):
        if not _INTRO.search(line):
            continue
        for following in lines[i + 1 : i + 20]:
            if not following.strip():
                if found:
                    break
                continue
            m = _BARE.match(following)
            if m is None:
                break
            found.append((m.group(1), following))
    return found


def clean(address: str) -> str:
    """Drop what a reporter glued to the address: quotes, Exchange's ``SMTP=``/``smtp:``."""
    address = address.strip("'`")
    if address[:5].lower() in ("smtp=", "smtp:"):
        address = address[5:]
    return address


def header_addresses(value: str) -> list[str]:
    return [clean(m.group(1)) for m in ADDRESS.finditer(value)]
