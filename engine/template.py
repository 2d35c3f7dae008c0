"""``{{name}}`` placeholders: split a template once per job into literals and slot names.

Syntax (a small subset of Mustache, on purpose: no sections, no logic):

* ``{{name}}`` or ``{{ name }}`` (spaces or tabs inside the braces) is replaced by the
  recipient's ``vars[name]``, or by "" when the recipient has no such var;
* in an HTML part the value is HTML-escaped (Mustache does the same), so a name such as
  ``<script>`` cannot inject markup; ``{{{name}}}`` inserts it raw;
* ``{{email}}`` and ``{{to}}`` are the recipient's normalised address and win over vars of the
  same name (a CSV row often carries an "email" column; it must not redirect the To header);
* a name is any run of characters other than braces and whitespace; anything else between
  braces is literal text.

The job validator (``engine.job``) uses ``placeholder_names`` to learn which vars reach a
header; the renderer (``engine.message``) compiles ``split_template`` results into bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Template", "split_template", "placeholder_names", "ADDRESS_NAMES"]

ADDRESS_NAMES = frozenset({"email", "to"})

_PLACEHOLDER = re.compile(r"\{\{\{[ \t]*([^{}\s]+)[ \t]*\}\}\}|\{\{[ \t]*([^{}\s]+)[ \t]*\}\}")


@dataclass(frozen=True, slots=True)
class Template:
    """``literals[0] slot[0] literals[1] ... slot[n-1] literals[n]``."""

    literals: tuple[str, ...]  # always len(names) + 1
    names: tuple[str, ...]
    raw: tuple[bool, ...]  # True for {{{name}}}: never HTML-escaped

    @property
    def is_static(self) -> bool:
        return not self.names


def split_template(text: str) -> Template:
    literals: list[str] = []
    names: list[str] = []
    raw: list[bool] = []
    pos = 0
    for match in _PLACEHOLDER.finditer(text):
        literals.append(text[pos : match.start()])
        names.append(match.group(1) or match.group(2))
        raw.append(match.group(1) is not None)
        pos = match.end()
    literals.append(text[pos:])
    return Template(tuple(literals), tuple(names), tuple(raw))


def placeholder_names(text: str) -> set[str]:
    return {m.group(1) or m.group(2) for m in _PLACEHOLDER.finditer(text)}
