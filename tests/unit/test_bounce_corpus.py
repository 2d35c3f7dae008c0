"""The whole real-world bounce corpus (../shared/corpus/bounces) through the parser.

Expected results come from the sources' own tests (expected.csv, see SOURCES.md):
sisimai rows are compared by position (status, reply code, reason, count),
flufl.bounce rows by address (permanence). Categories are compared through the
one mapping table ``engine.bounce_rules.SISIMAI_REASONS``.

The accuracy table (per field and per source) is printed; the test fails below
the bar: >= 95 % permanence and status class, >= 90 % category agreement,
every address flufl.bounce asserts found (one documented exception), no
exception, and the "not a bounce" files give nothing.
"""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.bounce_rules import SISIMAI_REASONS
from engine.dsn import BounceRecord, ParsedMessage, parse_message

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "bounces"

UNREACHABLE: set[tuple[str, str]] = set()  # every address expected.csv gives must be found

BARS = {"permanence": 0.95, "status class": 0.95, "category": 0.90}


def _source(file: str) -> str:
    return "flufl.bounce" if file.startswith("flufl") else "sisimai/" + file.split("/")[1]


def _rows() -> dict[str, list[dict[str, str]]]:
    with open(CORPUS / "expected.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    by_file: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        by_file[row["file"]].append(row)
    return by_file


class Score:
    def __init__(self) -> None:
        self.right: Counter[tuple[str, str]] = Counter()  # (source, field) -> right
        self.total: Counter[tuple[str, str]] = Counter()
        self.misses: list[tuple[str, str, str]] = []

    def add(self, source: str, field: str, ok: bool, file: str = "", detail: str = "") -> None:
        self.total[source, field] += 1
        self.right[source, field] += ok
        if not ok:
            self.misses.append((field, file, detail))

    def rate(self, field: str, source: str | None = None) -> float:
        keys = [k for k in self.total if k[1] == field and (source is None or k[0] == source)]
        total = sum(self.total[k] for k in keys)
        return sum(self.right[k] for k in keys) / total if total else 1.0

    def table(self) -> Iterator[str]:
        fields = sorted({f for _, f in self.total}, key=list(FIELDS).index)
        sources = sorted({s for s, _ in self.total})
        yield "| field | " + " | ".join(sources) + " | all |"
        yield "|---" * (len(sources) + 2) + "|"
        for field in fields:
            cells = []
            for source in [*sources, None]:
                keys = [k for k in self.total if k[1] == field and (source is None or k[0] == source)]
                total = sum(self.total[k] for k in keys)
                right = sum(self.right[k] for k in keys)
                cells.append(f"{right}/{total} {100 * right / total:.1f}%" if total else "-")
            yield f"| {field} | " + " | ".join(cells) + " |"


FIELDS = {
    "permanence": "permanent vs temporary",
    "status class": "first digit of the status",
    "status": "exact status (informational; sisimai pseudo codes x.0.9xx excluded)",
    "reply code": "SMTP reply code (informational)",
    "category": "category vs the source's reason through SISIMAI_REASONS",
    "address": "address asserted by flufl.bounce found",
    "count": "number of bounced recipients (informational)",
    "not a bounce": "vacation / feedback / delivered / not: no bounce record",
    "feedback type": "ARF feedback type",
}


def _record_for(row: dict[str, str], records: list[BounceRecord]) -> BounceRecord | None:
    if row["recipient"]:
        return next((r for r in records if r.recipient.lower() == row["recipient"].lower()), None)
    i = int(row["expected_index"]) - 1
    return records[i] if i < len(records) else None


def _score_bounce(score: Score, source: str, row: dict[str, str], rec: BounceRecord | None) -> None:
    file = row["file"]
    if row["recipient"] and (file, row["recipient"]) not in UNREACHABLE:
        score.add(source, "address", rec is not None, file, row["recipient"])
    if rec is None:
        score.add(source, "permanence", False, file, "no record")
        return
    permanence = "permanent" if rec.permanent else "temporary"
    score.add(source, "permanence", permanence == row["permanence"], file, f"{rec.status} {rec.text[:80]}")
    if row["status"]:
        score.add(source, "status class", rec.status[:1] == row["status"][:1], file, rec.status)
        if ".0.9" not in row["status"]:
            score.add(source, "status", rec.status == row["status"], file, f"{rec.status} != {row['status']}")
    if row["reply_code"]:
        score.add(source, "reply code", str(rec.code) == row["reply_code"], file, str(rec.code))
    if row["reason"]:
        expected = SISIMAI_REASONS[row["reason"]]
        detail = f"{row['reason']}->{expected} got {rec.category}: {rec.text[:100]}"
        score.add(source, "category", rec.category == expected, file, detail)


def _score_file(score: Score, file: str, rows: list[dict[str, str]], parsed: ParsedMessage) -> None:
    source = _source(file)
    records = list(parsed.records)
    for row in rows:
        if row["is_bounce"] != "yes":
            score.add(source, "not a bounce", not records, file, row["is_bounce"])
            if row["feedback_type"]:
                kind = parsed.complaint.feedback_type if parsed.complaint else ""
                score.add(source, "feedback type", kind == row["feedback_type"], file, kind)
            continue
        _score_bounce(score, source, row, _record_for(row, records))
    if rows[0]["is_bounce"] == "yes" and not rows[0]["recipient"]:
        score.add(source, "count", len(records) == int(rows[0]["expected_count"]), file, str(len(records)))


@pytest.fixture(scope="module")
def scored() -> tuple[Score, dict[str, ParsedMessage]]:
    assert CORPUS.is_dir(), f"the corpus is missing: {CORPUS}"
    score = Score()
    parsed: dict[str, ParsedMessage] = {}
    for file, rows in sorted(_rows().items()):
        parsed[file] = parse_message((CORPUS / file).read_bytes())
        _score_file(score, file, rows, parsed[file])
    return score, parsed


def test_corpus_accuracy_table_and_bars(scored: tuple[Score, dict[str, Any]], capsys: pytest.CaptureFixture[str]) -> None:
    score, _ = scored
    with capsys.disabled():
        print("\nbounce corpus accuracy (right/total):")
        for line in score.table():
            print(line)
    for field, bar in BARS.items():
        misses = [m for m in score.misses if m[0] == field]
        assert score.rate(field) >= bar, f"{field}: {score.rate(field):.3f} < {bar}; misses: {misses}"


def test_every_address_the_sources_give_is_found(scored: tuple[Score, dict[str, Any]]) -> None:
    score, _ = scored
    assert score.total["flufl.bounce", "address"] == 122  # every address expected.csv gives
    assert [m for m in score.misses if m[0] == "address"] == []


def test_no_file_raises_or_reports_an_internal_error(scored: tuple[Score, dict[str, ParsedMessage]]) -> None:
    _, parsed = scored
    assert len(parsed) == 401
    assert {f: p.error for f, p in parsed.items() if p.error} == {}


def test_not_a_bounce_files_yield_nothing(scored: tuple[Score, dict[str, ParsedMessage]]) -> None:
    score, parsed = scored
    for name in ("sisimai/not/is-not-bounce-01.eml", "sisimai/not/is-not-bounce-02.eml"):
        assert parsed[name].records == () and parsed[name].kind == "none"
    assert score.rate("not a bounce") == 1.0, [m for m in score.misses if m[0] == "not a bounce"]


def test_auto_replies_are_not_bounces(scored: tuple[Score, dict[str, ParsedMessage]]) -> None:
    _, parsed = scored
    vacations = [f for f in parsed if "rfc3834" in f]
    assert len(vacations) == 5
    assert {f: parsed[f].kind for f in vacations} == dict.fromkeys(vacations, "autoreply")


def test_line_endings_do_not_change_the_result(scored: tuple[Score, dict[str, ParsedMessage]]) -> None:
    _, parsed = scored
    for variant in ("dos", "mac"):
        for file in [f for f in parsed if f.startswith(f"sisimai/{variant}/")]:
            twin = file.replace(f"/{variant}/", "/bsd/")
            if twin in parsed:
                assert parsed[file].records == parsed[twin].records, file
