"""Operator commands: pause/resume a job or a site, cancel a job, retry a site now,
and ``bulkmail sites`` (limits, connections, backlog, last slow-down reason)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from engine.client import Client, dumps
from engine.clock import SystemClock
from engine.config import redis_from_env
from engine.queue.sites import SitesStore

EXIT_INPUT, EXIT_NOT_FOUND = 2, 4


def add_commands(sub: Any, add_redis: Callable[[argparse.ArgumentParser], None]) -> None:
    for name, text in (("pause", "stop claiming a job's (or a site's) mail"), ("resume", "undo pause")):
        p = sub.add_parser(name, help=text)
        add_redis(p)
        target = p.add_mutually_exclusive_group(required=True)
        target.add_argument("job", nargs="?", default=None)
        target.add_argument("--site", default=None, help="a site (see bulkmail sites)")
    cancel = sub.add_parser("cancel", help="cancel a job: its remaining recipients become cancelled")
    add_redis(cancel)
    cancel.add_argument("job")
    retry = sub.add_parser("retry-now", help="make a site's deferred recipients due now")
    add_redis(retry)
    retry.add_argument("site")
    sites = sub.add_parser("sites", help="adaptive limits, open connections, backlog and last reason per site")
    add_redis(sites)
    sites.add_argument("--json", action="store_true", help="one JSON object per site")
    sites.add_argument("--log", metavar="SITE", default=None, help="the changes of one site's limits, with causes")


async def _client(args: argparse.Namespace) -> Client:
    cfg = redis_from_env(args.redis)
    return await Client.connect(cfg.url, home=cfg.home)


def _sites(client: Client) -> SitesStore:
    return SitesStore(client.redis, client.store.keys, SystemClock())


async def cmd_pause(args: argparse.Namespace) -> int:
    paused = args.command == "pause"
    async with await _client(args) as client:
        if args.site:
            if not await _sites(client).set_paused(args.site, paused):
                print(f"error: no such site: {args.site} (see bulkmail sites)", file=sys.stderr)
                return EXIT_NOT_FOUND
            print(f"site {args.site} {'paused' if paused else 'resumed'}")
            return 0
        changed = await client.store.set_paused(args.job, paused)
    if changed < 0:
        print(f"error: no such job, or not active/paused: {args.job}", file=sys.stderr)
        return EXIT_NOT_FOUND
    print(f"job {args.job} {'paused' if paused else 'resumed'}" + ("" if changed else " already"))
    return 0


async def cmd_cancel(args: argparse.Namespace) -> int:
    async with await _client(args) as client:
        count = await client.store.cancel(args.job)
    if count == -1:
        print(f"error: no such job: {args.job}", file=sys.stderr)
        return EXIT_NOT_FOUND
    if count == -2:
        print(f"error: job {args.job} is still being submitted", file=sys.stderr)
        return EXIT_INPUT
    print(f"job {args.job} cancelled: {count} recipients cancelled now (in-flight ones follow)")
    return 0


async def cmd_retry_now(args: argparse.Namespace) -> int:
    async with await _client(args) as client:
        count = await _sites(client).retry_now(args.site)
    print(f"site {args.site}: {count} retry batches due now")
    return 0


async def cmd_sites(args: argparse.Namespace) -> int:
    async with await _client(args) as client:
        store = _sites(client)
        if args.log:
            for change in await store.changes(args.log):
                print(dumps(change))
            return 0
        rows = await store.describe()
    if args.json:
        for row in rows:
            print(dumps(row))
        return 0
    print(f"{'site':40} {'conns':>11} {'rate':>5} {'queued':>7} {'retry':>6}  state / last reason")
    for r in rows:
        state = "paused" if r["paused"] else ("down" if r["down_until"] else "ok")
        print(
            f"{r['site'][:40]:40} {r['connections_open']:>3}/{r['connections_limit']:>3}/{r['connections_max']:<3} "
            f"{r['rate_factor']:>5.2f} {r['queued']:>7} {r['waiting_retry']:>6}  {state} {r['last_reason'] or ''}"
        )
    return 0


HANDLERS = {
    "pause": cmd_pause,
    "resume": cmd_pause,
    "cancel": cmd_cancel,
    "retry-now": cmd_retry_now,
    "sites": cmd_sites,
}
