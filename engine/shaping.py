"""Traffic shaping: the limits that apply to a destination, from defaults and overrides.

A *bucket* is what limits are shared by: normally the site (every domain whose
MX host set is the same, e.g. all Google Workspace domains), or the domain
itself when a per-domain override exists. Overrides are partial and apply in
this order, later ones winning: default, MX suffix (shortest first, so the
longest matching suffix wins), site, domain. Limits are enforced through
Redis so they hold across worker processes and hosts (engine/queue/sites.py).

TOML (``bulkmail serve --config FILE``)::

    [shaping.default]
    max_connections = 20
    messages_per_second = 0          # 0: unlimited
    [shaping.mx_suffix."google.com"]
    max_connections = 10
    messages_per_minute = 3000
    [shaping.domain."example.com"]
    max_recipients_per_transaction = 10
    [shaping.adaptive]
    decrease_factor = 0.5
"""

from __future__ import annotations

from dataclasses import replace

from engine.config import Limits, ShapingConfig


def resolve(config: ShapingConfig, site: str, hosts: tuple[str, ...], domain: str) -> tuple[str, Limits]:
    """(bucket key, limits) for mail to ``domain`` whose MX hosts form ``site``."""
    limits = config.default
    suffixes = sorted(
        (s for s in config.mx_suffix if any(_suffix_match(h, s[0]) for h in hosts)),
        key=lambda s: len(s[0]),
    )
    for _, override in suffixes:
        limits = replace(limits, **override)
    for name, override in config.site:
        if name == site:
            limits = replace(limits, **override)
    for name, override in config.domain:
        if name == domain:
            return f"domain:{domain}", replace(limits, **override)
    return site, limits


def _suffix_match(host: str, suffix: str) -> bool:
    suffix = suffix.lower().strip(".")
    return host == suffix or host.endswith("." + suffix)
