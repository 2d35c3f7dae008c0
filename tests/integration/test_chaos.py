"""The chaos run of scripts/chaos in short form: a few thousand recipients, one worker
SIGKILLed, one SIGSTOPped past its lease and resumed, redis-server SIGKILLed and restarted from
its AOF. The driver checks that the smtp-sinks' dumps and Redis agree (nothing lost, every
duplicate flagged, ``bulkmail audit`` clean) and exits non-zero otherwise."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.serve import ROOT


@pytest.mark.postfix
def test_short_chaos_run_loses_nothing_and_flags_every_duplicate() -> None:
    # rate-limited to about 15 s of delivery, so the faults land mid-run
    argv = [sys.executable, "scripts/chaos.py", "--recipients", "3000", "--kills", "1", "--pauses", "1",
            "--restarts", "1", "--duration", "15", "--seed", "7", "--timeout", "120"]
    run = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    (line,) = [line for line in run.stdout.splitlines() if line.startswith("chaos summary: ")]
    summary = json.loads(line.removeprefix("chaos summary: "))
    assert (summary["rounds"], summary["kills"], summary["pauses"], summary["redis_restarts"]) == (3, 1, 1, 1)
    assert summary["lost"] == 0 and summary["received"] == summary["recipients"] == 3000
    assert summary["duplicates_flagged"] == summary["duplicates"]
    assert summary["delivered_in_redis"] == 3000 and summary["audit_ok"] is True
