"""The import rules of docs/ARCHITECTURE.md, enforced on every module's imports.

Pure modules (protocol, model, policy) import no I/O; adapters live in
engine/net and engine/queue; workers import engine, never the reverse; only
workers/process.py imports uvloop.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IO_MODULES = {"asyncio", "socket", "ssl", "redis", "dns", "subprocess", "selectors", "threading", "uvloop", "time"}
ADAPTERS = ("engine.net", "engine.queue", "engine.client")
PURE_EXCEPTIONS = {"engine.queue.keys"}  # key names only
ALLOWED = {"engine.clock": {"time"}}  # SystemClock is the one place that reads the clock
FACADE = {"engine"}  # the package exports Client lazily (PEP 562); tests/unit/test_engine_exports.py
# checks at run time that importing protocol and model modules loads no redis


def modules() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for package in ("engine", "workers"):
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            imports: set[str] = set()
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    imports.update(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    imports.add(node.module)
            found[name] = imports
    return found


def is_pure(name: str) -> bool:
    if name in FACADE:
        return False
    return name.startswith("engine") and (name in PURE_EXCEPTIONS or not name.startswith(ADAPTERS))


def test_engine_never_imports_workers() -> None:
    bad = {m: i for m, i in modules().items() if m.startswith("engine") and any(x.startswith("workers") for x in i)}
    assert not bad


def test_uvloop_only_in_the_worker_process_module() -> None:
    users = {m for m, i in modules().items() if "uvloop" in i}
    assert users <= {"workers.process"}


def test_pure_modules_do_no_io() -> None:
    bad = {}
    for name, imports in modules().items():
        if not is_pure(name):
            continue
        wrong = {i for i in imports if i.split(".")[0] in IO_MODULES} - ALLOWED.get(name, set())
        wrong |= {i for i in imports if i.startswith(ADAPTERS) and i not in PURE_EXCEPTIONS}
        if "msgpack" in imports and name != "engine.codec":
            wrong.add("msgpack")
        if wrong:
            bad[name] = sorted(wrong)
    assert not bad, f"pure modules importing I/O or adapters: {bad}"
