"""The tables and the phrase matcher behind classification."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from engine import bounce_rules as r
from engine.bounce_patterns import STRONG, WEAK, Phrases, anchor, expand

SHARED = Path(__file__).resolve().parents[3] / "shared" / "corpus"


@pytest.mark.parametrize(
    ("source", "literal"),
    [
        (r"user ?unknown", "unknown"),
        (r"mail ?box (?:\w+ )?exceed", "exceed"),
        (r"client host .{0,60}rejected", "client host"),
        (r"\bspf\b", "spf"),
        (r"groups\.google\.com", "groups.google.com"),
        (r"a|b", ""),
    ],
)
def test_anchor_is_a_literal_every_match_contains(source: str, literal: str) -> None:
    assert anchor(source) == literal


def test_leading_alternatives_are_expanded_to_get_an_anchor() -> None:
    assert expand(r"(?:invalid|bad) (?:recipient|mailbox)") == [r"invalid (?:recipient|mailbox)", r"bad (?:recipient|mailbox)"]
    with pytest.raises(ValueError):
        Phrases(r"(?:a|b)?")


def _texts() -> list[str]:
    """Real reply texts: the provider table's fragments and examples, and corpus lines."""
    texts = []
    with open(SHARED / "smtp-replies.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            texts += [row["match_text"].lower(), row["example_reply"].lower(), row["description"].lower()]
    for path in sorted((SHARED / "bounces").rglob("*.eml"))[::3]:
        texts += path.read_text("latin-1").lower().split("\n\n")[:6]
    return [t for t in texts if t]


def test_anchors_never_hide_a_match() -> None:
    texts = _texts()
    for _category, phrases in STRONG + WEAK:
        for literal, rx in phrases._alternatives:
            for text in texts:
                if rx.search(text):
                    assert literal in text, (rx.pattern, literal, text[:200])


def test_tables_are_loaded_from_the_package_data() -> None:
    assert len(r.PROVIDER_RULES) > 300 and len(r.PROVIDER_CODES) > 50 and len(r.ORANGE_CODES) > 15
    assert r.category_of_enhanced(1, 1) == r.BAD_MAILBOX and r.category_of_enhanced(4, 4, 5) == r.BAD_DOMAIN
    assert r.category_of_enhanced(4, 4, 4) == r.NETWORK and r.category_of_enhanced(7, 26) == r.AUTH
    assert r.category_of_enhanced(9, 9) == r.OTHER
    assert not r.is_precise(7, 1) and r.is_precise(7, 26) and not r.is_precise(-1, -1)
    with open(SHARED / "smtp-replies.csv", newline="", encoding="utf-8") as f:
        reasons = {row["category"] for row in csv.DictReader(f)}
    assert reasons <= set(r.SISIMAI_REASONS)


def test_the_package_data_matches_the_corpus_it_was_copied_from() -> None:
    data = Path(r.__file__).parent / "bounce_data"
    assert (data / "LICENSE.go-sisimai.txt").read_text() == (SHARED / "bounces" / "LICENSE.go-sisimai.txt").read_text()
    with open(SHARED / "smtp-replies.csv", newline="", encoding="utf-8") as f:
        upstream = [(row["provider"], row["match_text"], row["category"]) for row in csv.DictReader(f)]
    with open(data / "smtp-replies.csv", newline="", encoding="utf-8") as f:
        ours = [(row["provider"], row["match_text"], row["category"]) for row in csv.DictReader(f)]
    assert ours == upstream
