"""The command-line contract other services rely on: output shapes, exit codes,
clear errors, the embedded Redis, and the Python client."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import redis

from engine.client import Client, SyncClient
from engine.errors import InputError
from engine.queue.embedded import stop_embedded
from tests.support.serve import BULKMAIL, ROOT, cli

JOB = {"from": "news@sender.test", "subject": "Hi {{name}}", "text": "Hello {{name}}",
       "recipients": ["a@one.test", {"to": "b@two.test", "vars": {"name": "Bea"}}]}


def write(tmp_path: Path, job: object, name: str = "job.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(job))
    return str(path)


def job_count(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.zcard("bm:jobs")) + len(client.keys("bm:job:*"))
    finally:
        client.close()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"recipients": ["ok@one.test", "not an address"]}, "recipients[1]"),
        ({"from": "a@b.test\r\nBcc: victim@x.test"}, "from"),
        ({"headers": {"X-Tag": "a\r\nBcc: victim@x.test"}}, "headers.X-Tag"),
        ({"recipients": ["evil@x.test>\r\nRCPT TO:<victim@y.test"]}, "recipients[0]"),
        ({"colour": "blue"}, "colour"),
        ({"subject": 42}, "subject"),
        ({"from": None}, "from"),
        ({"recipients": []}, "recipients"),
    ],
)
def test_invalid_job_is_refused_naming_the_field_and_nothing_is_stored(
    redis_url: str, tmp_path: Path, change: dict[str, object], field: str
) -> None:
    job = {**JOB, **change}
    if change.get("from", "") is None:
        del job["from"]
    result = cli(redis_url, "submit", write(tmp_path, job))
    assert result.returncode == 2
    assert field in result.stderr and result.stdout == ""
    assert job_count(redis_url) == 0


def test_malformed_json_is_a_clear_error(redis_url: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"from": "a@b.test", "recipients": [')
    result = cli(redis_url, "submit", str(path))
    assert result.returncode == 2 and "JSON" in result.stderr
    assert job_count(redis_url) == 0


def test_submit_prints_the_id_and_a_second_submit_of_the_same_id_is_a_no_op(redis_url: str, tmp_path: Path) -> None:
    path = write(tmp_path, {**JOB, "id": "weekly-42"})
    first = cli(redis_url, "submit", path)
    assert first.returncode == 0 and first.stdout.splitlines()[0] == "weekly-42"
    second = cli(redis_url, "submit", write(tmp_path, {**JOB, "id": "weekly-42", "recipients": ["z@z.test"]}, "2.json"))
    assert second.returncode == 0 and second.stdout.splitlines()[0] == "weekly-42"
    status = json.loads(cli(redis_url, "status", "weekly-42", "--json").stdout)
    assert status["total"] == 2 and status["queued"] == 2 and status["done"] is False
    assert set(status) >= {"job", "total", "queued", "delivered", "deferred", "bounced", "expired", "suppressed", "done"}


def test_submit_from_stdin(redis_url: str) -> None:
    result = cli(redis_url, "submit", "-", stdin=json.dumps(JOB).encode())
    assert result.returncode == 0 and len(result.stdout.splitlines()[0]) > 8


def test_unreachable_redis_fails_submit_clearly(tmp_path: Path) -> None:
    result = cli("redis://127.0.0.1:9/0", "submit", write(tmp_path, JOB), timeout=30)
    assert result.returncode == 3
    assert "unreachable" in result.stderr and "nothing was submitted" in result.stderr
    assert result.stdout == ""


def test_unknown_job(redis_url: str) -> None:
    result = cli(redis_url, "status", "nope", "--json")
    assert result.returncode == 4 and "no such job" in result.stderr
    assert cli(redis_url, "events", "--job", "nope").returncode == 4


def test_redis_url_from_the_environment(redis_url: str, tmp_path: Path) -> None:
    result = cli(None, "submit", write(tmp_path, JOB), env={"BULKMAIL_REDIS_URL": redis_url})
    assert result.returncode == 0
    assert job_count(redis_url) > 0


def test_events_without_follow_prints_what_exists_and_exits(redis_url: str, tmp_path: Path) -> None:
    job = cli(redis_url, "submit", write(tmp_path, JOB)).stdout.splitlines()[0]
    result = cli(redis_url, "events", "--job", job, timeout=20)
    assert result.returncode == 0 and result.stdout == ""
    assert cli(redis_url, "events", timeout=20).returncode == 0


def test_embedded_redis_is_started_once_and_found_by_every_command(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {"BULKMAIL_HOME": str(home), "BULKMAIL_REDIS_URL": ""}
    try:
        url = cli(None, "redis", "url", env=env).stdout.strip()
        assert url.startswith("unix://") and str(home) in url
        job = cli(None, "submit", write(tmp_path, JOB), env=env).stdout.splitlines()[0]
        status = json.loads(cli(None, "status", job, "--json", env=env).stdout)
        assert status["total"] == 2
        conf = (home / "redis" / "redis.conf").read_text()
        assert "appendonly yes" in conf and "appendfsync always" in conf
        assert (home / "redis" / "appendonlydir").exists()
        assert cli(None, "redis", "url", env=env).stdout.strip() == url  # the same instance
    finally:
        stop_embedded(home)


def test_console_script_is_installed() -> None:
    exe = shutil.which("bulkmail")
    assert exe is not None, "pip install -e . provides the bulkmail command"
    result = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and "submit" in result.stdout
    assert BULKMAIL and ROOT.exists()


async def test_async_client_submits_and_reads(redis_url: str) -> None:
    async with await Client.connect(redis_url) as client:
        job = await client.submit(JOB)
        status = await client.status(job)
        assert status is not None and status["total"] == 2 and status["queued"] == 2
        assert await client.events(job) == []
        with pytest.raises(InputError) as info:
            await client.submit({**JOB, "recipients": ["bad"]})
        assert info.value.field == "recipients[0]"


def test_sync_client(redis_url: str) -> None:
    with SyncClient(redis_url) as client:
        job = client.submit(json.dumps(JOB))
        status = client.status(job)
        assert status is not None and status["total"] == 2


def test_audit_reports_a_recipient_without_a_state(redis_url: str, tmp_path: Path) -> None:
    job = cli(redis_url, "submit", write(tmp_path, JOB)).stdout.splitlines()[0]
    clean = cli(redis_url, "audit", job)
    assert clean.returncode == 0 and json.loads(clean.stdout)["ok"] is True
    client = redis.Redis.from_url(redis_url)
    client.setrange(f"bm:job:{job}:st", 1, "?")  # what a lost update would leave behind
    client.close()
    broken = cli(redis_url, "audit")
    report = json.loads(broken.stdout)
    assert broken.returncode == 1 and report["ok"] is False and report["missing"] == [1]
    assert any("without a state" in p for p in report["problems"])
    assert cli(redis_url, "audit", "nope").returncode == 4
