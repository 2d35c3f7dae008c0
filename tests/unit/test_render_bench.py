"""Render and recipient-parsing micro-benchmark; as a test it only checks the output.

Run ``python -m tests.unit.test_render_bench`` to print microseconds per operation. The test
never asserts on time (shared CI machines are too noisy); it asserts that the scenarios the
numbers describe produce what they claim (2 KB, 7bit fast path, QP slow path).
"""

from __future__ import annotations

import email
import email.policy
import timeit
from collections.abc import Callable
from functools import partial
from typing import Any

from engine.job import JobSpec, Recipient, parse_job, parse_recipient
from engine.message import MessageTemplate

DATE = b"Mon, 01 Jan 2024 00:00:00 +0000"
_PARAGRAPH = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt.\n"
TEXT = "Hello {{name}},\n\n" + _PARAGRAPH * 10 + "Your code is {{code}}.\n" + _PARAGRAPH * 9 + "Bye {{ name }}\n"
RECIPIENT = {"to": "john.smith@example.org", "vars": {"name": "John", "code": 12345}}


def scenarios() -> dict[str, tuple[MessageTemplate, Recipient]]:
    def make(**fields: object) -> tuple[MessageTemplate, Recipient, JobSpec]:
        data: dict[str, Any] = {"from": "news@example.com", "subject": "Hi {{name}}", "text": TEXT, "recipients": [RECIPIENT]}
        data.update(fields)
        spec, items = parse_job(data)
        template = MessageTemplate(spec, job_id="18c0a1b2c3d", msgid_domain="mx.example.com")
        return template, parse_recipient(items[0], 0, spec), spec

    ascii_2k = make()
    header = make(headers={"List-Unsubscribe": "<https://example.com/u/{{code}}>"})
    multipart = make(html="<html><body>" + TEXT.replace("\n", "<br>\n") + "</body></html>")
    non_ascii = make(text=TEXT + "Grüße\n")
    return {
        "2 KB text, 3 placeholders + subject": ascii_2k[:2],
        "same + templated List-Unsubscribe": header[:2],
        "4 KB multipart/alternative": multipart[:2],
        "2 KB non-ASCII template (QP)": non_ascii[:2],
    }


def _timed(fn: Callable[[], object], number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def bench(number: int = 20000) -> dict[str, float]:
    """Microseconds per call, best of five runs."""
    results = {}
    for name, (template, rcpt) in scenarios().items():
        results[f"render: {name}"] = _timed(partial(template.render, rcpt, 7, DATE), number)
    spec, _ = parse_job({"from": "n@example.com", "subject": "{{name}}", "text": "x", "recipients": ["a@b.org"]})
    results["parse_recipient: string"] = _timed(lambda: parse_recipient("john.smith@example.org", 5, spec), number)
    results["parse_recipient: object, 2 vars"] = _timed(lambda: parse_recipient(RECIPIENT, 5, spec), number)
    return results


def test_benchmark_scenarios_render_what_they_claim() -> None:
    rendered = {name: t.render(r, 7, DATE) for name, (t, r) in scenarios().items()}
    plain = rendered["2 KB text, 3 placeholders + subject"]
    assert 2000 <= len(plain) <= 2600
    assert b"Content-Transfer-Encoding: 7bit\r\n" in plain
    assert b"Hello John,\r\n" in plain and b"Your code is 12345.\r\n" in plain
    assert b"Content-Transfer-Encoding: quoted-printable\r\n" in rendered["2 KB non-ASCII template (QP)"]
    multipart = email.message_from_bytes(rendered["4 KB multipart/alternative"], policy=email.policy.default)
    assert multipart.get_content_type() == "multipart/alternative"
    assert len(bench(number=3)) == 6  # the script path runs


if __name__ == "__main__":
    for label, micros in bench().items():
        print(f"{micros:7.2f} us  {label}")
