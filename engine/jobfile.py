"""Read a job's JSON text without building its recipients list in memory.

``json.loads`` of a million-recipient job builds a million dicts at once (about
ten times the file's size). Here the top-level object is walked with
``JSONDecoder.raw_decode``: the other fields are decoded as usual, and the
recipients array is only scanned for its end; its items are decoded one at a
time again while they are stored. Memory is the text plus one item.

A job file of up to ``WHOLE_ARRAY_TEXT`` characters has its recipients array decoded
in one C call instead (a 100,000-recipient newsletter: about 6 MB of text and 60 MB
of objects, briefly): the two passes over the items at Python speed were a third of
``bulkmail submit``'s CPU, and the submit is the part of a run no worker can share.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from engine.errors import InputError
from engine.job import JobSpec, Recipient, parse_job, parse_recipient

_WS = re.compile(r"[ \t\n\r]*")
WHOLE_ARRAY_TEXT = 8_000_000  # characters of job text up to which recipients are decoded at once


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)


def _error(text: str, pos: int, msg: str) -> InputError:
    line = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return InputError(f"invalid JSON at line {line} column {col}: {msg}")


def _skip(text: str, pos: int) -> int:
    return _WS.match(text, pos).end()  # type: ignore[union-attr]


def _value(text: str, pos: int) -> tuple[Any, int]:
    try:
        return _DECODER.raw_decode(text, pos)
    except json.JSONDecodeError as exc:
        raise _error(text, exc.pos, exc.msg) from None
    except ValueError as exc:
        raise _error(text, pos, str(exc)) from None


def _expect(text: str, pos: int, char: str) -> int:
    pos = _skip(text, pos)
    if text[pos : pos + 1] != char:
        raise _error(text, pos, f"expected {char!r}")
    return pos + 1


def _items(text: str, pos: int) -> Iterator[tuple[Any, int]]:
    """Items of the array whose '[' is at ``pos``; the last yield is (None, end) with end after ']'."""
    pos = _skip(text, _expect(text, pos, "["))
    if text[pos : pos + 1] == "]":
        yield None, pos + 1
        return
    while True:
        item, pos = _value(text, _skip(text, pos))
        yield item, -1
        pos = _skip(text, pos)
        if text[pos : pos + 1] == "]":
            yield None, pos + 1
            return
        pos = _expect(text, pos, ",")


def _top_level(text: str, whole_limit: int) -> tuple[dict[str, Any], int | None, int, list[Any] | None]:
    """The object's fields but recipients; where the recipients array starts, its length, and
    its items when the text is small enough to decode them at once."""
    fields: dict[str, Any] = {}
    start: int | None = None
    count = 0
    whole: list[Any] | None = None
    pos = _skip(text, _expect(text, 0, "{"))
    if text[pos : pos + 1] == "}":
        return fields, None, 0, None
    while True:
        key, pos = _value(text, _skip(text, pos))
        if not isinstance(key, str):
            raise _error(text, pos, "object keys are strings")
        pos = _skip(text, _expect(text, pos, ":"))
        if key == "recipients" and text[pos : pos + 1] == "[":
            start, count = pos, 0
            if len(text) <= whole_limit:
                whole, pos = _value(text, pos)
                count = len(whole)
            else:
                for item, end in _items(text, pos):
                    if end >= 0:
                        pos = end
                    else:
                        count += 1
                        del item
        else:
            fields[key], pos = _value(text, pos)
        pos = _skip(text, pos)
        if text[pos : pos + 1] == "}":
            break
        pos = _expect(text, pos, ",")
    if _skip(text, pos + 1) != len(text):
        raise _error(text, _skip(text, pos + 1), "extra data after the job object")
    return fields, start, count, whole


def stream_job(data: str | bytes, whole_limit: int = WHOLE_ARRAY_TEXT) -> tuple[JobSpec, int, Iterator[Recipient]]:
    """A validated JobSpec, the number of recipients, and the recipients, validated as they are read.

    Top-level errors are raised here; a bad recipient raises InputError from the iterator
    (the submitter then abandons the job before it is ever visible).
    """
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"job is not valid UTF-8: {exc.reason} at byte {exc.start}") from None
    else:
        text = data
    fields, start, count, whole = _top_level(text, whole_limit)
    if start is None:
        parse_job(fields)  # reports the missing/invalid recipients field with the others
        raise InputError("must be a list of addresses", field="recipients")
    if whole is not None:
        first = whole[0] if whole else None
    else:
        first = next(item for item, end in _items(text, start) if end < 0) if count else None
    spec, _ = parse_job({**fields, "recipients": [first] if count else []})

    def recipients() -> Iterator[Recipient]:
        items = whole if whole is not None else (item for item, end in _items(text, start) if end < 0)
        for index, item in enumerate(items):
            yield parse_recipient(item, index, spec)

    return spec, count, recipients()
