"""The submitter's API is importable from the package, without making ``import engine`` pull in redis."""

from __future__ import annotations

import subprocess
import sys


def test_client_and_sync_client_are_exported() -> None:
    from engine import Client, SyncClient
    from engine.client import Client as AsyncClient
    from engine.client import SyncClient as Blocking

    assert (Client, SyncClient) == (AsyncClient, Blocking)


def test_protocol_code_imports_no_redis() -> None:
    code = "import sys, engine.smtp.client, engine.message; print('redis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
