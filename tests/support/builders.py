"""Jobs for tests, built through the same validation a submitter goes through."""

from __future__ import annotations

from typing import Any

from engine.job import JobSpec, Recipient, parse_job, parse_recipient


def job_dict(recipients: list[Any], **fields: Any) -> dict[str, Any]:
    job: dict[str, Any] = {
        "from": "news@sender.test",
        "subject": "Hello {{name}}",
        "text": "Dear {{name}},\nthis is for {{email}}.\n",
        "recipients": recipients,
    }
    job.update(fields)
    return job


def build(recipients: list[Any], **fields: Any) -> tuple[JobSpec, list[Recipient]]:
    spec, raw = parse_job(job_dict(recipients, **fields))
    return spec, [parse_recipient(item, i, spec) for i, item in enumerate(raw)]


def people(n: int, domains: int = 1, prefix: str = "user", tld: str = "test") -> list[dict[str, Any]]:
    return [
        {"to": f"{prefix}{i}@d{i % domains}.{tld}", "vars": {"name": f"Person {i}"}} for i in range(n)
    ]
