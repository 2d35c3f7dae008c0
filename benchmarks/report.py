"""Tables on stdout, results/latest.json, a PNG chart and RESULTS.md from one run."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import WorkloadResult
from benchmarks.measure import Summary

PEERS = {"smtp-source": "ceiling", "client": "client", "naive": "naive", "postfix": "postfix"}
HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def _figures(summary: Summary) -> dict[str, Any]:
    return {
        "msgs_per_s": _round(summary.rate),
        "spread_pct": _round(summary.spread_pct),
        "cpu_us_per_msg": _round(summary.cpu_us("system")),
        "sinks_cpu_us_per_msg": _round(summary.cpu_us("sinks")),
        "runs": [run.as_dict() for run in summary.runs],
        "errors": summary.errors,
    }


def _peers(result: WorkloadResult) -> dict[str, Summary]:
    return {c.system: result.summaries[c.label] for c in result.workload.cases
            if c.system in PEERS and not c.params and c.label in result.summaries and result.summaries[c.label].ok}


def rows(results: list[WorkloadResult]) -> list[dict[str, Any]]:
    """One row per (workload, bulkmail variant), with the peers measured on that workload
    (d, f and g run the newsletter of a: peers they do not run themselves come from a, if it ran;
    ``peers_from`` says which workload each peer's figures come from)."""
    by_key = {r.workload.key: r for r in results}
    out: list[dict[str, Any]] = []
    for result in results:
        cases = result.workload.cases
        peers = _peers(result)
        peers_from = {system: result.workload.key for system in peers}
        if result.workload.key in ("d", "f", "g") and "a" in by_key:  # the same newsletter: a's peers fill the gaps
            for system, summary in _peers(by_key["a"]).items():
                if system not in peers:
                    peers[system], peers_from[system] = summary, "a"
        engines = [result.summaries[c.label] for c in cases if c.system == "bulkmail" and c.label in result.summaries]
        for engine in engines or [None]:
            row: dict[str, Any] = {"workload": result.workload.key, "variant": engine.label if engine else None,
                                   "title": result.workload.title, "unit": result.workload.unit, "units": result.units,
                                   "peers_from": peers_from}
            for system, key in PEERS.items():
                summary = peers.get(system)
                row[f"{key}_msgs_per_s"] = summary.rate if summary else None
                row[f"{key}_cpu_us_per_msg"] = _round(summary.cpu_us("system")) if summary else None
            row["postfix_p50_ms"] = peers["postfix"].extra("p50_ms") if "postfix" in peers else None
            row["postfix_p99_ms"] = peers["postfix"].extra("p99_ms") if "postfix" in peers else None
            rate = engine.rate if engine else None
            row |= {
                "engine_msgs_per_s": _round(rate),
                "engine_spread_pct": _round(engine.spread_pct) if engine else None,
                "engine_cpu_us_per_msg": _round(engine.cpu_us("system")) if engine else None,
                "engine_cpu_us_detail": {g: _round(engine.cpu_us(g)) for g in ("serve", "redis", "submit", "sinks", "dns")} if engine else None,
                "engine_vs_postfix": _ratio(rate, row["postfix_msgs_per_s"]),
                "engine_vs_ceiling": _ratio(rate, row["ceiling_msgs_per_s"]),
                "engine_vs_naive": _ratio(rate, row["naive_msgs_per_s"]),
                "client_vs_naive": _ratio(row["client_msgs_per_s"], row["naive_msgs_per_s"]),
                "p50_ms": engine.extra("p50_ms") if engine and result.workload.transactional else None,
                "p99_ms": engine.extra("p99_ms") if engine and result.workload.transactional else None,
            }
            if result.workload.memory and engine:
                row["redis_bytes_per_recipient"] = engine.extra("redis_bytes_per_recipient")
                peaks = [p for r in engine.ok for p in r.extra.get("worker_peak_rss_mb", [])]
                row["worker_peak_rss_mb"] = max(peaks) if peaks else None
            row["systems"] = {s.label: _figures(s) for s in result.summaries.values()}
            out.append(row)
    _status_cost(out)
    return out


def _status_cost(out: list[dict[str, Any]]) -> None:
    g = {row["variant"]: row["engine_msgs_per_s"] for row in out if row["workload"] == "g"}
    on, off = g.get("bulkmail events on"), g.get("bulkmail events off")
    if on and off:
        for row in out:
            if row["workload"] == "g":
                row["status_cost_pct"] = round((off - on) / off * 100, 1)


# Issue 5's targets: (workload, row key, comparison, goal, what it says)
TARGETS = (
    ("a", "engine_vs_postfix", ">=", 20.0, "bulkmail / Postfix relay"),
    ("a", "engine_vs_ceiling", ">=", 0.5, "bulkmail / smtp-source into smtp-sink"),
    ("a", "engine_vs_naive", ">=", 2.0, "bulkmail / naive aiosmtplib sender"),
    ("a", "client_vs_naive", ">=", 5.0, "bulkmail client alone / aiosmtplib (issue 3)"),
    ("b20", "client_vs_naive", ">=", 5.0, "bulkmail client alone / aiosmtplib at 20 KB (issue 3)"),
    ("d", "p99_ms", "<=", 50.0, "transactional p99 submit-to-250, ms"),
    ("e", "redis_bytes_per_recipient", "<=", 200.0, "Redis bytes per queued recipient"),
    ("e", "worker_peak_rss_mb", "<=", 150.0, "worker peak RSS, MB"),
    ("g", "status_cost_pct", "<=", 10.0, "throughput lost to status reporting, %"),
)


def targets(table: list[dict[str, Any]]) -> list[str]:
    lines = []
    for workload, key, op, goal, what in TARGETS:
        values = [row[key] for row in table if row["workload"] == workload and row.get(key) is not None]
        if not values:
            continue
        value = values[0]
        met = value >= goal if op == ">=" else value <= goal
        lines.append(f"{'met    ' if met else 'NOT met'}  {workload}: {what} = {value:,.2f} (target {op} {goal:g})")
    return lines


def _fmt(value: Any, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def system_table(results: list[WorkloadResult]) -> str:
    lines = [f"{'workload':<8} {'system':<26} {'rate/s':>10} {'spread':>7} {'CPU us':>8} {'sinks us':>8}  notes"]
    for result in results:
        for summary in result.summaries.values():
            notes = []
            for key in ("p50_ms", "p99_ms", "redis_bytes_per_recipient", "injector_msgs_per_s"):
                if summary.extra(key) is not None:
                    notes.append(f"{key}={summary.extra(key)}")
            if summary.errors:
                notes.append(f"FAILED {len(summary.errors)}/{len(summary.runs)}: {summary.errors[0][:140]}")
            spread = f"±{summary.spread_pct:.0f}%" if summary.spread_pct is not None else "-"
            lines.append(f"{result.workload.key:<8} {summary.label:<26} {_fmt(summary.rate):>10} {spread:>7} "
                         f"{_fmt(summary.cpu_us('system')):>8} {_fmt(summary.cpu_us('sinks')):>8}  {' '.join(notes)}")
    return "\n".join(lines)


RATIO_COLUMNS = (
    ("workload", "workload", "s"), ("variant", "bulkmail variant", "s"), ("engine_msgs_per_s", "bulkmail/s", ",.0f"),
    ("engine_cpu_us_per_msg", "CPU us", ",.0f"), ("postfix_msgs_per_s", "postfix/s", ",.0f"),
    ("ceiling_msgs_per_s", "smtp-source/s", ",.0f"), ("naive_msgs_per_s", "naive/s", ",.0f"),
    ("engine_vs_postfix", "x postfix", ".2f"), ("engine_vs_ceiling", "x ceiling", ".2f"),
    ("engine_vs_naive", "x naive", ".2f"), ("p99_ms", "p99 ms", ".1f"), ("postfix_p99_ms", "postfix p99", ".1f"),
    ("redis_bytes_per_recipient", "Redis B/rcpt", ",.0f"), ("worker_peak_rss_mb", "RSS MB", ",.0f"),
    ("status_cost_pct", "status cost %", ".1f"),
)


def ratio_table(table: list[dict[str, Any]], markdown: bool = False) -> str:
    columns = [c for c in RATIO_COLUMNS if c[0] in ("workload", "variant") or any(row.get(c[0]) is not None for row in table)]
    cells = [[_fmt(row.get(key), spec) if spec != "s" else str(row.get(key) or "-") for key, _, spec in columns] for row in table]
    heads = [head for _, head, _ in columns]
    if markdown:
        return "\n".join(["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)] + ["| " + " | ".join(c) + " |" for c in cells])
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(heads)]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(line, widths, strict=True)) for line in [heads, *cells])


def chart(table: list[dict[str, Any]], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    series = [("engine_msgs_per_s", "bulkmail"), ("postfix_msgs_per_s", "Postfix relay"), ("ceiling_msgs_per_s", "smtp-source → smtp-sink"),
              ("client_msgs_per_s", "bulkmail client alone"), ("naive_msgs_per_s", "naive aiosmtplib")]
    series = [(key, name) for key, name in series if any(row.get(key) for row in table)]
    if not series:
        return None
    labels = [row["workload"] + (f"\n{row['variant'].removeprefix('bulkmail ')}" if row["workload"] in ("f", "g") else "") for row in table]
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(table) + 2), 5))
    width = 0.8 / len(series)
    for i, (key, name) in enumerate(series):
        system = next((sys_ for sys_, name_ in PEERS.items() if key == f"{name_}_msgs_per_s"), None)
        # a peer copied from workload a into d/f/g is drawn once, at a
        points = [(x + i * width, row[key]) for x, row in enumerate(table)
                  if row.get(key) and (system is None or row["peers_from"].get(system) == row["workload"])]
        bars = ax.bar([p[0] for p in points], [p[1] for p in points], width, label=name)
        ax.bar_label(bars, labels=[f"{p[1]:,.0f}" for p in points], fontsize=6, rotation=90, padding=2)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(table))], labels)
    ax.set_yscale("log")
    ax.margins(y=0.25)
    ax.set_ylabel("messages (recipients for c) per second, log scale")
    ax.set_title("bulkmail benchmark: throughput per system and workload (median)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write(results: list[WorkloadResult], machine: dict[str, Any], settings: dict[str, Any], command: str) -> dict[str, Any]:
    table = rows(results)
    RESULTS.mkdir(exist_ok=True)
    document = {"generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": command, "machine": machine,
                "settings": settings, "results": table}
    (RESULTS / "latest.json").write_text(json.dumps(document, indent=1) + "\n")
    png = chart(table, RESULTS / "throughput.png")
    (HERE / "RESULTS.md").write_text(markdown(document, results, png))
    return document


def markdown(document: dict[str, Any], results: list[WorkloadResult], png: Path | None) -> str:
    machine = document["machine"]
    settings = document["settings"]
    failed = [(r["workload"], label, s["errors"][0]) for r in document["results"] for label, s in r["systems"].items() if s["errors"]]
    parts = [
        "# Benchmark results (written by `scripts/bench`)\n",
        f"Generated {document['generated']} by `{document['command']}`.\n",
        *(["> **Smoke-run figures**: with fewer than 20,000 messages per run, start-up costs (connections, DNS "
            "look-ups, process start) dominate and one repeat gives no spread; use them to check the harness, "
            "not to compare systems.\n"] if settings["messages"] < 20_000 or settings["repeat"] < 3 else []),
        "## Machine\n",
        "\n".join(f"- {key}: {value}" for key, value in machine.items()) + "\n",
        "## Settings\n",
        "\n".join(f"- {key}: {value}" for key, value in settings.items()) + "\n",
        "## bulkmail against its peers (medians)\n",
        ratio_table(document["results"], markdown=True) + "\n",
        "## Issue 5 targets (from this run)\n",
        "```\n" + ("\n".join(targets(document["results"])) or "(no workload that a target needs was run)") + "\n```\n",
        "## Every system (median rate, ±half the min-max spread over the repeats, CPU per message)\n",
        "```\n" + system_table(results) + "\n```\n",
    ]
    if png is not None:
        parts.append(f"![throughput](results/{png.name})\n")
    if failed:
        parts.append("## Failed runs\n")
        parts.append("\n".join(f"- {w} / {label}: {error[:400]}" for w, label, error in failed) + "\n")
    parts.append(METHOD)
    return "\n".join(parts)


METHOD = """## How it was measured

- Every system runs the same workload in the same run; repeats are interleaved (one of each
  system, then the next round), and the median is reported with its spread.
- **CPU per message** is user+sys CPU divided by messages (recipients for c). `CPU us` counts
  the system's own processes: smtp-source processes (wait4); the bulkmail client or the
  naive sender (its own getrusage around the sending); Postfix's master and every descendant
  (smtpd, cleanup, qmgr, smtp, trivial-rewrite, ... including those that exited, through
  cutime/cstime); bulkmail's `serve` tree (supervisor and workers), its redis-server and the
  `bulkmail submit` process. `sinks us` is every smtp-sink (and the recording sink) over the
  run; the Postfix injector and the DNS server are reported in latest.json, not counted.
- **Postfix** runs with its default queue handling (queue file fsynced before 250), relaying by
  transport_maps; a run lasts from the injector's start until the injector is done and its
  queues are empty.
- **bulkmail** runs against a fresh redis-server with AOF `appendfsync always` on the disk
  named under Machine, from the start of `bulkmail submit` until `status` reports every
  recipient's outcome (workload e: from `serve` start, after a submit with no worker running).
- Workload d: submit-to-250 latency of one transactional message every 100 ms, timestamped by
  a recording sink at the transactional domain's MX.
"""
